"""Privacy masking: the pixels of chosen classes (instance masks and label-map regions) made unrecognisable in the
frame itself, before anything draws, writes, shows or streams it.

Each object's pixels are replaced by values made from a coarse copy of the region around it (blocks of `strength`
× the object's size, never under `MIN_BLOCK` pixels), so nothing finer than a block survives: `pixelate` shows the
blocks, `blur` smooths them, `fill` paints the region's mean colour. The replacement follows the mask's outline,
grown by `dilate` pixels, and the work is done per object within its grown box: its cost grows with the objects'
area, not the frame's.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, Segmentation

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]
"""xyxy in frame pixels, x2/y2 exclusive."""

BlurStyle = Literal["blur", "pixelate", "fill"]
BLUR_STYLES: tuple[BlurStyle, ...] = ("blur", "pixelate", "fill")

MIN_BLOCK = 6
"""Smallest block side in pixels, so that even a small, far-away object keeps no detail finer than this."""
MAX_DILATE = 64


@dataclass(frozen=True)
class PrivacySettings:
    """What to mask and how; `--blur CLASSES`, `--blur-style` map onto it."""

    classes: tuple[str, ...]
    """Class names whose instances (and label-map pixels) are masked, e.g. `("person",)`."""
    style: BlurStyle = "blur"
    dilate: int = 4
    """Pixels the masks are grown by, so that the outline's fringe (hair, a mask a little too tight) is masked too."""
    strength: float = 0.1
    """Block side (pixelate) or blur cell (blur) as a fraction of the object's longer side, at least `MIN_BLOCK`."""

    def validate(self) -> None:
        """Reject settings that would mask nothing or could not mask."""
        if not self.classes or not all(self.classes):
            raise ValueError("name at least one class to mask, e.g. person")
        if self.style not in BLUR_STYLES:
            raise ValueError(f"blur style must be one of {', '.join(BLUR_STYLES)}; got {self.style!r}")
        if not 0 <= self.dilate <= MAX_DILATE:
            raise ValueError(f"dilate must be 0..{MAX_DILATE} pixels; got {self.dilate}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1]; got {self.strength}")


class Privacy:
    """Masks the chosen classes in frames, in place; holds no per-frame state (safe to share between threads)."""

    def __init__(self, settings: PrivacySettings) -> None:
        settings.validate()
        self.settings = settings
        size = 2 * settings.dilate + 1
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))

    def apply(self, image: Image, segmentation: Segmentation) -> None:
        """Replace, in `image` itself, every pixel inside the (dilated) masks of the chosen classes' instances and
        label-map regions; an instance without a mask is masked over its whole box. Raises `ValueError` for an image
        that is not the segmentation's writable BGR frame, or a class the segmentation's engine does not know."""
        seg = segmentation
        if image.dtype != np.uint8 or image.shape != (seg.height, seg.width, 3):
            raise ValueError(f"image is {image.dtype} {image.shape}; the segmentation needs uint8 "
                             f"{(seg.height, seg.width, 3)}")
        if not image.flags.writeable:
            raise ValueError("privacy masking needs a writable image")
        wanted = class_ids_of(seg.classes, self.settings.classes)
        for box, mask in itertools.chain(self._instances(seg, wanted), self._label_regions(seg, wanted)):
            self._hide(image, box, mask)

    def _instances(self, seg: Segmentation, wanted: tuple[int, ...]) -> Iterator[tuple[Box, Image]]:
        """Each chosen instance's grown box and its dilated mask over that box (uint8 0/1)."""
        grow = self.settings.dilate
        for i in np.flatnonzero(np.isin(seg.class_ids, wanted)).tolist():
            if seg.masks is not None and seg.masks.crops[i].size:
                box = _grown(seg.masks.boxes[i].tolist(), grow, seg.height, seg.width)
                mask = seg.masks.window(i, *box).view(np.uint8)
                yield box, cast(Image, cv2.dilate(mask, self._kernel)) if grow else mask
            else:
                x1, y1 = (math.floor(v) for v in seg.boxes[i, :2].tolist())
                x2, y2 = (math.ceil(v) for v in seg.boxes[i, 2:].tolist())
                box = _grown((x1, y1, x2, y2), grow, seg.height, seg.width)
                if x1 < x2 and y1 < y2 and box[0] < box[2] and box[1] < box[3]:
                    yield box, np.ones((box[3] - box[1], box[2] - box[0]), np.uint8)

    def _label_regions(self, seg: Segmentation, wanted: tuple[int, ...]) -> Iterator[tuple[Box, Image]]:
        """Each connected region of the chosen classes' (dilated) label-map pixels: its box and mask (uint8 0/1)."""
        if seg.label_map is None:
            return
        chosen = np.isin(seg.label_map, wanted).view(np.uint8)
        if not chosen.any():
            return
        if self.settings.dilate:
            chosen = cast(Image, cv2.dilate(chosen, self._kernel))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(chosen, connectivity=8)
        for k in range(1, count):
            x, y, width, height = stats[k, :4].tolist()
            yield (x, y, x + width, y + height), (labels[y:y + height, x:x + width] == k).view(np.uint8)

    def _hide(self, image: Image, box: Box, mask: Image) -> None:
        """Replace the pixels of `image` under `mask` (over `box`) as the style says."""
        x1, y1, x2, y2 = box
        patch = image[y1:y2, x1:x2]
        height, width = mask.shape
        if self.settings.style == "fill":
            hidden = np.empty_like(patch)
            hidden[:] = np.round(cv2.mean(patch, mask)[:3]).astype(np.uint8)
        else:
            block = max(MIN_BLOCK, round(self.settings.strength * max(height, width)))
            coarse = cv2.resize(patch, (math.ceil(width / block), math.ceil(height / block)),
                                interpolation=cv2.INTER_AREA)
            if self.settings.style == "pixelate":
                hidden = cast(Image, cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST))
            else:
                coarse = cv2.GaussianBlur(coarse, (3, 3), 0)
                hidden = cast(Image, cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR))
        cv2.copyTo(hidden, mask, patch)


@functools.lru_cache(maxsize=64)
def class_ids_of(classes: ClassTable, names: tuple[str, ...]) -> tuple[int, ...]:
    """The ids of the named classes in `classes`; raises `ValueError` naming the first one it does not know."""
    try:
        return tuple(classes.ids_of(list(names)))
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def _grown(box: list[int] | tuple[int, int, int, int], grow: int, height: int, width: int) -> Box:
    """`box` grown by `grow` pixels on every side, within the frame."""
    x1, y1, x2, y2 = box
    return max(0, x1 - grow), max(0, y1 - grow), min(width, x2 + grow), min(height, y2 + grow)
