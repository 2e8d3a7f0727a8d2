"""The values that flow through the pipeline: captured frames, their segmentations, the per-frame record the
stages hand each other, and the events the watch stage reports (their JSON form is the contract every event sink
and the clips on events share).

Colour order: every `Frame.image` in seg-video is **BGR**, H×W×3 uint8 (OpenCV's order), from capture to sink.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any, Literal

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


class InstanceMasks:
    """Instance masks, each cropped to its tight box: memory and work grow with the objects' area, not with the number
    of instances times the frame's area (a 720p frame with 30 people would otherwise carry 28 MB of masks).

    `boxes` (n,4) int64 xyxy in frame pixels, x2/y2 exclusive, within the `height`×`width` frame; `crops[i]` is
    instance i's bool mask over its box, shape (y2-y1, x2-x1), with a set pixel on each edge (an empty mask has a
    0×0 box). Build with `from_crops` (which trims) or `from_full`; `full()` gives the (n,H,W) masks back exactly.
    """

    def __init__(self, height: int, width: int, boxes: npt.NDArray[np.integer],
                 crops: Sequence[npt.NDArray[np.bool_]]) -> None:
        self.height, self.width = height, width
        self.boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
        self.crops = tuple(crops)
        if len(self.crops) != len(self.boxes):
            raise SegmentationError(f"{len(self.crops)} mask crops for {len(self.boxes)} boxes")
        for (x1, y1, x2, y2), crop in zip(self.boxes.tolist(), self.crops, strict=True):
            if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height) or crop.shape != (y2 - y1, x2 - x1):
                raise SegmentationError(f"a mask crop of shape {crop.shape} does not fit its box "
                                        f"{(x1, y1, x2, y2)} in a {width}x{height} frame")

    @classmethod
    def from_crops(cls, height: int, width: int, boxes: npt.NDArray[np.integer],
                   crops: Sequence[npt.NDArray[np.bool_]]) -> InstanceMasks:
        """Masks given as crops over (possibly loose) boxes within the frame, each trimmed to its tight box."""
        tight_boxes, tight = [], []
        for (x1, y1, x2, y2), crop in zip(np.asarray(boxes, np.int64).reshape(-1, 4).tolist(), crops, strict=True):
            crop = np.asarray(crop, bool)
            if crop.shape != (y2 - y1, x2 - x1):
                raise SegmentationError(f"a mask crop of shape {crop.shape} does not fit its box {(x1, y1, x2, y2)}")
            rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
            if len(rows) == 0:
                tight_boxes.append((0, 0, 0, 0))
                tight.append(np.zeros((0, 0), bool))
                continue
            top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            tight_boxes.append((x1 + left, y1 + top, x1 + right, y1 + bottom))
            tight.append(crop[top:bottom, left:right])
        return cls(height, width, np.array(tight_boxes, np.int64).reshape(-1, 4), tight)

    @classmethod
    def from_full(cls, masks: npt.NDArray[np.bool_]) -> InstanceMasks:
        """Full-frame (n,H,W) masks, cropped."""
        masks = np.asarray(masks, bool)
        boxes = boxes_from_masks(masks).astype(np.int64)
        crops = [mask[y1:y2, x1:x2] for mask, (x1, y1, x2, y2) in zip(masks, boxes.tolist(), strict=True)]
        return cls(masks.shape[1], masks.shape[2], boxes, crops)

    @classmethod
    def empty(cls, height: int, width: int) -> InstanceMasks:
        """No masks."""
        return cls(height, width, np.zeros((0, 4), np.int64), ())

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.integer] | Sequence[int]) -> InstanceMasks:
        """The masks picked by a boolean mask or an index array."""
        picked = np.arange(len(self))[np.asarray(keep)]
        return InstanceMasks(self.height, self.width, self.boxes[picked], [self.crops[i] for i in picked])

    def areas(self) -> npt.NDArray[np.int64]:
        """Each mask's pixel count."""
        return np.array([np.count_nonzero(crop) for crop in self.crops], np.int64)

    def window(self, index: int, x1: int, y1: int, x2: int, y2: int) -> npt.NDArray[np.bool_]:
        """Mask `index` over the rectangle x1..x2, y1..y2 of the frame (False where the mask is not)."""
        out = np.zeros((max(0, y2 - y1), max(0, x2 - x1)), bool)
        bx1, by1, bx2, by2 = self.boxes[index].tolist()
        left, top, right, bottom = max(x1, bx1), max(y1, by1), min(x2, bx2), min(y2, by2)
        if left < right and top < bottom:
            out[top - y1:bottom - y1, left - x1:right - x1] = self.crops[index][top - by1:bottom - by1,
                                                                                left - bx1:right - bx1]
        return out

    def full(self) -> npt.NDArray[np.bool_]:
        """The (n,H,W) full-frame masks (for whoever needs them; costs n × frame area)."""
        out = np.zeros((len(self), self.height, self.width), bool)
        for i, ((x1, y1, x2, y2), crop) in enumerate(zip(self.boxes.tolist(), self.crops, strict=True)):
            out[i, y1:y2, x1:x2] = crop
        return out


@dataclass
class Segmentation:
    """What an engine found in one frame, in that frame's pixel coordinates.

    Instances are parallel arrays (n = number of instances): `boxes` (n,4) float32 xyxy, `scores` (n,) float32,
    `class_ids` (n,) int64, `masks` (`InstanceMasks`: each cropped to its tight box; `full_masks()` gives (n,H,W))
    or None, `track_ids` (n,) int64 or None. Semantic engines set `label_map` (H,W) integer class ids. `classes`
    names the ids both refer to. `masks` may be given as full (n,H,W) masks: they are cropped. `regions`: the
    instances are the regions of a region map (classical region engines), drawn as such and not tracked; `scored`
    False: the scores are no confidences (background subtraction), and labels leave them out.
    """

    height: int
    width: int
    classes: ClassTable
    boxes: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0,), np.int64))
    masks: InstanceMasks | None = None
    track_ids: npt.NDArray[np.int64] | None = None
    label_map: npt.NDArray[np.integer] | None = None
    regions: bool = False
    scored: bool = True

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
        if self.masks is not None and not isinstance(self.masks, InstanceMasks):
            full = np.asarray(self.masks, dtype=bool)
            if full.shape != (n, self.height, self.width):
                raise SegmentationError(f"masks have shape {full.shape}, expected {(n, self.height, self.width)}")
            self.masks = InstanceMasks.from_full(full)
        if self.masks is not None and (len(self.masks), self.masks.height, self.masks.width) != (
                n, self.height, self.width):
            raise SegmentationError(f"{len(self.masks)} masks of a {self.masks.width}x{self.masks.height} frame for "
                                    f"{n} instances of a {self.width}x{self.height} one")
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
        return cls(height=height, width=width, classes=classes, masks=InstanceMasks.empty(height, width))

    def __len__(self) -> int:
        return len(self.boxes)

    def full_masks(self) -> npt.NDArray[np.bool_] | None:
        """The instance masks as (n,H,W) full-frame arrays (n × frame area: for whoever needs them), or None."""
        return None if self.masks is None else self.masks.full()

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
            regions=self.regions,
            scored=self.scored,
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
    `observed` what an engine that finishes its work in a stage of its own observed (see `Engine.finish`),
    `segmentation` what inference (then tracking) found, `rendered` the annotated picture (BGR, the frame's size),
    `events` what the watch stage saw happen in the frame (lines crossed, zones entered, left, filled),
    `timings` the seconds each stage spent on this frame (its share of a batch).
    """

    frame: Frame
    prepared: Any = None
    observed: Any = None
    segmentation: Segmentation | None = None
    rendered: npt.NDArray[np.uint8] | None = None
    events: list[Event] = field(default_factory=list)
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

EventType = Literal["line_cross", "zone_enter", "zone_exit", "zone_occupancy"]
EVENT_TYPES: tuple[EventType, ...] = ("line_cross", "zone_enter", "zone_exit", "zone_occupancy")
Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Event:
    """One event in a source's timeline. `time` is the frame's time in seconds (its pts), `source` the source's
    name; `line` and `direction` are set for `line_cross`, `zone` for the zone events, `track_id` and `class_name`
    for the events of one tracked instance, `occupancy` (0..1, the zone's area covered by masks) and `count`
    (tracked instances inside) for `zone_occupancy`."""

    type: EventType
    frame: int
    time: float
    source: str
    track_id: int | None = None
    class_name: str | None = None
    line: str | None = None
    direction: Direction | None = None
    zone: str | None = None
    occupancy: float | None = None
    count: int | None = None

    @property
    def name(self) -> str:
        """The line's or zone's name."""
        return self.line or self.zone or ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the contract: the fields that are set, `class_name` as `class`, time in seconds
        rounded to milliseconds and occupancy to 0.1 %."""
        data: dict[str, Any] = {}
        for member in fields(self):
            value = getattr(self, member.name)
            if value is None:
                continue
            if member.name in ("time", "occupancy"):
                value = round(value, 3)
            data["class" if member.name == "class_name" else member.name] = value
        return data
