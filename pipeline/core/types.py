"""The values that flow through the pipeline: captured frames, their segmentations, and the per-frame record the
stages hand each other.

Colour order: every `Frame.image` in seg-video is **BGR**, H×W×3 uint8 (OpenCV's order), from capture to sink.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

MILLISECONDS = Fraction(1, 1000)
"""Time base of frames stamped with their capture time (live sources, recordings): milliseconds of the capture clock."""


class SegmentationError(ValueError):
    """A `Segmentation` was built from arrays whose shapes or types disagree."""


@dataclass(frozen=True)
class ClassTable:
    """Names of the classes an engine predicts, indexed by class id (a `None` slot is an unused id)."""

    names: tuple[str | None, ...]

    def name(self, class_id: int) -> str:
        """The class's name, or `class N` for an id the table does not name."""
        if 0 <= class_id < len(self.names) and self.names[class_id] is not None:
            return str(self.names[class_id])
        return f"class {class_id}"

    def ids_of(self, wanted: list[str]) -> list[int]:
        """Class ids for the given names; raises `KeyError` naming the first unknown one."""
        index = {name: i for i, name in enumerate(self.names) if name is not None}
        missing = [name for name in wanted if name not in index]
        if missing:
            raise KeyError(f"unknown class {missing[0]!r}; known: {', '.join(index)}")
        return [index[name] for name in wanted]


@dataclass
class Frame:
    """One decoded picture with its timing; `image` is BGR H×W×3 uint8."""

    index: int
    image: npt.NDArray[np.uint8]
    pts: int | None = None
    time_base: Fraction | None = None
    source_id: str = "0"
    captured_at: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float | None:
        """Presentation time in seconds, when the source gave one."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class Segmentation:
    """What an engine found in one frame, in that frame's pixel coordinates.

    Instances are parallel arrays (n = number of instances): `boxes` (n,4) float32 xyxy, `scores` (n,) float32,
    `class_ids` (n,) int64, `masks` (n,H,W) bool or None, `track_ids` (n,) int64 or None. Semantic engines set
    `label_map` (H,W) integer class ids. `classes` names the ids both refer to.
    """

    height: int
    width: int
    classes: ClassTable
    boxes: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0,), np.int64))
    masks: npt.NDArray[np.bool_] | None = None
    track_ids: npt.NDArray[np.int64] | None = None
    label_map: npt.NDArray[np.integer] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4) if np.size(self.boxes) else np.zeros(
            (0, 4), np.float32
        )
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise SegmentationError(
                f"instance arrays disagree: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"class_ids {self.class_ids.shape}"
            )
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.shape != (n, self.height, self.width):
                raise SegmentationError(
                    f"masks have shape {self.masks.shape}, expected {(n, self.height, self.width)}"
                )
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if len(self.track_ids) != n:
                raise SegmentationError(f"track_ids have {len(self.track_ids)} entries for {n} instances")
        if self.label_map is not None and self.label_map.shape != (self.height, self.width):
            raise SegmentationError(
                f"label_map has shape {self.label_map.shape}, expected {(self.height, self.width)}"
            )

    @classmethod
    def empty(cls, height: int, width: int, classes: ClassTable) -> Segmentation:
        """A segmentation with no instances and no label map."""
        return cls(height=height, width=width, classes=classes, masks=np.zeros((0, height, width), bool))

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.integer]) -> Segmentation:
        """The instances picked by a boolean mask or index array; the label map is kept as it is."""
        return Segmentation(
            height=self.height,
            width=self.width,
            classes=self.classes,
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            class_ids=self.class_ids[keep],
            masks=None if self.masks is None else self.masks[keep],
            track_ids=None if self.track_ids is None else self.track_ids[keep],
            label_map=self.label_map,
        )


def boxes_from_masks(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """Tight xyxy boxes (x2/y2 exclusive) around each of the (n,H,W) masks; an empty mask gets a zero box."""
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    rows = np.asarray(masks.any(axis=2))
    cols = np.asarray(masks.any(axis=1))
    for i in range(n):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


@dataclass
class Item:
    """One frame's record on its way through the stages: each stage fills in its part and passes the record on.

    `prepared` is the engine's input made by the preprocess stage (released once inference has used it),
    `segmentation` what inference (then tracking) found, `rendered` the annotated picture (BGR, the frame's size),
    `timings` the seconds each stage spent on this frame (its share of a batch).
    """

    frame: Frame
    prepared: Any = None
    segmentation: Segmentation | None = None
    rendered: npt.NDArray[np.uint8] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """The frame's index, for messages naming where a stage failed."""
        return self.frame.index

    def result(self) -> Segmentation:
        """The segmentation, once inference has set it (a stage asking earlier is a programming error)."""
        if self.segmentation is None:
            raise RuntimeError(f"frame {self.index} has no segmentation yet")
        return self.segmentation

    def output_frame(self) -> Frame:
        """The frame with its annotated picture in place of the captured one (the captured one without a renderer)."""
        image = self.frame.image if self.rendered is None else self.rendered
        return Frame(index=self.frame.index, image=image, pts=self.frame.pts, time_base=self.frame.time_base,
                     source_id=self.frame.source_id, captured_at=self.frame.captured_at)
