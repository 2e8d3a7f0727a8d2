"""`edges`: Canny / Sobel / Laplacian edges, closed and filled into regions; each connected region an instance.

Edges are taken on the colour image (the strongest channel wins), so objects that differ from their surroundings in
hue but not in brightness still have outlines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.classical._common import MAX_KERNEL, FrameEngine, RegionMapParams, at_least, between, odd_or_zero
from seg_video.engines.classical._regions import components, ellipse, segmentation, smooth

CLASSES = ClassTable(("region",))


@dataclass
class EdgesParams(RegionMapParams):
    """Which edge detector, its thresholds, and how hard to close gaps in the outlines."""

    operator: Literal["canny", "sobel", "laplacian"] = "canny"
    blur: int = 5
    """Gaussian kernel size applied to the image first (odd; 0: none)."""
    low: float = 50.0
    """canny: lower hysteresis threshold on the gradient."""
    high: float = 150.0
    """canny: upper hysteresis threshold; edges start where the gradient exceeds it."""
    magnitude: float = 20.0
    """sobel, laplacian: edge where the response in some colour channel exceeds this many levels per pixel."""
    close_kernel: int = 5
    """Size of the elliptic kernel that closes gaps in outlines and then drops unclosed edge fragments."""

    def validate(self) -> None:
        """Check thresholds and kernel sizes."""
        super().validate()
        odd_or_zero("blur", self.blur)
        at_least("low", self.low, 0)
        at_least("high", self.high, self.low)
        at_least("magnitude", self.magnitude, 0)
        between("close_kernel", self.close_kernel, 1, MAX_KERNEL)


class EdgesEngine(FrameEngine):
    """Regions enclosed by edges; score: solidity (area / convex-hull area) of each region."""

    name = "edges"
    summary = "Sobel / Laplacian / Canny edges closed into filled regions"
    Params = EdgesParams

    def __init__(self, params: EdgesParams) -> None:
        self.params = params
        self._kernel = ellipse(params.close_kernel)

    @property
    def classes(self) -> ClassTable:
        """One class, "region"."""
        return CLASSES

    def prepare(self, frame: Frame) -> npt.NDArray[np.uint8]:
        """The blurred colour image (stateless, so it runs ahead in the preprocess thread)."""
        return smooth(frame.image, self.params.blur)

    def segment(self, frame: Frame, prepared: npt.NDArray[np.uint8]) -> Segmentation:
        """Edges → closed outlines → filled outer contours → opened (drops lone edges) → connected regions."""
        closed = cv2.morphologyEx(self._edges(prepared), cv2.MORPH_CLOSE, self._kernel)
        contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = cv2.drawContours(np.zeros_like(closed), contours, -1, 1, thickness=cv2.FILLED)
        labels, level_of = components(filled, opening=self._kernel)
        return segmentation(labels, frame.size, CLASSES, np.zeros_like(level_of),
                            min_area=self.params.min_area, max_instances=self.params.max_instances,
                            regions=self.params.region_cap())

    def _edges(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Binary edge map (0/1 or 0/255) of a BGR image from the chosen operator, per pixel its strongest channel."""
        params = self.params
        if params.operator == "canny":  # OpenCV's Canny takes the channel with the largest gradient itself
            return cast(npt.NDArray[np.uint8], cv2.Canny(image, params.low, params.high))
        if params.operator == "sobel":  # scale 1/8: a 3x3 Sobel response in levels per pixel
            response = cv2.magnitude(cv2.Sobel(image, cv2.CV_32F, 1, 0, scale=0.125),
                                     cv2.Sobel(image, cv2.CV_32F, 0, 1, scale=0.125))
        else:
            response = np.abs(cv2.Laplacian(image, cv2.CV_32F, ksize=1))
        return (response.max(axis=2) > params.magnitude).view(np.uint8)
