"""Privacy masking and heatmaps on pictures of known shapes: a textured person-like figure whose interior must not
survive any style (every pixel changed by a lot, no correlation left), the dilation band covered, everything farther
untouched, other classes untouched, label maps alike; a walker on a known path whose heat lies on that path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from seg_video.core.types import ClassTable, Segmentation, boxes_from_masks
from seg_video.stages.heatmap import Heatmap
from seg_video.stages.privacy import BLUR_STYLES, BlurStyle, Privacy, PrivacySettings

H, W = 240, 320
CLASSES = ClassTable(("person", "car"))
SEMANTIC = ClassTable(("background", "person", "car"))
Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

DARK, BRIGHT = (0, 50), (205, 256)
"""The textures' two ranges of values: any block average of them lies far from both."""


def person_mask() -> Mask:
    """A standing figure: an elliptic body and a round head."""
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (110, 150), (28, 60), 0, 0, 360, 1, cv2.FILLED)
    cv2.circle(mask, (110, 76), 17, 1, cv2.FILLED)
    return mask.astype(bool)


def car_mask() -> Mask:
    """A box well away from the person."""
    mask = np.zeros((H, W), bool)
    mask[150:200, 220:300] = True
    return mask


def checker(seed: int, cell: int, phase: int = 0) -> Image:
    """A random colour checkerboard of `cell`-pixel squares alternating between dark and bright values (`phase` 1:
    dark and bright swapped)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((H, W))
    bright = ((yy // cell + xx // cell + phase) % 2).astype(bool)[..., None]
    return np.where(bright, rng.integers(*BRIGHT, (H, W, 3)), rng.integers(*DARK, (H, W, 3))).astype(np.uint8)


def scene() -> tuple[Image, Mask, Mask]:
    """A picture of a finely textured person and car over a differently textured background, and their masks."""
    person, car = person_mask(), car_mask()
    picture = checker(1, 1)
    picture[person] = checker(2, 2)[person]
    picture[car] = checker(3, 3)[car]
    return picture, person, car


def instances(person: Mask, car: Mask) -> Segmentation:
    """An instance segmentation of the person (not yet confirmed by the tracker: track id -1) and the car."""
    stack = np.stack([person, car])
    return Segmentation(height=H, width=W, classes=CLASSES, boxes=boxes_from_masks(stack),
                        scores=np.array([0.9, 0.9], np.float32), class_ids=np.array([0, 1]), masks=stack,
                        track_ids=np.array([-1, 3]))


def distance_from(mask: Mask) -> npt.NDArray[np.float32]:
    """Each pixel's distance from the nearest pixel of `mask` (0 inside it)."""
    return cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def change(before: Image, after: Image) -> npt.NDArray[np.int16]:
    """Per pixel, the largest change of any channel."""
    return np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2)


def assert_hidden(before: Image, after: Image, person: Mask, dilate: int, style: BlurStyle) -> None:
    """The person's interior is gone, the dilation band around it is replaced, everything farther is untouched."""
    changed = change(before, after)
    assert changed[person].min() >= 40, "an interior pixel survived"
    inside, original = after[person].astype(np.float64), before[person].astype(np.float64)
    if style == "fill":
        assert len(np.unique(after[person], axis=0)) == 1
    else:
        assert abs(np.corrcoef(inside.ravel(), original.ravel())[0, 1]) < 0.1, "the interior can be recovered"
    distance = distance_from(person)
    band = (distance > 0) & (distance <= dilate - 0.5)
    assert dilate == 0 or (band.any() and changed[band].min() > 0), "the dilation band is not covered"
    far = distance > dilate + 1.5
    assert np.array_equal(after[far], before[far]), "pixels outside the dilated mask changed"


@pytest.mark.parametrize("dilate", [0, 5])
@pytest.mark.parametrize("style", BLUR_STYLES)
def test_each_style_hides_the_masked_person_and_nothing_else(style: BlurStyle, dilate: int) -> None:
    before, person, car = scene()
    after = before.copy()
    Privacy(PrivacySettings(("person",), style=style, dilate=dilate)).apply(after, instances(person, car))
    assert_hidden(before, after, person, dilate, style)
    assert np.array_equal(after[car], before[car]), "a class not chosen was touched"
    x1, y1, x2, y2 = boxes_from_masks(person[None])[0].astype(int)
    corners = np.zeros_like(person)
    corners[y1:y2, x1:x2] = distance_from(person)[y1:y2, x1:x2] > dilate + 1.5
    assert corners.sum() > 500, "the test's figure should leave much of its box outside the mask"


@pytest.mark.parametrize("style", BLUR_STYLES)
def test_the_masked_interior_keeps_no_detail(style: BlurStyle) -> None:
    """Two people whose every pixel differs (dark and bright swapped) look the same once masked."""
    first, person, car = scene()
    second = first.copy()
    second[person] = checker(6, 2, phase=1)[person]
    assert change(first, second)[person].min() >= 150
    privacy = Privacy(PrivacySettings(("person",), style=style))
    for picture in (first, second):
        privacy.apply(picture, instances(person, car))
    assert change(first, second)[person].max() <= 12


@pytest.mark.parametrize("style", BLUR_STYLES)
def test_label_map_pixels_of_the_chosen_classes_are_hidden(style: BlurStyle) -> None:
    before, person, car = scene()
    label_map = np.zeros((H, W), np.uint8)
    label_map[person], label_map[car] = 1, 2
    after = before.copy()
    Privacy(PrivacySettings(("person",), style=style)).apply(after, Segmentation(H, W, SEMANTIC, label_map=label_map))
    assert_hidden(before, after, person, 4, style)
    assert np.array_equal(after[car], before[car])


def test_several_classes_and_an_instance_without_a_mask_by_its_box() -> None:
    before, person, car = scene()
    boxes = boxes_from_masks(np.stack([person, car]))
    seg = Segmentation(H, W, CLASSES, boxes=boxes, scores=np.ones(2, np.float32), class_ids=np.array([0, 1]))
    after = before.copy()
    Privacy(PrivacySettings(("person", "car"), style="pixelate", dilate=2)).apply(after, seg)
    covered = np.zeros((H, W), bool)
    for x1, y1, x2, y2 in boxes.astype(int).tolist():
        covered[y1:y2, x1:x2] = True
    assert_hidden(before, after, covered, 2, "pixelate")


def test_bad_settings_and_unknown_classes_are_refused() -> None:
    for bad in (PrivacySettings(()), PrivacySettings(("person",), dilate=-1),
                PrivacySettings(("person",), strength=0.0), PrivacySettings(("person",), style="smudge")):  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Privacy(bad)
    before, person, car = scene()
    with pytest.raises(ValueError, match="unknown class 'face'"):
        Privacy(PrivacySettings(("face",))).apply(before, instances(person, car))
    before.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        Privacy(PrivacySettings(("person",))).apply(before, instances(person, car))


PATH_TOP, PATH_BOTTOM = 150, 190
"""Rows the walker's body covers as it walks from left to right."""


def street() -> Image:
    """The walker's background: a texture with a parked car."""
    background = checker(4, 1)
    background[40:80, 200:280] = (40, 40, 200)
    return background


def walk(frames: int) -> list[tuple[Image, Mask]]:
    """A textured walker crossing the frame along a known path, over the street."""
    background = street()
    out = []
    for index in range(frames):
        mask = np.zeros((H, W), bool)
        left = 10 + round(index * 280 / frames)
        mask[PATH_TOP:PATH_BOTTOM, left:left + 16] = True
        picture = background.copy()
        picture[mask] = checker(5, 2)[mask]
        out.append((picture, mask))
    return out


def test_the_heat_lies_on_the_walkers_path(tmp_path: Path) -> None:
    heatmap = Heatmap(("person",))
    parked = np.zeros((H, W), bool)
    parked[40:80, 200:280] = True
    frames = walk(60)
    for picture, mask in frames:
        heatmap.add(picture, instances(mask, parked))
    heat = heatmap.heat()
    assert heat.shape == (H, W)
    assert heat[PATH_TOP - 4:PATH_BOTTOM + 4].sum() >= 0.9 * heat.sum()
    assert heat[PATH_TOP + 5:PATH_BOTTOM - 5, 20:290].min() > 0, "a stretch of the path is cold"
    assert heat[40:80, 200:280].max() == 0, "a class not chosen left heat"
    scene_picture = heatmap.scene()
    assert np.array_equal(scene_picture, street()), "the walker should fade out of the scene"
    picture = heatmap.picture()
    assert picture.shape == (H, W, 3) and picture.dtype == np.uint8
    assert np.array_equal(picture[:PATH_TOP - 8], scene_picture[:PATH_TOP - 8]), "cold places must show the scene"
    assert change(scene_picture, picture)[PATH_TOP + 5:PATH_BOTTOM - 5, 20:290].mean() > 20
    assert change(scene_picture, picture)[H - 4:, :20].max() > 0, "the key is missing"
    target = tmp_path / "out" / "heat.png"
    heatmap.write(target)
    assert np.array_equal(cv2.imread(str(target)), picture)
    assert [p.name for p in target.parent.iterdir()] == ["heat.png"]


def test_label_map_heat_and_misuse() -> None:
    heatmap = Heatmap(scale=0.2)
    with pytest.raises(RuntimeError, match="no frames"):
        heatmap.picture()
    for picture, mask in walk(30):
        heatmap.add(picture, Segmentation(H, W, SEMANTIC, label_map=mask.astype(np.uint8)))
    heat = heatmap.heat()
    assert heat[PATH_TOP - 5:PATH_BOTTOM + 5].sum() >= 0.9 * heat.sum() > 0
    small = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(ValueError, match="320x240"):
        heatmap.add(small, Segmentation.empty(120, 160, SEMANTIC))
    with pytest.raises(ValueError, match="scale"):
        Heatmap(scale=0)
