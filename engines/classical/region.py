"""`region`: watershed region growing from distance-transform markers, so touching objects come out separate."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.classical._common import FrameEngine, RegionMapParams, between, odd_or_zero
from seg_video.engines.classical._regions import Grey, Polarity, components, grey, grey_classes, segmentation

CLASSES = ClassTable(("object",))
NEIGHBOURS = np.ones((3, 3), np.uint8)


@dataclass
class RegionParams(RegionMapParams):
    """Foreground polarity, smoothing, and how deep inside an object its marker sits."""

    polarity: Polarity = "auto"
    blur: int = 5
    """Gaussian kernel size applied to the grey image first (odd; 0: none)."""
    peak_fraction: float = 0.5
    """A marker is where the distance to the background exceeds this fraction of its blob's largest distance;
    higher splits more (a neck between two objects must be thinner than this fraction of their width)."""

    def validate(self) -> None:
        """Check the blur size and the peak fraction."""
        super().validate()
        odd_or_zero("blur", self.blur)
        between("peak_fraction", self.peak_fraction, 0.01, 0.99)


class RegionEngine(FrameEngine):
    """Otsu foreground split among distance-transform peaks by `cv2.watershed`; score: solidity of each region."""

    name = "region"
    summary = "watershed region growing from distance-transform markers; splits touching objects"
    Params = RegionParams

    def __init__(self, params: RegionParams) -> None:
        self.params = params

    @property
    def classes(self) -> ClassTable:
        """One class, "object"."""
        return CLASSES

    def prepare(self, frame: Frame) -> Grey:
        """The blurred grey image (stateless, so it runs ahead in the preprocess thread)."""
        return grey(frame.image, self.params.blur)

    def segment(self, frame: Frame, prepared: Grey) -> Segmentation:
        """Foreground → markers at each blob's distance peaks → watershed on the colour image → regions in it."""
        levels, background = grey_classes(prepared, 2, self.params.polarity)
        inside = levels != background
        distance = cv2.distanceTransform(inside.view(np.uint8), cv2.DIST_L2, 5)
        blobs, _ = components(inside)
        peaks = np.zeros(blobs.max() + 1, np.float32)  # each blob's largest distance to the background
        np.maximum.at(peaks, blobs[inside], distance[inside])
        cores, level_of = components(distance > self.params.peak_fraction * peaks[blobs])
        markers = np.where(cores > 0, cores + 1, 0)
        markers[cv2.dilate(inside.view(np.uint8), NEIGHBOURS) == 0] = 1  # sure background; the ring is flooded
        cv2.watershed(frame.image, markers)
        labels = np.where(inside & (markers > 1), markers - 1, 0)
        return segmentation(labels, frame.size, CLASSES, np.zeros_like(level_of),
                            min_area=self.params.min_area, max_instances=self.params.max_instances,
                            regions=self.params.region_cap())
