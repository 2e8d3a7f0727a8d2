"""`threshold`: grey-level thresholding (Otsu, adaptive mean, multi-level Otsu); each connected region an instance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.classical._common import MAX_KERNEL, FrameEngine, RegionMapParams, at_least, between, odd_or_zero
from seg_video.engines.classical._regions import (
    Grey,
    Labels,
    Polarity,
    components,
    ellipse,
    grey,
    grey_classes,
    segmentation,
)


@dataclass
class ThresholdParams(RegionMapParams):
    """How grey levels split into object and background."""

    method: Literal["otsu", "mean", "multi"] = "otsu"
    """otsu: one global threshold; mean: each pixel against its local mean; multi: `levels` Otsu classes."""
    polarity: Polarity = "auto"
    """Objects are brighter or darker than the background; auto: Otsu's side that covers less (for mean too)."""
    blur: int = 5
    """Gaussian kernel size applied to the grey image first (odd; 0: none)."""
    block_size: int = 51
    """mean: side of the local-mean window (odd); objects should be smaller than it."""
    offset: float = 5.0
    """mean: how many grey levels a pixel must lie above (bright objects) or below (dark) its local mean."""
    levels: int = 3
    """multi: number of grey classes, the background one included."""
    open_kernel: int = 3
    """Size of the opening applied to each object mask: drops specks and the thin bands that blurred edges
    leave between grey levels (0: none)."""

    def validate(self) -> None:
        """Check kernel sizes, the offset and the number of levels."""
        super().validate()
        odd_or_zero("blur", self.blur)
        at_least("block_size", self.block_size, 3)
        odd_or_zero("block_size", self.block_size)
        at_least("offset", self.offset, 0)
        between("levels", self.levels, 2, 8)
        between("open_kernel", self.open_kernel, 0, MAX_KERNEL)


class ThresholdEngine(FrameEngine):
    """Grey thresholding; score: solidity (area / convex-hull area) of each region."""

    name = "threshold"
    summary = "grey-level thresholding (Otsu, mean/adaptive, multi-level) into connected regions"
    Params = ThresholdParams

    def __init__(self, params: ThresholdParams) -> None:
        self.params = params
        names = [f"level {i}" for i in range(params.levels)] if params.method == "multi" else ["foreground"]
        self._classes = ClassTable(tuple(names))
        self._opening = ellipse(params.open_kernel) if params.open_kernel else None

    @property
    def classes(self) -> ClassTable:
        """("foreground",), or ("level 0", ...) for `multi`, level 0 the darkest."""
        return self._classes

    def prepare(self, frame: Frame) -> Grey:
        """The blurred grey image (stateless, so it runs ahead in the preprocess thread)."""
        return grey(frame.image, self.params.blur)

    def segment(self, frame: Frame, prepared: Grey) -> Segmentation:
        """Threshold, split into connected regions, keep those large enough."""
        params = self.params
        labels, level_of = self._regions(prepared)
        class_of = level_of if params.method == "multi" else np.zeros_like(level_of)
        return segmentation(labels, frame.size, self._classes, class_of,
                            min_area=params.min_area, max_instances=params.max_instances,
                            regions=params.region_cap())

    def _regions(self, image: Grey) -> tuple[Labels, npt.NDArray[np.int64]]:
        """Connected regions of the object classes, with each region's grey class."""
        params = self.params
        levels = params.levels if params.method == "multi" else 2
        classes, background = grey_classes(image, levels, params.polarity)
        if params.method != "mean":
            return components(classes, [level for level in range(levels) if level != background], self._opening)
        deviation = image.astype(np.int16) - cv2.blur(image, (params.block_size, params.block_size))
        objects = deviation > params.offset if background == 0 else deviation < -params.offset
        return components(objects, opening=self._opening)
