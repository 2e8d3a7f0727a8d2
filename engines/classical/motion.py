"""`motion`: background subtraction (MOG2 / KNN) at reduced resolution, one instance per moving object.

The real-time CPU engine for fixed cameras: the background model learns from the frames it sees, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.classical._common import MAX_KERNEL, FrameEngine, InstanceParams, at_least, between
from seg_video.engines.classical._regions import components, ellipse, segmentation, shrink

CLASSES = ClassTable(("moving",))
MOVING = 255
"""What the subtractors mark as foreground (shadows are 127)."""


@dataclass
class MotionParams(InstanceParams):
    """Background model, working resolution and mask clean-up."""

    method: Literal["mog2", "knn"] = "mog2"
    history: int = 500
    """Frames the background model remembers."""
    var_threshold: float = 16.0
    """mog2: squared Mahalanobis distance beyond which a pixel is not background."""
    dist_threshold: float = 400.0
    """knn: squared colour distance beyond which a pixel is not background."""
    detect_shadows: bool = True
    """Tell shadows from objects (and drop them) at some cost."""
    learning_rate: float = -1.0
    """How fast the background adapts, 0..1; -1: fast during warm-up (OpenCV's 1 / (2 x frames seen)), then
    1 / history, so objects that pause for a few frames are not taken into the background."""
    scale: float = 0.5
    """Model a copy of the frame resized by this factor; masks are upscaled (nearest) to frame size."""
    kernel: int = 3
    """Size (working pixels) of the elliptic kernel that opens away specks and closes holes."""
    warmup: int = 15
    """Frames the model only learns from before it reports anything."""

    def validate(self) -> None:
        """Check the model settings, scale, kernel and warm-up."""
        super().validate()
        at_least("history", self.history, 1)
        at_least("var_threshold", self.var_threshold, 0)
        at_least("dist_threshold", self.dist_threshold, 0)
        if self.learning_rate != -1 and not 0 <= self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be -1 (automatic) or between 0 and 1; got {self.learning_rate}")
        between("scale", self.scale, 0.01, 1.0)
        between("kernel", self.kernel, 1, MAX_KERNEL)
        at_least("warmup", self.warmup, 0)


class MotionEngine(FrameEngine):
    """Moving objects against a learnt background; score: the fraction of each region's pixels that the model itself
    marked as moving (clean-up fills holes and bridges gaps, so ragged or hollow detections score lower)."""

    name = "motion"
    summary = "background subtraction (MOG2/KNN), one instance per moving object; real-time surveillance"
    Params = MotionParams

    def __init__(self, params: MotionParams) -> None:
        self.params = params
        self._kernel = ellipse(params.kernel)
        self.reset()

    def reset(self) -> None:
        """A fresh background model: the next frame is the first of a new video."""
        params = self.params
        self._model = (
            cv2.createBackgroundSubtractorMOG2(params.history, params.var_threshold, params.detect_shadows)
            if params.method == "mog2"
            else cv2.createBackgroundSubtractorKNN(params.history, params.dist_threshold, params.detect_shadows)
        )
        self._seen = 0

    @property
    def classes(self) -> ClassTable:
        """One class, "moving"."""
        return CLASSES

    def prepare(self, frame: Frame) -> npt.NDArray[np.uint8]:
        """The frame at working resolution (stateless, so it runs ahead in the preprocess thread)."""
        return shrink(frame.image, self.params.scale)

    def segment(self, frame: Frame, prepared: npt.NDArray[np.uint8]) -> Segmentation:
        """Update the model with the frame; after warm-up, its cleaned moving regions as instances."""
        params = self.params
        warming_up = self._seen < params.warmup
        self._seen += 1
        rate = params.learning_rate if params.learning_rate >= 0 else -1.0 if warming_up else 1 / params.history
        raw = self._model.apply(prepared, learningRate=rate)
        if warming_up:
            return Segmentation.empty(*frame.size, CLASSES)
        moving = raw == MOVING
        opened = cv2.morphologyEx(moving.view(np.uint8), cv2.MORPH_OPEN, self._kernel)
        labels, level_of = components(cv2.morphologyEx(opened, cv2.MORPH_CLOSE, self._kernel))
        marked = np.bincount(labels[moving], minlength=len(level_of))
        scores = marked / np.maximum(np.bincount(labels.ravel(), minlength=len(level_of)), 1)
        return segmentation(labels, frame.size, CLASSES, np.zeros_like(level_of), min_area=params.min_area,
                            max_instances=params.max_instances, score_of=scores, scored=False)
