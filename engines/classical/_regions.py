"""Shared image steps of the classical engines: smoothing, grey, shrinking, (multi-level) Otsu, and label map →
scored instances.

Every engine ends the same way: a label map (0 = nothing, k = region k, possibly at reduced resolution) goes
through `segmentation`, which keeps regions by area, upscales them to frame size and builds compact masks (each
cropped to its box) and boxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, InstanceMasks, Segmentation

Polarity = Literal["auto", "bright", "dark"]
"""Which side of a grey threshold holds the objects; `auto`: the side that covers less of the frame."""

Grey = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int32]


def smooth(image: npt.NDArray[np.uint8], blur: int) -> npt.NDArray[np.uint8]:
    """The image Gaussian-blurred with a `blur`-sized kernel (0: as it is) to quiet noise."""
    return cast(npt.NDArray[np.uint8], cv2.GaussianBlur(image, (blur, blur), 0)) if blur else image


def grey(image: npt.NDArray[np.uint8], blur: int) -> Grey:
    """The BGR image in grey, smoothed (see `smooth`)."""
    return smooth(cast(Grey, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)), blur)


def shrink(image: npt.NDArray[np.uint8], scale: float) -> npt.NDArray[np.uint8]:
    """The image resized by `scale` (area averaging, at least 1x1 pixel) so per-pixel work costs less."""
    if scale == 1:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cast(npt.NDArray[np.uint8], cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def grey_classes(image: Grey, levels: int, polarity: Polarity) -> tuple[Grey, int]:
    """(map of multi-level Otsu classes, 0 = darkest; the background class): objects are the other classes.

    The background is the largest class (`auto`), or the darkest (`bright` objects) or brightest (`dark` objects)
    class that any pixel falls in, so a uniform frame is all background whatever the polarity.
    """
    histogram = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    lut = np.searchsorted(multi_otsu(histogram, levels), np.arange(256), side="right").astype(np.uint8)
    weights = np.bincount(lut, weights=histogram, minlength=levels)
    present = np.flatnonzero(weights)
    background = {"auto": int(np.argmax(weights)), "bright": present[0], "dark": present[-1]}[polarity]
    return cast(Grey, cv2.LUT(image, lut)), int(background)


def multi_otsu(histogram: npt.NDArray[np.float64], levels: int) -> npt.NDArray[np.int64]:
    """The `levels - 1` thresholds (first grey value of classes 1..) that maximise Otsu's between-class variance.

    Exact, by dynamic programming over the 256 bins: maximising the between-class variance is maximising the sum
    over classes of (grey-value sum)² / (pixel count), and the best split of bins 0..b into j classes extends the
    best split of bins 0..a-1 into j - 1 classes by the class a..b.
    """
    bins = len(histogram)
    count = np.concatenate(([0.0], np.cumsum(histogram)))
    total = np.concatenate(([0.0], np.cumsum(histogram * np.arange(bins))))
    weight = count[None, 1:] - count[:-1, None]  # [a, b]: pixels in bins a..b
    moment = total[None, 1:] - total[:-1, None]
    gain = np.divide(moment**2, weight, out=np.zeros_like(weight), where=weight > 0)
    gain[np.tri(bins, k=-1, dtype=bool)] = -np.inf  # a class a..b needs a <= b
    best = gain[0]
    starts = []
    for _ in range(levels - 1):
        candidates = best[:-1, None] + gain[1:]  # [a - 1, b]: classes so far end at a - 1, the new one is a..b
        start = np.argmax(candidates, axis=0)
        best = candidates[start, np.arange(bins)]
        starts.append(start + 1)
    thresholds = []
    end = bins - 1
    for start in reversed(starts):
        thresholds.append(int(start[end]))
        end = thresholds[-1] - 1
    return np.array(thresholds[::-1], np.int64)


def components(
    level_map: npt.NDArray[np.generic], levels: Iterable[int] = (1,), opening: npt.NDArray[np.uint8] | None = None
) -> tuple[Labels, npt.NDArray[np.int64]]:
    """8-connected regions of each level in `level_map` (a boolean mask by default): (label map, level of each label).

    Label 0 is "no region" (its level entry is 0); the regions of one level are numbered after those of the last.
    With an `opening` kernel, each level's mask is first opened with it, dropping specks and thin bands.
    """
    labels = np.zeros(level_map.shape, np.int32)
    level_of = [0]
    for level in levels:
        mask = (level_map == level).view(np.uint8)
        if opening is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, opening)
        count, part = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
        np.add(part, len(level_of) - 1, out=labels, where=part > 0)
        level_of += [level] * (count - 1)
    return labels, np.array(level_of, np.int64)


def ellipse(size: int) -> npt.NDArray[np.uint8]:
    """An elliptic structuring element `size` pixels across, for morphological clean-up."""
    return cast(npt.NDArray[np.uint8], cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))


def segmentation(
    labels: Labels,
    size: tuple[int, int],
    classes: ClassTable,
    class_of: npt.NDArray[np.int64],
    *,
    min_area: int,
    max_instances: int,
    score_of: npt.NDArray[np.floating] | None = None,
    regions: int | None = None,
    scored: bool = True,
    boxes: npt.NDArray[np.int64] | None = None,
    areas: npt.NDArray[np.int64] | None = None,
) -> Segmentation:
    """Instances from a label map at any resolution: regions of at least `min_area` frame pixels, largest first.

    `class_of[k]` and `score_of[k]` are region k's class id and score; without `score_of`, each instance is scored
    by its solidity. Masks are upscaled (nearest neighbour) to `size` = (height, width) when the map is smaller.
    With `regions`, the result is a region map of at most that many regions: every smaller region is merged into
    the nearest kept one. `scored` False: the scores are no confidences, and labels leave them out. `boxes[k]`, when
    the caller knows them, is region k's xyxy box in the map (else found in one pass over it); `areas[k]`, likewise,
    its pixel count in the map.
    """
    counts = np.bincount(labels.ravel(), minlength=len(class_of)) if areas is None else areas
    frame_areas = counts * (size[0] * size[1] / labels.size)
    frame_areas[0] = 0
    order = np.argsort(-frame_areas, kind="stable")
    ids = order[frame_areas[order] >= min_area][:max_instances if regions is None else regions]
    if regions is not None:
        labels, boxes = merged(labels, ids), None
    masks = region_masks(labels, ids, size, None if boxes is None else boxes[ids])
    scores = solidity(masks) if score_of is None else score_of[ids]
    return Segmentation(*size, classes, boxes=masks.boxes.astype(np.float32), scores=scores,
                        class_ids=class_of[ids], masks=masks, regions=regions is not None, scored=scored)


def merged(labels: Labels, kept: npt.NDArray[np.integer]) -> Labels:
    """The label map with every region but `kept` merged into the nearest kept region (by distance to its pixels);
    label 0 (nothing) stays 0."""
    keep = np.isin(labels, kept)
    others = (labels != 0) & ~keep
    if not others.any() or not keep.any():
        return labels
    _, nearest = cv2.distanceTransformWithLabels((~keep).view(np.uint8), cv2.DIST_L2, 3,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    owners = labels[keep]  # the kept pixels in raster order: distance-transform label k is the k-th of them
    out = labels.copy()
    out[others] = owners[nearest[others] - 1]
    return out


def region_masks(labels: Labels, ids: npt.NDArray[np.integer], size: tuple[int, int],
                 known: npt.NDArray[np.int64] | None = None) -> InstanceMasks:
    """Regions `ids` of the label map as masks at `size` = (height, width), resized by nearest neighbour (pixel
    centres aligned), each cropped to its box (`known`: their xyxy boxes in the map, when the caller has them):
    only the box is resized, so the cost follows the regions' size rather than their number times the frame's."""
    (height, width), (small_height, small_width) = size, labels.shape
    rows = np.minimum(((np.arange(height) + 0.5) * small_height / height).astype(np.int64), small_height - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * small_width / width).astype(np.int64), small_width - 1)
    boxes, crops = [], []
    found = label_boxes(labels, ids) if known is None else known
    for region, (x0, y0, x1, y1) in zip(ids.tolist(), found.tolist(), strict=True):
        top, bottom = np.searchsorted(rows, (y0, y1))
        left, right = np.searchsorted(cols, (x0, x1))
        crops.append(labels[y0:y1, x0:x1][rows[top:bottom] - y0][:, cols[left:right] - x0] == region)
        boxes.append((left, top, right, bottom))
    return InstanceMasks.from_crops(height, width, np.array(boxes, np.int64).reshape(-1, 4), crops)


def label_boxes(labels: Labels, ids: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Tight xyxy boxes (x2/y2 exclusive) of the regions `ids` of a label map, in one pass over it."""
    height, width = labels.shape
    count = int(labels.max(initial=0)) + 1
    rows = np.zeros((count, height), bool)
    cols = np.zeros((count, width), bool)
    rows[labels, np.arange(height)[:, None]] = True
    cols[labels, np.arange(width)[None, :]] = True
    rows, cols = rows[ids], cols[ids]
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom, right = height - rows[:, ::-1].argmax(axis=1), width - cols[:, ::-1].argmax(axis=1)
    return np.stack([left, top, right, bottom], axis=1).astype(np.int64).reshape(-1, 4)


def solidity(masks: InstanceMasks) -> npt.NDArray[np.float32]:
    """Each mask's area over its convex hull's area: 1 for convex shapes, lower for ragged, hollow or branching ones."""
    scores = np.ones(len(masks), np.float32)
    for i, crop in enumerate(masks.crops):
        if not crop.size:
            continue
        contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.convexHull(np.concatenate(contours))
        hull_area = np.count_nonzero(cv2.fillConvexPoly(np.zeros(crop.shape, np.uint8), hull, 1))
        scores[i] = min(1.0, np.count_nonzero(crop) / hull_area)
    return scores
