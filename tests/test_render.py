"""The compositor: blend values, untouched pixels, stable colours, the VOC palette, label maps, legend, edge cases."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from seg_video.core.colors import instance_color, voc_palette
from seg_video.core.config import RenderSettings
from seg_video.core.errors import ConfigError
from seg_video.core.settings import from_mapping
from seg_video.core.types import ClassTable, Segmentation, boxes_from_masks
from seg_video.stages.render import Renderer

VOC = ClassTable((None, "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                  "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                  "tvmonitor"))
H, W = 240, 320
MASKS_ONLY = RenderSettings(contours=False, boxes=False, labels=False, legend=False)


def disc(cy: int, cx: int, r: int, height: int = H, width: int = W) -> npt.NDArray[np.bool_]:
    """A filled circle mask."""
    yy, xx = np.ogrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def instances(*masks: npt.NDArray[np.bool_], track_ids: list[int] | None = None,
              label_map: npt.NDArray[np.uint8] | None = None) -> Segmentation:
    """A segmentation of the given masks (boxes fitted to them), all `person`."""
    stack = np.array(masks, bool).reshape(len(masks), H, W)
    n = len(masks)
    return Segmentation(height=H, width=W, classes=VOC, boxes=boxes_from_masks(stack),
                        scores=np.full(n, 0.87, np.float32), class_ids=np.full(n, 15), masks=stack,
                        track_ids=None if track_ids is None else np.array(track_ids), label_map=label_map)


def noise(height: int = H, width: int = W) -> npt.NDArray[np.uint8]:
    """A random BGR frame (so that any change shows)."""
    return np.random.default_rng(7).integers(0, 256, (height, width, 3), np.uint8)


def blend(image: npt.NDArray[np.uint8], color: tuple[int, int, int] | npt.NDArray[np.uint8], alpha: float) -> \
        npt.NDArray[np.float64]:
    """What an alpha blend of `color` over `image` should give."""
    return image * (1 - alpha) + np.asarray(color, np.float64) * alpha


def changed(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Pixels where two images differ in any channel."""
    return np.any(a != b, axis=2)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.8])
def test_mask_pixels_blend_towards_the_instance_colour(alpha: float) -> None:
    image = noise()
    mask = disc(120, 160, 50)
    out = Renderer(RenderSettings(alpha=alpha, labels=False)).render(image, instances(mask))
    interior = disc(120, 160, 45)  # clear of the outline drawn along the mask's edge
    expected = blend(image[interior], instance_color(0), alpha)
    assert np.abs(out[interior] - expected).max() <= 2


def test_only_mask_pixels_change_when_only_masks_are_drawn() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    masks = disc(80, 90, 30), disc(150, 220, 40) | disc(40, 280, 10)
    out = Renderer(MASKS_ONLY).render(image, instances(*masks))
    assert np.array_equal(changed(out, image), masks[0] | masks[1])


def test_the_outline_runs_along_the_mask_edge_inside_the_mask() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    mask = disc(120, 160, 40)
    out = Renderer(RenderSettings(alpha=0.0, boxes=False, labels=False)).render(image, instances(mask))
    drawn = changed(out, image)
    rows = np.flatnonzero(mask.any(axis=1))
    first, last = mask[rows].argmax(axis=1), W - 1 - mask[rows, ::-1].argmax(axis=1)
    assert np.all(drawn[rows, first]) and np.all(drawn[rows, last])  # each row's ends: on the edge
    assert not np.any(drawn & ~mask) and not drawn[120, 160]
    assert np.all(out[drawn] == instance_color(0))


def test_pixels_away_from_all_annotations_are_untouched() -> None:
    image = noise()
    mask = disc(150, 120, 30)
    out = Renderer(RenderSettings()).render(image, instances(mask, track_ids=[12]))
    away = np.ones((H, W), bool)
    away[150 - 30 - 3:150 + 30 + 3, 120 - 30 - 3:120 + 30 + 120] = False  # box with its line, label (may be wider)
    assert np.array_equal(out[away], image[away])
    assert changed(out, image)[~away].any()


def test_masks_spilling_a_little_past_their_box_are_filled_whole() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    mask = disc(120, 160, 40)
    seg = instances(mask)
    seg.boxes += np.array([2, 2, -2, -2], np.float32)  # as Mask R-CNN boxes can be, slightly inside the mask
    out = Renderer(MASKS_ONLY).render(image, seg)
    assert np.array_equal(changed(out, image), mask)


def test_the_input_image_is_never_modified() -> None:
    image = noise()
    before = image.copy()
    label_map = np.zeros((H, W), np.uint8)
    label_map[100:200, 20:120] = 15
    seg = instances(disc(120, 160, 50), disc(10, 10, 30), label_map=label_map)
    for semantic in ("overlay", "labels"):
        out = Renderer(RenderSettings(semantic=semantic, fps_overlay=True)).render(image, seg, fps=29.97)
        assert not np.shares_memory(out, image)
    assert np.array_equal(image, before)


def test_an_empty_segmentation_gives_an_unchanged_copy() -> None:
    image = noise()
    out = Renderer(RenderSettings()).render(image, Segmentation.empty(H, W, VOC))
    assert np.array_equal(out, image)
    assert not np.shares_memory(out, image)


def test_a_track_keeps_its_colour_across_frames_and_tracks_differ() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    renderer = Renderer(MASKS_ONLY)
    first = renderer.render(image, instances(disc(60, 60, 30), disc(160, 240, 30), track_ids=[7, 3]))
    second = renderer.render(image, instances(disc(120, 120, 30), track_ids=[3]))
    assert np.array_equal(first[160, 240], second[120, 120])
    assert not np.array_equal(first[60, 60], first[160, 240])
    assert instance_color(3) == instance_color(3)
    assert len({instance_color(key) for key in range(200)}) == 200


def test_voc_palette_follows_the_bit_interleaving_rule() -> None:
    palette = voc_palette(256)
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (0, 0, 128)  # RGB (128, 0, 0), stored BGR
    assert tuple(palette[15]) == (128, 128, 192)  # person: RGB (192, 128, 128)
    for class_id in range(256):  # the reference rule, one id at a time
        rgb, c = [0, 0, 0], class_id
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << bit
            c >>= 3
        assert tuple(palette[class_id]) == tuple(rgb[::-1])
    assert np.array_equal(voc_palette(21), palette[:21])


@pytest.fixture
def person_map() -> npt.NDArray[np.uint8]:
    """A label map: background, with a `person` (15) block."""
    label_map = np.zeros((H, W), np.uint8)
    label_map[100:200, 40:200] = 15
    return label_map


def test_label_map_overlay_blends_classes_and_leaves_background_untouched(person_map: npt.NDArray[np.uint8]) -> None:
    image = noise()
    seg = Segmentation(height=H, width=W, classes=VOC, label_map=person_map)
    out = Renderer(RenderSettings(alpha=0.4, legend=False)).render(image, seg)
    background = person_map == 0
    assert np.array_equal(out[background], image[background])
    assert np.abs(out[~background] - blend(image[~background], voc_palette(21)[15], 0.4)).max() <= 2


def test_label_map_labels_mode_shows_the_colour_map_alone(person_map: npt.NDArray[np.uint8]) -> None:
    seg = Segmentation(height=H, width=W, classes=VOC, label_map=person_map.astype(np.int64))
    out = Renderer(RenderSettings(semantic="labels", legend=False)).render(noise(), seg)
    assert np.array_equal(out, voc_palette(256)[person_map])


def test_label_map_and_instances_are_both_drawn_instances_on_top(person_map: npt.NDArray[np.uint8]) -> None:
    image = noise()
    mask = disc(150, 120, 20) | disc(50, 270, 20)  # one part over the person block, one over background
    out = Renderer(MASKS_ONLY).render(image, instances(mask, label_map=person_map))
    under_map = (person_map == 15) & ~mask
    assert np.abs(out[under_map] - blend(image[under_map], voc_palette(21)[15], 0.5)).max() <= 2
    assert np.abs(out[mask] - blend(image[mask], instance_color(0), 0.5)).max() <= 2


def legend_box(image: npt.NDArray[np.uint8], label_map: npt.NDArray[np.uint8]) -> tuple[slice, slice]:
    """Where the legend is drawn: the rows and columns that change when it is switched on."""
    seg = Segmentation(height=H, width=W, classes=VOC, label_map=label_map)
    on, off = (Renderer(RenderSettings(legend=legend)).render(image, seg) for legend in (True, False))
    ys, xs = np.nonzero(changed(on, off))
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def test_the_legend_lists_exactly_the_classes_present() -> None:
    image = np.full((H, W, 3), 60, np.uint8)
    label_map = np.zeros((H, W), np.uint8)
    label_map[150:200, 10:60], label_map[150:200, 70:120], label_map[200:230, 10:120] = 1, 12, 15
    rows, cols = legend_box(image, label_map)
    assert rows.start == 0 and cols.stop == W  # top-right corner
    seg = Segmentation(height=H, width=W, classes=VOC, label_map=label_map)
    legend = Renderer(RenderSettings()).render(image, seg)[rows, cols]
    palette = voc_palette(21)
    coloured = [c for c in range(1, 21) if len(set(palette[c])) > 1]  # grey entries could be anti-aliased text
    assert {c for c in coloured if np.all(legend == palette[c], axis=2).sum() >= 16} == {1, 12, 15}
    one_row, _ = legend_box(image, np.where(label_map == 12, 12, 0).astype(np.uint8))
    assert rows.stop == 3 * one_row.stop  # a row per class, none for the background


def test_text_stays_inside_the_image_at_the_border() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    renderer = Renderer(RenderSettings(alpha=0.0, contours=False, boxes=False))
    inside = np.zeros((H, W), bool)
    inside[100:140, 100:140] = True
    corner = np.zeros((H, W), bool)
    corner[0:40, W - 5:W] = True
    sizes = []
    for mask in (inside, corner):
        ys, xs = np.nonzero(changed(renderer.render(image, instances(mask)), image))
        sizes.append((ys.max() - ys.min(), xs.max() - xs.min()))
    assert sizes[0] == sizes[1]  # the corner's label is moved in whole, not cut off


def test_labels_name_the_track_when_there_is_one() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    renderer = Renderer(RenderSettings(alpha=0.0, contours=False, boxes=False))
    mask = disc(120, 160, 30)
    widths = []
    for track_ids in (None, [12]):
        xs = np.nonzero(changed(renderer.render(image, instances(mask, track_ids=track_ids)), image))[1]
        widths.append(xs.max() - xs.min())
    assert widths[1] > widths[0] > 0
    assert np.array_equal(Renderer(RenderSettings(alpha=0.0, contours=False, boxes=False, labels=False)).render(
        image, instances(mask)), image)


@pytest.mark.parametrize("height, width", [(17, 31), (31, 17), (1, 1), (720, 1281)])
def test_odd_and_tiny_frames_with_border_boxes_render(height: int, width: int) -> None:
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), np.uint8)
    masks = np.zeros((3, height, width), bool)
    masks[0, :3, :3] = masks[1, -2:, -4:] = masks[2] = True
    boxes = np.array([[-10, -10, 3, 3], [width - 4, height - 2, width + 9, height + 9], [0, 0, width, height]],
                     np.float32)
    label_map = np.arange(height * width).reshape(height, width) % 21
    seg = Segmentation(height=height, width=width, classes=VOC, boxes=boxes, scores=np.ones(3, np.float32),
                       class_ids=np.array([1, 15, 99]), masks=masks, track_ids=np.array([1, 2, 3]),
                       label_map=label_map)
    for semantic in ("overlay", "labels"):
        out = Renderer(RenderSettings(semantic=semantic, fps_overlay=True)).render(image, seg, fps=12.5)
        assert out.shape == image.shape and out.dtype == np.uint8


def test_the_fps_overlay_is_drawn_only_when_asked() -> None:
    image = noise()
    seg = Segmentation.empty(H, W, VOC)
    assert np.array_equal(Renderer(RenderSettings()).render(image, seg, fps=30.0), image)
    assert np.array_equal(Renderer(RenderSettings(fps_overlay=True)).render(image, seg), image)
    ys, xs = np.nonzero(changed(Renderer(RenderSettings(fps_overlay=True)).render(image, seg, fps=30.0), image))
    assert ys.min() == 0 and xs.min() == 0 and ys.max() < H // 4 and xs.max() < W // 2


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="image is"):
        Renderer(RenderSettings()).render(noise(H, W + 1), Segmentation.empty(H, W, VOC))
    label_map = np.full((H, W), 300, np.int64)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        Renderer(RenderSettings()).render(noise(), Segmentation(height=H, width=W, classes=VOC, label_map=label_map))


@pytest.mark.parametrize("bad", [{"alpha": 1.5}, {"alpha": -0.1}, {"alpha": float("nan")}, {"semantic": "heat"}])
def test_settings_validation_rejects_bad_values(bad: dict[str, object]) -> None:
    settings = RenderSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        settings.validate()
    with pytest.raises(ValueError):
        Renderer(settings)
    with pytest.raises(ConfigError, match="render"):
        from_mapping(RenderSettings, bad, "render")


def test_a_render_table_maps_onto_the_settings() -> None:
    table = {"alpha": 0.3, "contours": False, "boxes": True, "labels": False, "semantic": "labels", "legend": False,
             "fps_overlay": True}
    assert from_mapping(RenderSettings, table, "render") == RenderSettings(**table)  # type: ignore[arg-type]


def drawn_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the renderer puts on a picture, in order."""
    texts: list[str] = []
    real = cv2.putText

    def spy(image: Any, text: str, *args: Any, **kwargs: Any) -> Any:
        texts.append(text)
        return real(image, text, *args, **kwargs)

    monkeypatch.setattr(cv2, "putText", spy)
    return texts


def test_a_region_map_is_fills_and_outlines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = drawn_texts(monkeypatch)
    image = noise()
    as_regions = instances(disc(60, 60, 30), disc(150, 200, 40))
    as_regions.regions = True
    plain = Renderer(RenderSettings(boxes=False, labels=False)).render(image, as_regions)
    full = Renderer(RenderSettings()).render(image, as_regions)
    assert np.array_equal(plain, full) and not texts  # no boxes, no labels, whatever the settings
    assert not np.array_equal(full, image)
    as_regions.regions = False
    assert not np.array_equal(Renderer(RenderSettings()).render(image, as_regions), full) and texts


def test_labels_leave_out_scores_that_mean_nothing_and_never_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = drawn_texts(monkeypatch)
    seg = instances(disc(100, 100, 30), disc(100, 101, 30), disc(40, 260, 20), track_ids=[3, 4, 5])
    Renderer(RenderSettings()).render(noise(), seg)
    assert texts == ["#3 person 0.87", "#5 person 0.87"]  # #4's label would cover #3's
    texts.clear()
    seg.scored = False
    Renderer(RenderSettings()).render(noise(), seg)
    assert texts == ["#3 person", "#5 person"]
