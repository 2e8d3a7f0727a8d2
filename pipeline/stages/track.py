"""Stable instance identities across frames: ByteTrack-style two-stage matching on mask (or box) IoU with motion.

Each track keeps its object's whole shape (box and mask) and velocity (pixels per frame, over its last few whole
views); in a later frame the shape is expected moved by velocity × frames elapsed (frames a live source dropped
count). A frame's instances are matched to the tracks in stages, each greedy (highest overlap first) and within a
class. As in ByteTrack (Zhang et al., 2022), instances scored at least `high_score` are matched first, then the
lower-scored ones, at a stricter IoU, to the tracks left: an object that scores low while partly hidden keeps its
track, and does not take another's. Tracks that saw their whole object in the previous frame choose first, so the
object in front keeps its id when two meet.

Where objects meet, an instance may show only part of its object, or two merged (background subtraction joins
touching objects); an object going behind something still (a pillar) or out of the frame shows less of itself (HIDDEN).
Such a view (SIZE_CHANGE) moves the track without changing its shape or velocity, and a track left unmatched beside an
instance is hidden behind or inside it, so is kept within it, and does not age. An instance still unmatched that lies
partly where an unmatched track is expected (with DRIFT for the frames it was lost) continues it (an object coming
out from behind another shows a sliver first); the others start new tracks, except those scored below `low_score`
(by default none: tracking keeps every instance the engine reports; ByteTrack drops every low-scored one). As in
ByteTrack, a new track gets its id (1, 2, …) only once its object has been matched in `confirm` frames in a row; until
then its instances carry id 0, and a flicker never gets one. A track whose object is nowhere to be seen for more than
`max_age` frames (by default `lost_seconds` at the video's frame rate) ends.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from seg_video.core.types import Segmentation

if TYPE_CHECKING:
    from seg_video.core.config import TrackSettings

Boxes = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float64]

VELOCITY_SPAN = 5
"""A track's velocity is its object's move over its last this many whole views, averaged per frame (a long span
evens out the jitter of masks)."""
SIZE_SMOOTHING = 0.2
"""Weight of the newest whole view's area in a track's running estimate of its object's size."""
SIZE_CHANGE = 0.1
"""A matched instance that touches another track's predicted place and whose area differs from its object's by
more than this fraction is taken as a partial view (the object partly hidden by the other) or a group view (merged
with it): the track keeps its object's shape and velocity, placed the least distance from the prediction that nests
the instance in it (or it in the instance). After `max_age` such views in a row the instance is taken as it is."""
HIDDEN = 0.2
"""A matched instance this much smaller than its object is a partial view even with no other object near: the
object is going behind something still (a pillar, a parked car) or out of the frame, and its track keeps its
whole shape and velocity through it, so that it finds the object where it comes out."""
COVERED_AGES = 5
"""A track whose object stays hidden inside other instances ends after this many times `max_age` all the same."""
DRIFT = 0.25
"""A lost object is looked for this fraction of its way since it was last seen around where it is expected."""
CONTACT = 0.1
"""Instances closer to another track's predicted box than this fraction of their size (plus 2 px) touch it."""
RECOVER_OVERLAP = 0.3
"""An instance left unmatched that lies at least this much (fraction of its area) where a track left
unmatched is expected continues that track: an object coming out from behind another shows a sliver first."""


@dataclass
class _Mask:
    """A mask cut to its tight box: where the box's top-left corner is (pixels, may be fractional), the cut-out and
    its pixel count."""

    x: float
    y: float
    pixels: npt.NDArray[np.bool_]
    area: int

    def moved(self, dx: float, dy: float) -> _Mask:
        """The same shape, (dx, dy) pixels away."""
        return _Mask(self.x + dx, self.y + dy, self.pixels, self.area)

    def intersection(self, other: _Mask, dx: float, dy: float) -> int:
        """Pixels this mask, moved by (dx, dy), shares with `other` (both placed on the pixel grid)."""
        x, y = round(self.x + dx), round(self.y + dy)
        ox, oy = round(other.x), round(other.y)
        h, w = self.pixels.shape
        oh, ow = other.pixels.shape
        left, top = max(x, ox), max(y, oy)
        right, bottom = min(x + w, ox + ow), min(y + h, oy + oh)
        if right <= left or bottom <= top:
            return 0
        mine = self.pixels[top - y:bottom - y, left - x:right - x]
        theirs = other.pixels[top - oy:bottom - oy, left - ox:right - ox]
        return int(np.count_nonzero(mine & theirs))


@dataclass
class _Track:
    """One object followed through the frames: its whole shape (box, mask) where it was in frame `at`."""

    id: int
    """Its id; 0 until confirmed."""
    class_id: int
    box: npt.NDArray[np.float64]
    mask: _Mask | None
    at: int
    size: float
    """The object's area (of its mask, or box), smoothed over its whole views."""
    seen: int = dataclasses.field(init=False)
    """Index of the frame the object was last matched in."""
    covered: int = dataclasses.field(init=False)
    """Index of the last frame it was matched in or hidden inside an instance: a track ages only while its object
    is nowhere to be seen (two walkers merged into one moving region for seconds keep both their tracks)."""
    views: deque[tuple[int, npt.NDArray[np.float64]]] = dataclasses.field(init=False)
    """(frame index, box) of the last whole views."""
    velocity: npt.NDArray[np.float64] = dataclasses.field(default_factory=lambda: np.zeros(2))
    held: int = 0
    """Partial or group views matched in a row."""
    hits: int = 0
    """Frames the object was matched in (its first view included): it gets its id at `confirm`."""

    def __post_init__(self) -> None:
        self.seen = self.covered = self.at
        self.views = deque([(self.at, self.box)], maxlen=VELOCITY_SPAN)

    def predicted(self, index: int) -> npt.NDArray[np.float64]:
        """Where the object's box is expected in frame `index`."""
        move = self.velocity * (index - self.at)
        return self.box + np.concatenate([move, move])

    def place(self, box: npt.NDArray[np.float64], index: int) -> None:
        """Move the object's shape to `box` (same size) in frame `index`."""
        dx, dy = box[:2] - self.box[:2]
        self.box, self.at = box, index
        self.mask = None if self.mask is None else self.mask.moved(dx, dy)

    def follow(self, box: npt.NDArray[np.float32], mask: _Mask | None, index: int, whole: bool) -> None:
        """Match the track to an instance in frame `index`: a whole view of its object, or a partial or group view
        (see SIZE_CHANGE)."""
        if whole:
            self.box, self.mask, self.at, self.held = box.astype(np.float64), mask, index, 0
            self.views.append((index, self.box))
            (first, before), (last, after) = self.views[0], self.views[-1]
            self.velocity = _edge_velocity(before, after, last - first, self.velocity)
            self.size += SIZE_SMOOTHING * (_size(box, mask) - self.size)
        else:
            self.place(_nest(self.predicted(index), box), index)
            self.held += 1
        self.seen = self.covered = index


class Tracker:
    """Gives each frame's instances track ids; feed it every frame of one source, in order."""

    def __init__(self, settings: TrackSettings) -> None:
        settings.validate()
        self.settings = settings
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last: int | None = None
        """Index of the frame seen last."""
        self._start: tuple[int, float] | None = None
        """(index, seconds) of the first timed frame: with a later one, the video's frame rate."""

    def update(self, seg: Segmentation, index: int, seconds: float | None = None) -> Segmentation:
        """`seg` (frame `index`) with track ids, less the instances below `low_score` that continue no track; a
        region map is left as it is (its regions are parts of the picture, not objects to follow)."""
        if seg.regions:
            return seg
        settings = self.settings
        max_age = self._max_age(index, seconds)
        self._tracks = [t for t in self._tracks
                        if index - t.covered <= max_age and index - t.seen <= COVERED_AGES * max_age]
        masks: list[_Mask | None] = [None] * len(seg)
        if settings.iou == "mask" and seg.masks is not None:  # the masks come cropped to their tight boxes
            masks = [_Mask(x1, y1, crop, int(np.count_nonzero(crop)))
                     for (x1, y1, _, _), crop in zip(seg.masks.boxes.tolist(), seg.masks.crops, strict=True)]
        predicted = self._predicted(index)
        same_class = np.array([t.class_id for t in self._tracks])[:, None] == seg.class_ids[None, :]
        shared = _box_intersection(predicted, seg.boxes) * same_class
        touching = _box_intersection(predicted, _grown(seg.boxes)) > 0
        iou = self._iou(shared, predicted, seg.boxes, masks)
        inside = _box_intersection(self._uncertain(predicted, index), seg.boxes) * same_class
        inside /= np.maximum(_box_area(seg.boxes), 1.0)[None, :]
        high = np.flatnonzero(seg.scores >= settings.high_score)
        low = np.flatnonzero(seg.scores < settings.high_score)
        every, every_instance = np.arange(len(self._tracks)), np.concatenate([high, low])
        steady = every[[t.held == 0 and t.seen == self._last for t in self._tracks]]
        matches = _extend([], iou, steady, high, settings.match_iou)
        matches = _extend(matches, iou, every, high, settings.match_iou)
        matches = _extend(matches, iou, every, low, settings.low_match_iou)
        matches = _extend(matches, inside, every, every_instance, RECOVER_OVERLAP)
        ids = np.full(len(seg), -1, np.int64)
        for t, d in matches:
            track = self._tracks[t]
            crowded = np.count_nonzero(touching[:, d]) > int(touching[t, d])  # it meets another track's object
            change = _size(seg.boxes[d], masks[d]) / max(track.size, 1.0) - 1
            partial = change < -HIDDEN or (crowded and abs(change) > SIZE_CHANGE)
            whole = not partial or track.held >= max_age
            track.follow(seg.boxes[d], masks[d], index, whole)
            ids[d] = self._confirmed(track)
        for d in [d for d in every_instance if ids[d] < 0 and seg.scores[d] >= settings.low_score]:
            track = _Track(0, int(seg.class_ids[d]), seg.boxes[d].astype(np.float64), masks[d], index,
                           _size(seg.boxes[d], masks[d]))
            self._tracks.append(track)
            ids[d] = self._confirmed(track)
        matched = np.zeros(len(every), bool)
        matched[[t for t, _ in matches]] = True
        unmatched = every[~matched]
        self._hide(unmatched, predicted, seg.boxes[ids >= 0], index)
        gone = {int(t) for t in unmatched if not self._tracks[t].id}  # a new object must be seen in a row
        self._tracks = [track for t, track in enumerate(self._tracks) if t not in gone]
        self._last = index
        keep = np.flatnonzero(ids >= 0)
        kept = seg if len(keep) == len(seg) else seg.select(keep)
        return dataclasses.replace(kept, track_ids=ids[keep])

    def _confirmed(self, track: _Track) -> int:
        """Count a match of `track`; its id, given once it has been seen `confirm` times (0 until then)."""
        track.hits += 1
        if not track.id and track.hits >= self.settings.confirm:
            track.id, self._next_id = self._next_id, self._next_id + 1
        return track.id

    def _max_age(self, index: int, seconds: float | None) -> int:
        """Frames a lost track waits: `max_age`, or `lost_seconds` at the frame rate the frames' times show (30 fps
        until they show one)."""
        if self.settings.max_age:
            return self.settings.max_age
        if self._start is None and seconds is not None:
            self._start = (index, seconds)
        fps = 30.0
        if self._start is not None and seconds is not None and seconds > self._start[1]:
            fps = (index - self._start[0]) / (seconds - self._start[1])
        return max(1, round(self.settings.lost_seconds * fps))

    def _predicted(self, index: int) -> npt.NDArray[np.float64]:
        """(tracks, 4) where each track's object is expected in frame `index` (see `_Track.predicted`)."""
        boxes = np.array([t.box for t in self._tracks], np.float64).reshape(-1, 4)
        moves = np.array([t.velocity * (index - t.at) for t in self._tracks], np.float64).reshape(-1, 2)
        return boxes + np.hstack([moves, moves])

    def _uncertain(self, predicted: npt.NDArray[np.float64], index: int) -> npt.NDArray[np.float64]:
        """The `predicted` boxes grown by how far off each may be: DRIFT of the way its object went since it was
        last seen (its speed may have changed while it was hidden)."""
        lost = np.array([index - t.seen - 1 for t in self._tracks], np.float64).clip(0, None)
        speed = np.array([np.abs(t.velocity) for t in self._tracks]).reshape(-1, 2)
        margin = DRIFT * speed * lost[:, None]
        return predicted + np.hstack([-margin, margin])

    def _hide(self, unmatched: npt.NDArray[np.int64], predicted: npt.NDArray[np.float64], boxes: Boxes,
              index: int) -> None:
        """Place each unmatched track whose predicted box meets instances' boxes inside the one it meets most: its
        object is hidden behind that instance (or merged into it), so cannot be outside it."""
        if not len(boxes) or not len(unmatched):
            return
        cover = _box_intersection(predicted[unmatched], boxes)
        hidden = cover.max(axis=1) > 0
        rows = unmatched[hidden]
        places = _nest(predicted[rows], boxes[cover[hidden].argmax(axis=1)])
        for t, place in zip(rows.tolist(), places, strict=True):
            self._tracks[t].place(place, index)
            self._tracks[t].covered = index

    def _iou(self, shared: Matrix, predicted: npt.NDArray[np.float64], boxes: Boxes,
             masks: list[_Mask | None]) -> Matrix:
        """(tracks, instances) IoU of each track's `predicted` place with each instance, given where their boxes
        share area (`shared`); of masks where both sides have one, else of boxes. Pairs whose masks could not reach
        the lowest IoU a match needs, however they overlap, get 0 without their overlap being counted."""
        track_masks = [t.mask for t in self._tracks]
        with_masks = (np.array([m is not None for m in track_masks], bool)[:, None]
                      & np.array([m is not None for m in masks], bool)[None, :])
        track_area = np.where(with_masks, np.array([0 if m is None else m.area for m in track_masks],
                                                   np.float64)[:, None], _box_area(predicted)[:, None])
        area = np.where(with_masks, np.array([0 if m is None else m.area for m in masks], np.float64)[None, :],
                        _box_area(boxes)[None, :])
        inter = np.minimum(shared, np.minimum(track_area, area))  # at most this; exact for boxes
        union = track_area + area - inter
        floor = min(self.settings.match_iou, self.settings.low_match_iou)
        exact = with_masks & (inter > 0) & (inter >= floor * union)
        inter[with_masks & ~exact] = 0.0
        for t, d in zip(*np.nonzero(exact), strict=True):
            track_mask, mask = track_masks[t], masks[d]
            assert track_mask is not None and mask is not None
            inter[t, d] = track_mask.intersection(mask, *(predicted[t, :2] - self._tracks[t].box[:2]))
        union = track_area + area - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _box_intersection(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> Matrix:
    """(n, m) areas shared by xyxy boxes `a` (n,4) and `b` (m,4)."""
    a64, b64 = a.astype(np.float64)[:, None, :], b.astype(np.float64)[None, :, :]
    width = np.minimum(a64[..., 2], b64[..., 2]) - np.maximum(a64[..., 0], b64[..., 0])
    height = np.minimum(a64[..., 3], b64[..., 3]) - np.maximum(a64[..., 1], b64[..., 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def _box_area(boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Area of each xyxy box (a 0-d array for one box)."""
    boxes = boxes.astype(np.float64)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _greedy(iou: Matrix, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs, each row and column used once, taken by descending value while it is at least
    `threshold`."""
    rows, cols = np.nonzero(iou >= threshold)
    pairs: list[tuple[int, int]] = []
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for k in np.argsort(-iou[rows, cols], kind="stable"):
        row, col = int(rows[k]), int(cols[k])
        if row not in used_rows and col not in used_cols:
            pairs.append((row, col))
            used_rows.add(row)
            used_cols.add(col)
    return pairs


def _extend(matches: list[tuple[int, int]], score: Matrix, rows: npt.NDArray[np.int64],
            cols: npt.NDArray[np.int64], threshold: float) -> list[tuple[int, int]]:
    """`matches` plus greedy (track, instance) pairs among the `rows` and `cols` still unmatched."""
    used_rows, used_cols = {r for r, _ in matches}, {c for _, c in matches}
    rows = np.array([r for r in rows.tolist() if r not in used_rows], np.int64)
    cols = np.array([c for c in cols.tolist() if c not in used_cols], np.int64)
    return matches + [(int(rows[r]), int(cols[c])) for r, c in _greedy(score[np.ix_(rows, cols)], threshold)]


def _nest(predicted: npt.NDArray[np.float64], observed: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """`predicted` moved the least distance, on each axis, that puts `observed` inside it (or it inside `observed`);
    xyxy boxes, or (n, 4) rows of them pairwise."""
    starts, ends = observed[..., :2] - predicted[..., :2], observed[..., 2:] - predicted[..., 2:]  # align an edge
    shift = np.clip(0.0, np.minimum(starts, ends), np.maximum(starts, ends))
    return predicted + np.concatenate([shift, shift], axis=-1)


def _grown(boxes: Boxes) -> npt.NDArray[np.float64]:
    """Boxes grown on each side by CONTACT of their size plus 2 px: what they touch."""
    margin = np.tile((boxes[:, 2:] - boxes[:, :2]) * CONTACT + 2, 2) * [-1, -1, 1, 1]
    return boxes.astype(np.float64) + margin


def _size(box: npt.NDArray[np.float32], mask: _Mask | None) -> float:
    """An instance's area: its mask's, or its box's."""
    return float(mask.area) if mask is not None else float(_box_area(box))


def _edge_velocity(before: npt.NDArray[np.float64], after: npt.NDArray[np.float64], frames: int,
                   expected: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(vx, vy) from a box's move over `frames`: on each axis, the speed of the edge nearest the `expected` one (an
    edge that the frame border or another object cuts moves unlike the object)."""
    first, second = ((after - before) / max(1, frames)).reshape(2, 2)
    return np.where(np.abs(first - expected) <= np.abs(second - expected), first, second)


def tracker_for(settings: TrackSettings, kind: Literal["instance", "semantic"]) -> Tracker | None:
    """A tracker for an engine of `kind` when tracking is enabled; None for semantic engines, which are never
    tracked."""
    return Tracker(settings) if settings.enabled and kind == "instance" else None
