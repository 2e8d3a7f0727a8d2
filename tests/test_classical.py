"""The classical engines against synthetic frames whose ground-truth masks are known exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from seg_video.core.errors import ConfigError
from seg_video.core.types import Frame, Segmentation, boxes_from_masks
from seg_video.engines.base import create_engine, engine_class
from seg_video.engines.classical._regions import multi_otsu, region_masks

NAMES = ("threshold", "edges", "kmeans", "region", "motion")
STATIC = ("threshold", "edges", "kmeans", "region")
HEIGHT, WIDTH = 240, 320
BACKGROUND = (40, 40, 40)
YELLOW, CYAN = (20, 210, 230), (230, 220, 60)

Image = npt.NDArray[np.uint8]
Masks = npt.NDArray[np.bool_]


def noisy(colour: tuple[int, int, int], height: int = HEIGHT, width: int = WIDTH, sigma: float = 3.0) -> Image:
    """A flat BGR picture with a little sensor-like noise (fixed seed)."""
    noise = np.random.default_rng(0).normal(0, sigma, (height, width, 3))
    return np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)


def disc(centre: tuple[int, int], radius: int, height: int = HEIGHT, width: int = WIDTH) -> Masks:
    """Boolean mask of a filled circle."""
    canvas = np.zeros((height, width), np.uint8)
    return cv2.circle(canvas, centre, radius, 1, -1) > 0


def rect(x0: int, y0: int, x1: int, y1: int, height: int = HEIGHT, width: int = WIDTH) -> Masks:
    """Boolean mask of the rectangle [x0, x1) x [y0, y1)."""
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def paint(image: Image, masks: Sequence[Masks], colours: Sequence[tuple[int, int, int]]) -> Image:
    """A copy of `image` with each mask filled in its colour."""
    out = image.copy()
    for mask, colour in zip(masks, colours, strict=True):
        out[mask] = colour
    return out


def shapes_scene() -> tuple[Image, Masks]:
    """A yellow disc and a cyan rectangle on a dark noisy background, with their masks."""
    truth = np.stack([disc((95, 110), 50), rect(190, 60, 290, 190)])
    return paint(noisy(BACKGROUND), truth, (YELLOW, CYAN)), truth


def run(name: str, images: Sequence[Image], **params: Any) -> list[Segmentation]:
    """Each image through the engine in order, one frame per batch, as the pipeline would."""
    engine = create_engine(name, params)
    engine.load()
    results = []
    for index, image in enumerate(images):
        frame = Frame(index, image)
        results.extend(engine.infer([frame], [engine.prepare(frame)]))
    return results


def iou(a: Masks, b: Masks) -> float:
    """Intersection over union of two masks."""
    return float((a & b).sum() / max((a | b).sum(), 1))


def best_ious(found: Segmentation, truth: Masks) -> list[float]:
    """For each true mask, the best IoU of any found instance."""
    assert found.masks is not None
    return [max((iou(mask, true) for mask in found.full_masks()), default=0.0) for true in truth]


def check_consistent(found: Segmentation, height: int, width: int) -> None:
    """Masks in frame size, boxes tight around them, scores in 0..1, class ids in the engine's table."""
    assert found.masks is not None
    assert found.full_masks().shape == (len(found), height, width)
    np.testing.assert_array_equal(found.boxes, boxes_from_masks(found.full_masks()))
    assert found.full_masks().any(axis=(1, 2)).all()
    assert ((found.scores >= 0) & (found.scores <= 1)).all()
    assert ((found.class_ids >= 0) & (found.class_ids < len(found.classes.names))).all()


@pytest.mark.parametrize(("name", "params"), [
    ("threshold", {}),
    ("threshold", {"method": "mean", "block_size": 201}),
    ("threshold", {"polarity": "bright"}),
    ("edges", {}),
    ("edges", {"operator": "sobel"}),
    ("edges", {"operator": "laplacian"}),
    ("region", {}),
])
def test_static_shapes_are_found_as_instances(name: str, params: dict[str, Any]) -> None:
    """Each shape comes out as exactly one instance with IoU ≥ 0.9, scored as convex (solidity near 1)."""
    image, truth = shapes_scene()
    [found] = run(name, [image], **params)
    check_consistent(found, HEIGHT, WIDTH)
    assert len(found) == len(truth)
    assert min(best_ious(found, truth)) >= 0.9
    assert (found.scores > 0.9).all()


def test_edges_see_colour_outlines_that_grey_misses() -> None:
    """A red disc as bright as its grey background: no grey threshold sees it, the colour edges do."""
    truth = np.stack([disc((150, 120), 55)])
    image = paint(noisy((104, 104, 104)), truth, [(50, 80, 170)])
    [found] = run("edges", [image])
    [grey_found] = run("threshold", [image])
    assert len(found) == 1 and iou(found.full_masks()[0], truth[0]) >= 0.9
    assert max(best_ious(grey_found, truth)) < 0.5


def test_dark_objects_on_a_light_background_are_found_automatically() -> None:
    """Polarity auto takes the side that covers less of the frame, here the dark one."""
    truth = np.stack([disc((100, 120), 45)])
    image = paint(noisy((210, 210, 210)), truth, [(30, 30, 30)])
    [auto] = run("threshold", [image])
    [bright] = run("threshold", [image], polarity="bright")
    assert len(auto) == 1 and iou(auto.full_masks()[0], truth[0]) >= 0.9
    assert len(bright) == 1 and iou(bright.full_masks()[0], ~truth[0]) >= 0.9


def test_multi_level_threshold_gives_each_grey_level_its_class() -> None:
    """Three grey populations: the background level is left out, the others keep their level as class."""
    truth = np.stack([disc((90, 120), 45), rect(180, 50, 290, 200)])
    image = paint(noisy((30, 30, 30)), truth, [(120, 120, 120), (220, 220, 220)])
    [found] = run("threshold", [image], method="multi", levels=3)
    check_consistent(found, HEIGHT, WIDTH)
    assert found.classes.names == ("level 0", "level 1", "level 2")
    assert len(found) == 2 and min(best_ious(found, truth)) >= 0.9
    by_class = {int(c): mask for c, mask in zip(found.class_ids, found.full_masks(), strict=True)}
    assert iou(by_class[1], truth[0]) >= 0.9 and iou(by_class[2], truth[1]) >= 0.9


def test_multi_otsu_matches_opencv_and_brute_force() -> None:
    """Two levels reproduce OpenCV's Otsu; three levels the exhaustive search over all threshold pairs."""
    rng = np.random.default_rng(1)
    samples = np.concatenate([rng.normal(mean, 12, 4000) for mean in (50, 120, 190)])
    image = np.clip(samples, 0, 255).astype(np.uint8).reshape(1, -1)
    histogram = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    otsu, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    assert multi_otsu(histogram, 2).tolist() == [int(otsu) + 1]

    grey = np.arange(256)
    count, moment = np.cumsum(np.r_[0, histogram]), np.cumsum(np.r_[0, histogram * grey])

    def gain(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        weight, total = count[b] - count[a], moment[b] - moment[a]
        return np.divide(total**2, weight, out=np.zeros_like(total), where=weight > 0)

    low, high = np.triu_indices(256, k=1)
    keep = low > 0
    low, high = low[keep], high[keep]
    objective = gain(np.zeros_like(low), low) + gain(low, high) + gain(high, np.full_like(high, 256))
    best = int(np.argmax(objective))
    assert multi_otsu(histogram, 3).tolist() == [low[best], high[best]]


def test_kmeans_clusters_match_the_colour_regions() -> None:
    """k = 3 on background + two colours: each colour region is one cluster (IoU ≥ 0.9), darkest first."""
    image, shapes = shapes_scene()
    truth = np.concatenate([~shapes.any(axis=0)[None], shapes])
    [found] = run("kmeans", [image], k=3)
    check_consistent(found, HEIGHT, WIDTH)
    assert found.classes.names == ("cluster 0", "cluster 1", "cluster 2")
    assert len(found) == 3 and sorted(found.class_ids.tolist()) == [0, 1, 2]
    assert min(best_ious(found, truth)) >= 0.9
    background = found.full_masks()[np.flatnonzero(found.class_ids == 0)[0]]
    assert iou(background, truth[0]) >= 0.9  # ordered by L: the dark background is cluster 0
    assert (found.scores > 0.5).all()  # flat colours far apart


def test_kmeans_keeps_cluster_ids_from_frame_to_frame() -> None:
    """Warm-started from the last centres, a brightening disc keeps its cluster id even once it is lighter than
    the rectangle (a fresh engine, ordering by lightness, would give it another id): colours don't flicker."""
    shapes = [disc((90, 120), 45), rect(190, 60, 290, 190)]
    images = [paint(noisy(BACKGROUND), shapes, [(0, level, level), (200, 80, 40)]) for level in range(60, 230, 20)]

    def disc_class(seg: Segmentation) -> int:
        return int(seg.class_ids[np.flatnonzero(seg.full_masks()[:, 120, 90])[0]])

    ids = [disc_class(seg) for seg in run("kmeans", images, k=3)]
    assert ids == [ids[0]] * len(images)
    assert disc_class(run("kmeans", images[-1:], k=3)[0]) != ids[0]


def test_kmeans_split_components_gives_one_instance_per_region() -> None:
    """Two separate discs of one colour: one cluster, two instances of it."""
    truth = np.stack([disc((80, 120), 40), disc((230, 120), 40)])
    image = paint(noisy(BACKGROUND), truth, [YELLOW, YELLOW])
    [whole] = run("kmeans", [image], k=2)
    [split] = run("kmeans", [image], k=2, split_components=True)
    assert len(whole) == 2  # background and yellow
    yellow = split.class_ids == 1
    assert yellow.sum() == 2
    assert min(best_ious(split.select(yellow), truth)) >= 0.9


def test_region_splits_touching_discs_that_threshold_merges() -> None:
    """Two overlapping discs of one colour: threshold sees one blob, region one instance per disc."""
    first, second = disc((115, 120), 50), disc((200, 125), 40)
    truth = np.stack([first & ~second, second])
    image = paint(noisy(BACKGROUND), [first | second], [YELLOW])
    [merged] = run("threshold", [image])
    [found] = run("region", [image])
    assert len(merged) == 1
    check_consistent(found, HEIGHT, WIDTH)
    assert len(found) == 2 and min(best_ious(found, truth)) >= 0.9


def test_solidity_scores_hollow_shapes_lower() -> None:
    """A ring's score (area / convex-hull area) is far below a disc's."""
    ring = disc((160, 120), 70) & ~disc((160, 120), 55)
    [found] = run("threshold", [paint(noisy(BACKGROUND), [ring], [YELLOW])])
    assert len(found) == 1 and iou(found.full_masks()[0], ring) >= 0.9
    assert found.scores[0] < 0.5


def moving_scene(frames: int, empty: int, height: int = HEIGHT, width: int = WIDTH) -> tuple[list[Image], Masks]:
    """A static textured background, empty for `empty` frames, then a disc gliding right; (images, disc masks)."""
    rng = np.random.default_rng(7)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    background = cv2.addWeighted(texture, 0.5, np.full_like(texture, 90), 0.5, 0)
    radius = max(6, min(height, width) // 8)
    masks = np.zeros((frames, height, width), bool)
    for i in range(empty, frames):
        masks[i] = disc((radius + 2 + 5 * (i - empty), height // 2), radius, height, width)
    return [paint(background, [mask], [(40, 40, 220)]) for mask in masks], masks


def test_a_light_gradient_is_brought_back_to_the_backgrounds_brightness_up_to_the_frames_edges() -> None:
    """Light growing down the scene (0.8x at the top to 1.2x at the bottom) on a frame 22.5 cells high: each cell's
    correction lands where its brightness was measured, so the picture comes back within a third of a grey level on
    average (a gain map stretched over the half cell left over was off by twice that)."""
    engine = create_engine("motion", {"scale": 1.0, "light_cell": 16})
    engine.load()
    height, width = 360, 640
    scene = cv2.GaussianBlur(np.random.default_rng(1).integers(60, 160, (height, width, 3), dtype=np.uint8),
                             (0, 0), 3)
    engine._compensated(scene, learning=True)
    ramp = np.linspace(0.8, 1.2, height, dtype=np.float32)[:, None, None]
    lit = np.clip(scene * ramp, 0, 255).astype(np.uint8)
    error = np.abs(engine._compensated(lit, learning=False).astype(np.int16) - scene)
    assert error.mean() < 0.4
    assert np.abs(lit.astype(np.int16) - scene).mean() > 10  # what there was to compensate


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_motion_finds_the_moving_disc_after_warmup(method: str) -> None:
    """Nothing during warm-up; afterwards one instance per frame on the disc with IoU ≥ 0.8."""
    images, truth = moving_scene(30, empty=10)
    results = run("motion", images, method=method, warmup=10)
    assert all(len(seg) == 0 for seg in results[:10])
    for seg, mask in zip(results[12:], truth[12:], strict=True):
        check_consistent(seg, HEIGHT, WIDTH)
        assert len(seg) == 1
        assert iou(seg.full_masks()[0], mask) >= 0.8
        assert seg.scores[0] > 0.5


def test_motion_batches_give_the_same_result_as_single_frames() -> None:
    """State lives on the engine: one batch of many frames equals the frames one by one."""
    images, _ = moving_scene(16, empty=5)
    engine = create_engine("motion", {"warmup": 5})
    frames = [Frame(i, image) for i, image in enumerate(images)]
    batched = engine.infer(frames, [engine.prepare(frame) for frame in frames])
    single = run("motion", images, warmup=5)
    assert [len(seg) for seg in batched] == [len(seg) for seg in single]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_array_equal(a.full_masks(), b.full_masks())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [0, 128])
def test_uniform_frames_give_empty_segmentations(name: str, value: int) -> None:
    """A frame with nothing in it gives no instances (and no error), with masks of frame size."""
    image = np.full((HEIGHT, WIDTH, 3), value, np.uint8)
    for found in run(name, [image] * 4, **({"warmup": 1} if name == "motion" else {})):
        assert len(found) == 0
        assert found.masks is not None and found.full_masks().shape == (0, HEIGHT, WIDTH)


@pytest.mark.parametrize(("name", "params"), [
    ("threshold", {}), ("threshold", {"method": "multi"}), ("edges", {}), ("kmeans", {"k": 3}),
    ("kmeans", {"k": 3, "split_components": True}), ("region", {}),
])
def test_odd_frame_sizes_keep_masks_and_boxes_consistent(name: str, params: dict[str, Any]) -> None:
    """At 161x121 (odd, not a multiple of the working scale) masks are frame-sized and boxes hug them."""
    image, _ = shapes_scene()
    small = cv2.resize(image, (161, 121), interpolation=cv2.INTER_AREA)
    [found] = run(name, [small], **params)
    check_consistent(found, 121, 161)
    assert len(found) >= 2


def test_odd_frame_sizes_for_motion() -> None:
    """Motion at 161x121 with its half-resolution model still returns frame-sized masks on the disc."""
    images, truth = moving_scene(20, 8, 121, 161)
    results = run("motion", images, warmup=8, min_area=20)
    for seg, mask in zip(results[10:], truth[10:], strict=True):
        check_consistent(seg, 121, 161)
        assert len(seg) == 1 and iou(seg.full_masks()[0], mask) >= 0.7  # a 15-pixel disc, modelled at half size


def test_region_masks_are_nearest_neighbour_upscales_cropped_to_tight_boxes() -> None:
    """Box-wise upscaling of a label map's regions equals resizing whole masks (pixel centres aligned), and each mask
    comes cropped to its tight box."""
    rng = np.random.default_rng(3)
    for (height, width), size in [((30, 40), (121, 161)), ((61, 81), (121, 161)), ((7, 5), (20, 33))]:
        labels = np.zeros((height, width), np.int32)
        for region in (1, 2, 3):
            y, x = rng.integers(0, height - 2), rng.integers(0, width - 2)
            block = labels[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)]
            block[rng.random(block.shape) > 0.2] = region
            labels[rng.integers(0, height), rng.integers(0, width)] = region
        ids = np.array([3, 1, 2])
        rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(int), height - 1)
        cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(int), width - 1)
        masks = region_masks(labels, ids, size)
        expected = (labels == ids[:, None, None])[:, rows][:, :, cols]
        np.testing.assert_array_equal(masks.full(), expected)
        np.testing.assert_array_equal(masks.boxes, boxes_from_masks(expected))


@pytest.mark.parametrize(("name", "params", "named"), [
    ("threshold", {"nonsense": 1}, "engine.threshold.nonsense"),
    ("threshold", {"method": "psychic"}, "engine.threshold.method"),
    ("threshold", {"levels": 1}, "levels"),
    ("threshold", {"blur": 4}, "blur"),
    ("threshold", {"min_area": 0}, "min_area"),
    ("edges", {"close_kernel": 0}, "close_kernel"),
    ("edges", {"low": 200.0, "high": 100.0}, "high"),
    ("kmeans", {"k": 1}, "k must"),
    ("kmeans", {"scale": 1.5}, "scale"),
    ("kmeans", {"split_components": "yes"}, "engine.kmeans.split_components"),
    ("region", {"peak_fraction": 1.5}, "peak_fraction"),
    ("motion", {"scale": 0.0}, "scale"),
    ("motion", {"learning_rate": 2.0}, "learning_rate"),
    ("motion", {"history": "long"}, "engine.motion.history"),
    ("motion", {"max_instances": 0}, "max_instances"),
    ("motion", {"history_seconds": 0.0}, "history_seconds"),
    ("motion", {"light_cell": -1}, "light_cell"),
    ("motion", {"texture": 1.5}, "texture"),
    ("motion", {"texture_window": 1}, "texture_window"),
    ("motion", {"merge": 1000}, "merge"),
    ("motion", {"relearn": 2.0}, "relearn"),
    ("motion", {"kernel": 100_000}, "kernel must be between 1 and 255"),  # would allocate a 10^10 kernel
    ("threshold", {"blur": 100_001}, "blur must be 0 .off. or an odd size up to 255"),
    ("kmeans", {"iterations": 10**9}, "iterations"),
])
def test_bad_params_are_refused_naming_the_key(name: str, params: dict[str, Any], named: str) -> None:
    """Unknown keys, wrong types and out-of-range values raise ConfigError with the key in the message."""
    with pytest.raises(ConfigError, match=named):
        create_engine(name, params)


@pytest.mark.parametrize("name", NAMES)
def test_registry_finds_each_engine(name: str) -> None:
    """The registry's module path leads to an instance engine of that name with defaults that validate."""
    cls = engine_class(name)
    assert cls.name == name and cls.kind == "instance"
    assert create_engine(name).classes.names


def speckled_scene(rng: np.random.Generator) -> Image:
    """Bright squares of many sizes on a dark ground: a hundred and more regions."""
    image = noisy(BACKGROUND)
    for _ in range(140):
        side = int(rng.integers(4, 30))
        y, x = int(rng.integers(0, HEIGHT - side)), int(rng.integers(0, WIDTH - side))
        image[y:y + side, x:x + side] = (220, 220, 220)
    return image


@pytest.mark.parametrize(("name", "params"), [("threshold", {"polarity": "bright"}), ("edges", {}),
                                              ("kmeans", {"split_components": True}), ("region", {})])
def test_region_engines_give_a_capped_region_map_by_default(name: str, params: dict[str, Any]) -> None:
    image = speckled_scene(np.random.default_rng(7))
    regions = run(name, [image], min_area=16, **params)[0]
    instances = run(name, [image], min_area=16, output="instances", **params)[0]
    assert regions.regions and not instances.regions
    assert 1 <= len(regions) <= 12 < len(instances)
    covered = regions.full_masks().any(axis=0)
    assert covered.sum() >= instances.full_masks().any(axis=0).sum()  # smaller regions merged in, not dropped
    assert len(run(name, [image], min_area=16, regions=3, **params)[0]) <= 3


def test_motion_labels_carry_no_made_up_score() -> None:
    frames, _ = moving_scene(30, 15)
    found = run("motion", frames)
    assert any(len(seg) for seg in found) and not any(seg.scored for seg in found if len(seg))
