"""What every classical engine shares: the instance-count settings, their range checks and the per-frame loop."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from seg_video.core.types import Frame, Segmentation
from seg_video.engines.base import Engine


def at_least(name: str, value: float, low: float) -> None:
    """Raise `ValueError` naming the setting when `value` is below `low`."""
    if value < low:
        raise ValueError(f"{name} must be at least {low}; got {value}")


def between(name: str, value: float, low: float, high: float) -> None:
    """Raise `ValueError` naming the setting when `value` is outside [low, high]."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}; got {value}")


MAX_KERNEL = 255
"""The largest kernel (blur, morphology, block) size a setting takes: far above any useful one, and small enough
that a typo cannot make OpenCV allocate a giant kernel or run for minutes per frame."""


def odd_or_zero(name: str, value: int) -> None:
    """Raise `ValueError` unless `value` is 0 (off) or an odd kernel size up to MAX_KERNEL; OpenCV's blurs need odd
    sizes."""
    if value != 0 and (value < 1 or value % 2 == 0 or value > MAX_KERNEL):
        raise ValueError(f"{name} must be 0 (off) or an odd size up to {MAX_KERNEL}; got {value}")


@dataclass
class InstanceParams:
    """Settings that bound the instances every classical engine reports."""

    min_area: int = 64
    """Drop regions smaller than this many frame pixels."""
    max_instances: int = 50
    """Keep at most this many regions, the largest first."""

    def validate(self) -> None:
        """Check the bounds; subclasses add their own checks."""
        at_least("min_area", self.min_area, 1)
        at_least("max_instances", self.max_instances, 1)


@dataclass
class RegionMapParams(InstanceParams):
    """Settings of the engines that split the picture into regions (threshold, edges, kmeans, region)."""

    output: Literal["regions", "instances"] = "regions"
    """regions: a region map, as the textbook pictures of these methods (coloured regions with outlines; no boxes,
    labels or tracking), the smaller regions merged into their neighbours; instances: every region an instance
    with its box, label and track id."""
    regions: int = 12
    """regions: at most this many, the largest (each smaller one merged into the nearest of them)."""

    def validate(self) -> None:
        """Also check the region cap."""
        super().validate()
        between("regions", self.regions, 1, 255)

    def region_cap(self) -> int | None:
        """The most regions of a region map, or None when each region is an instance."""
        return self.regions if self.output == "regions" else None


class FrameEngine(Engine):
    """An instance engine that segments each frame on its own, in order (state, if any, lives on the engine)."""

    kind: ClassVar[Literal["instance", "semantic"]] = "instance"

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        """One `segment` call per frame, in the order given."""
        return [self.segment(frame, ready) for frame, ready in zip(frames, prepared, strict=True)]

    @abstractmethod
    def segment(self, frame: Frame, prepared: Any) -> Segmentation:
        """Segment one frame, given what `prepare` made of it."""
