"""Counting lines and zones over one source's tracked segmentations: which tracks cross a line and which way,
which are inside a zone, how much of a zone masks cover, as `Event`s in frame order, and drawn on the picture.

A tracked instance's position is one point of its box, its anchor (`bottom` centre by default: where a walker
stands). Only confirmed tracks (id > 0; the tracker gives unconfirmed ones id 0) cross lines and enter zones;
semantic engines (a label map, no tracks) and region maps cross nothing, and count towards zone occupancy only
through their label map.

Lines. A crossing is the anchor passing from one side of the line to the other: it must cross the line's infinite
extension at a point within the segment, and then get more than the hysteresis band (`WatchSettings.band`) away
from it on the new side, so jitter on the line is never a crossing and a walker who stops on it counts at most
once. Directions: `in` is a crossing from the left of the line to its right as seen on the picture standing on
its start facing its end (for a line drawn left to right, `in` is downwards in the picture), `out` the other way.
Each track counts at most once per line and direction, as a door counter wants: a walker who goes in, out and in
again counts in 1, out 1.

Zones. A track is inside a zone once its anchor is in the polygon (on its outline included), and outside again
once its anchor is more than the hysteresis band outside it (no enter/exit chatter on the edge); `zone_enter` and
`zone_exit` say so. A track the tracker has not reported for `lost_seconds` is gone: it exits the zones it was in,
at the frame where that is decided. Occupancy is the fraction of the zone's pixels covered by the masks of the
zone's classes (all classes when it names none; a label map's pixels of those classes, or all but background 0),
reported as `zone_occupancy` every `occupancy_period` seconds of source time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.colors import Color, instance_color
from seg_video.core.types import ClassTable, Direction, Event, EventType, Frame, Segmentation
from seg_video.stages.render import _draw_label, _overlap, _Style

Point = tuple[float, float]
Anchor = Literal["bottom", "centre", "top"]
ANCHORS: tuple[Anchor, ...] = ("bottom", "centre", "top")
Image = npt.NDArray[np.uint8]

BAND_SHARE = 0.02
"""Default hysteresis band: this fraction of the frame's shorter side (7 px at 360p, 22 px at 1080p)."""
MIN_BAND = 2.0
"""The default band is never narrower than this many pixels."""
LINE_COLOUR: Color = (0, 215, 255)
"""Amber, for counting lines."""
ZONE_ALPHA = 0.2
"""Opacity of a zone's fill: the scene stays readable under it."""
_SAME_TIME = 1e-9
"""Seconds within which two frame times are the same (float pts)."""


def _point(value: Any, what: str) -> Point:
    """`value` as an (x, y) pair of finite floats, or ValueError naming `what`."""
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: a point is two numbers (x, y); got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{what}: a point must be finite; got {(x, y)}")
    return x, y


def _checked_name(name: str, kind: str) -> None:
    """Refuse an empty name."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a {kind} needs a name; got {name!r}")


@dataclass(frozen=True)
class Line:
    """A counting line from `start` to `end` (pixels of the source frame); `classes` limits what it counts by class
    name (empty: every class). `in` is a crossing from its left to its right, seen standing on `start` facing `end`
    (see the module)."""

    name: str
    start: Point
    end: Point
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _checked_name(self.name, "line")
        object.__setattr__(self, "start", _point(self.start, f"line {self.name!r}"))
        object.__setattr__(self, "end", _point(self.end, f"line {self.name!r}"))
        object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))
        if self.start == self.end:
            raise ValueError(f"line {self.name!r} has no length: both ends are at {self.start}")

    def side(self, point: Point) -> float:
        """Signed distance (pixels) from the line's infinite extension: > 0 on its right (the `in` side)."""
        (x1, y1), (x2, y2) = self.start, self.end
        dx, dy = x2 - x1, y2 - y1
        return (dx * (point[1] - y1) - dy * (point[0] - x1)) / math.hypot(dx, dy)

    def extent(self, point: Point) -> float:
        """Where `point` lies along the segment, projected on it: 0 at `start`, 1 at `end`."""
        (x1, y1), (x2, y2) = self.start, self.end
        dx, dy = x2 - x1, y2 - y1
        return ((point[0] - x1) * dx + (point[1] - y1) * dy) / (dx * dx + dy * dy)


@dataclass(frozen=True)
class Zone:
    """A polygon zone (pixels of the source frame, 3 or more points, not all on one line); `classes` limits what
    it counts by class name (empty: every class)."""

    name: str
    points: tuple[Point, ...]
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _checked_name(self.name, "zone")
        object.__setattr__(self, "points", tuple(_point(p, f"zone {self.name!r}") for p in self.points))
        object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))
        if len(self.points) < 3:
            raise ValueError(f"zone {self.name!r} needs 3 or more points; got {len(self.points)}")
        if cv2.contourArea(self.contour) == 0:
            raise ValueError(f"zone {self.name!r} has no area: its points are all on one line")

    @property
    def contour(self) -> npt.NDArray[np.float32]:
        """The polygon as OpenCV takes it."""
        return np.array(self.points, np.float32).reshape(-1, 1, 2)

    def distance(self, point: Point) -> float:
        """Signed distance (pixels) from the outline: > 0 inside, 0 on it, < 0 outside."""
        return float(cv2.pointPolygonTest(self.contour, point, True))


def _parse(text: str, kind: str, form: str) -> tuple[str, list[float]]:
    """`NAME:N1,N2,...` as (name, numbers), or ValueError saying the form."""
    name, colon, numbers = text.rpartition(":")
    try:
        values = [float(value) for value in numbers.split(",")]
    except ValueError:
        values = []
    if not colon or not name.strip() or not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a {kind} is {form} in pixels; got {text!r}")
    return name.strip(), values


def parse_line(text: str) -> Line:
    """A line from `NAME:X1,Y1,X2,Y2` (e.g. `door:100,400,500,400`); ValueError with a one-line message otherwise."""
    form = "NAME:X1,Y1,X2,Y2"
    name, values = _parse(text, "line", form)
    if len(values) != 4:
        raise ValueError(f"a line is {form} in pixels (4 numbers); got {text!r}")
    return Line(name, (values[0], values[1]), (values[2], values[3]))


def parse_zone(text: str) -> Zone:
    """A zone from `NAME:X1,Y1,X2,Y2,X3,Y3,...` (e.g. `platform:0,0,100,0,100,80,0,80`, 3 or more points);
    ValueError with a one-line message otherwise."""
    form = "NAME:X1,Y1,X2,Y2,X3,Y3,..."
    name, values = _parse(text, "zone", form)
    if len(values) < 6 or len(values) % 2:
        raise ValueError(f"a zone is {form} in pixels (3 or more x,y pairs); got {text!r}")
    return Zone(name, tuple(zip(values[::2], values[1::2], strict=True)))


@dataclass(frozen=True)
class WatchSettings:
    """How lines and zones follow tracks: the `anchor` point of each box, the hysteresis band in pixels (None: 2 %
    of the frame's shorter side), how often zone occupancy is reported (seconds of source time; 0: every frame)
    and how long a track unseen is taken as gone (a little longer than the tracker waits for a lost object)."""

    anchor: Anchor = "bottom"
    hysteresis_px: float | None = None
    occupancy_period: float = 1.0
    lost_seconds: float = 2.0

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}; got {self.anchor!r}")
        if self.hysteresis_px is not None and not 0 <= self.hysteresis_px < math.inf:
            raise ValueError(f"hysteresis_px must be >= 0 and finite; got {self.hysteresis_px}")
        for name in ("occupancy_period", "lost_seconds"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be >= 0 and finite; got {getattr(self, name)}")

    def band(self, height: int, width: int) -> float:
        """The hysteresis band (pixels each side of a line, outside a zone) for a frame of this size."""
        if self.hysteresis_px is not None:
            return self.hysteresis_px
        return max(MIN_BAND, BAND_SHARE * min(height, width))


@dataclass(frozen=True)
class _Seen:
    """A confirmed track in one frame: its id, class name and anchor point."""

    track_id: int
    class_name: str
    point: Point


def _seen(seg: Segmentation, anchor: Anchor) -> list[_Seen]:
    """The confirmed tracks of `seg` with their anchors (none for untracked engines and region maps)."""
    if seg.track_ids is None or seg.regions:
        return []
    found = []
    for (x1, y1, x2, y2), class_id, track_id in zip(seg.boxes.tolist(), seg.class_ids.tolist(),
                                                    seg.track_ids.tolist(), strict=True):
        if track_id > 0:
            y = y2 if anchor == "bottom" else y1 if anchor == "top" else (y1 + y2) / 2
            found.append(_Seen(track_id, seg.classes.name(class_id), ((x1 + x2) / 2, y)))
    return found


def _wanted(classes: tuple[str, ...], name: str) -> bool:
    """Whether a line's or zone's `classes` take class `name` (all do when it names none)."""
    return not classes or name in classes


@dataclass(frozen=True)
class _When:
    """Where events of one frame are stamped."""

    frame: int
    time: float
    source: str

    def event(self, kind: EventType, **fields: Any) -> Event:
        """An event of this frame."""
        return Event(kind, self.frame, self.time, self.source, **fields)


@dataclass
class _Passage:
    """One track's way past a line: the side it was last beyond the band on (0: not yet), its last anchor and
    signed distance, and where along the segment it last crossed the line since (None: not since)."""

    side: int
    point: Point
    distance: float
    crossed_at: float | None = None
    counted: set[Direction] = field(default_factory=set)


class LineCounter:
    """One line's crossings: `counts` per (direction, class name), kept per track while the track lives."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.counts: dict[tuple[Direction, str], int] = {}
        self._passages: dict[int, _Passage] = {}

    def total(self, direction: Direction) -> int:
        """Crossings counted in `direction`, all classes together."""
        return sum(n for (way, _), n in self.counts.items() if way == direction)

    def observe(self, seen: Sequence[_Seen], band: float, when: _When) -> list[Event]:
        """Follow this frame's tracks past the line; a `line_cross` event for each crossing that counts."""
        events = []
        for item in seen:
            if not _wanted(self.line.classes, item.class_name):
                continue
            direction = self._step(item.track_id, item.point, band)
            if direction is not None:
                key = (direction, item.class_name)
                self.counts[key] = self.counts.get(key, 0) + 1
                events.append(when.event("line_cross", track_id=item.track_id, class_name=item.class_name,
                                         line=self.line.name, direction=direction))
        return events

    def _step(self, track_id: int, point: Point, band: float) -> Direction | None:
        """Move a track's anchor to `point`: the direction of the crossing it completes, if that counts."""
        distance = self.line.side(point)
        settled = 0 if abs(distance) <= band else 1 if distance > 0 else -1
        passage = self._passages.get(track_id)
        if passage is None:
            self._passages[track_id] = _Passage(settled, point, distance)
            return None
        if (passage.distance < 0) != (distance < 0):  # crossed the infinite line since the last frame: where?
            share = passage.distance / (passage.distance - distance)
            (x0, y0), (x1, y1) = passage.point, point
            passage.crossed_at = self.line.extent((x0 + share * (x1 - x0), y0 + share * (y1 - y0)))
        passage.point, passage.distance = point, distance
        if settled == 0:
            return None
        previous, crossed = passage.side, passage.crossed_at
        passage.side, passage.crossed_at = settled, None
        if previous != -settled or crossed is None or not 0.0 <= crossed <= 1.0:
            return None  # first settled, back on the same side, or around the segment's end
        direction: Direction = "in" if settled > 0 else "out"
        if direction in passage.counted:
            return None
        passage.counted.add(direction)
        return direction

    def forget(self, gone: set[int]) -> None:
        """Drop the state of tracks that are gone."""
        for track_id in gone:
            self._passages.pop(track_id, None)

    def draw(self, picture: Image, style: _Style) -> _Label:
        """Draw the line and an arrow towards its `in` side; its label: the counts (per class when it counted
        several), placed above its upper end."""
        (x1, y1), (x2, y2) = self.line.start, self.line.end
        ends = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.line(picture, *ends, LINE_COLOUR, style.line + 1, cv2.LINE_AA)
        length = math.hypot(x2 - x1, y2 - y1)
        reach = min(length / 2, 1.5 * style.label_height)
        middle = (x1 + x2) / 2, (y1 + y2) / 2
        tip = middle[0] - (y2 - y1) / length * reach, middle[1] + (x2 - x1) / length * reach
        cv2.arrowedLine(picture, (round(middle[0]), round(middle[1])), (round(tip[0]), round(tip[1])), LINE_COLOUR,
                        style.line, cv2.LINE_AA, tipLength=0.4)
        rows = [f"{self.line.name}  in {self.total('in')}  out {self.total('out')}"]
        classes = sorted({name for _, name in self.counts})
        if len(classes) > 1:
            rows += [f"{name}  in {self.counts.get(('in', name), 0)}  out {self.counts.get(('out', name), 0)}"
                     for name in classes]
        top = min(ends[0][1], ends[1][1]) - style.line - len(rows) * style.label_height
        return _Label(tuple(rows), (min(ends[0][0], ends[1][0]), top), LINE_COLOUR)


@dataclass(frozen=True)
class _Label:
    """Rows of text to draw on one colour, the first row's top-left corner where it would go."""

    rows: tuple[str, ...]
    corner: tuple[int, int]
    colour: Color

    def draw(self, picture: Image, style: _Style, taken: list[tuple[int, int, int, int]]) -> None:
        """Draw the rows inside the picture, moved down (or up) by rows as needed not to cover the labels `taken`
        (then taken too); where no place is free, at the corner."""
        height, width = style.label_height * len(self.rows), max(style.label_width(row) for row in self.rows)
        x = max(0, min(self.corner[0], picture.shape[1] - width))
        steps = picture.shape[0] // style.label_height
        for step in [0] + [sign * k for k in range(1, steps + 1) for sign in (1, -1)]:
            y = max(0, min(self.corner[1] + step * style.label_height, picture.shape[0] - height))
            place = (x, y, x + width, y + height)
            if not any(_overlap(place, other) for other in taken):
                break
        else:
            y = max(0, min(self.corner[1], picture.shape[0] - height))
            place = (x, y, x + width, y + height)
        taken.append(place)
        for k, row in enumerate(self.rows):
            _draw_label(picture, row, (x, y + k * style.label_height), self.colour, style)


@dataclass(frozen=True)
class _Raster:
    """A zone's pixels in a frame of one size: its bounding rectangle (xyxy) and its mask over it."""

    box: tuple[int, int, int, int]
    mask: npt.NDArray[np.bool_]
    area: int


class ZoneWatch:
    """One zone: the tracks `inside` it and the share of it masks cover (`occupancy`, 0..1), as of the last frame."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.occupancy = 0.0
        self._inside: dict[int, str] = {}
        self._rasters: dict[tuple[int, int], _Raster] = {}

    @property
    def inside(self) -> frozenset[int]:
        """Ids of the tracks inside."""
        return frozenset(self._inside)

    @property
    def count(self) -> int:
        """How many tracks are inside."""
        return len(self._inside)

    def observe(self, seen: Sequence[_Seen], band: float, gone: set[int], when: _When) -> list[Event]:
        """Follow this frame's tracks in and out of the zone (and out with the tracks that are gone)."""
        events = []
        for item in seen:
            if not _wanted(self.zone.classes, item.class_name):
                continue
            distance = self.zone.distance(item.point)
            if item.track_id not in self._inside and distance >= 0:
                self._inside[item.track_id] = item.class_name
                events.append(when.event("zone_enter", track_id=item.track_id, class_name=item.class_name,
                                         zone=self.zone.name))
            elif item.track_id in self._inside and distance < -band:
                del self._inside[item.track_id]
                events.append(when.event("zone_exit", track_id=item.track_id, class_name=item.class_name,
                                         zone=self.zone.name))
        for track_id in sorted(gone & self._inside.keys()):
            events.append(when.event("zone_exit", track_id=track_id, class_name=self._inside.pop(track_id),
                                     zone=self.zone.name))
        return events

    def measure(self, seg: Segmentation) -> float:
        """Set and return `occupancy`: the share of the zone's pixels that `seg`'s masks of the zone's classes (or
        its label map's pixels of them) cover. Work grows with the zone's and the masks' areas."""
        raster = self._raster(seg.height, seg.width)
        if not raster.area:
            self.occupancy = 0.0
            return 0.0
        x1, y1, x2, y2 = raster.box
        covered = np.zeros(raster.mask.shape, bool)
        if seg.masks is not None and not seg.regions:
            masks = seg.masks
            for i, class_id in enumerate(seg.class_ids.tolist()):
                if not _wanted(self.zone.classes, seg.classes.name(class_id)):
                    continue
                bx1, by1, bx2, by2 = masks.boxes[i].tolist()
                left, top, right, bottom = max(x1, bx1), max(y1, by1), min(x2, bx2), min(y2, by2)
                if left < right and top < bottom:
                    covered[top - y1:bottom - y1, left - x1:right - x1] |= masks.crops[i][top - by1:bottom - by1,
                                                                                          left - bx1:right - bx1]
        if seg.label_map is not None:
            labels = seg.label_map[y1:y2, x1:x2]
            if self.zone.classes:
                ids = [i for i, name in enumerate(seg.classes.names) if name in self.zone.classes]
                covered |= np.isin(labels, ids)
            else:
                covered |= labels != 0
        self.occupancy = int(np.count_nonzero(covered & raster.mask)) / raster.area
        return self.occupancy

    def _raster(self, height: int, width: int) -> _Raster:
        """The zone's pixels in a frame of this size (rasterised once per size)."""
        raster = self._rasters.get((height, width))
        if raster is None:
            full = np.zeros((height, width), np.uint8)
            cv2.fillPoly(full, [np.rint(self.zone.contour).astype(np.int32)], 1)
            x, y, w, h = cv2.boundingRect(full)
            mask = full[y:y + h, x:x + w].astype(bool)
            raster = self._rasters[(height, width)] = _Raster((x, y, x + w, y + h), mask, int(mask.sum()))
        return raster

    def draw(self, picture: Image, style: _Style, colour: Color) -> _Label:
        """Draw the zone filled translucent and outlined; its label: its occupancy and the tracks inside, at its
        top corner."""
        raster = self._raster(picture.shape[0], picture.shape[1])
        x1, y1, x2, y2 = raster.box
        if raster.area:
            region = picture[y1:y2, x1:x2]
            tint = np.empty_like(region)
            tint[:] = colour
            cv2.copyTo(cv2.addWeighted(region, 1 - ZONE_ALPHA, tint, ZONE_ALPHA, 0.0), raster.mask.view(np.uint8),
                       region)
        cv2.polylines(picture, [np.rint(self.zone.contour).astype(np.int32)], True, colour, style.line, cv2.LINE_AA)
        corner = min(self.zone.points, key=lambda p: (p[1], p[0]))
        return _Label((f"{self.zone.name}  {round(100 * self.occupancy)} %  {self.count} inside",),
                      (round(corner[0]), round(corner[1])), colour)


class Watch:
    """Lines and zones over one source's tracked segmentations: events out, counts kept, drawn on pictures.

    Feed it every frame in order with `update`; `lines` and `zones` hold the state (counts, tracks inside,
    occupancy); `draw` puts them on a picture of the source's size. One per source, used from one thread.
    """

    def __init__(self, lines: Sequence[Line], zones: Sequence[Zone], settings: WatchSettings = WatchSettings(),
                 source: str = "") -> None:
        settings.validate()
        for kind, names in (("lines", [line.name for line in lines]), ("zones", [zone.name for zone in zones])):
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ValueError(f"two {kind} are named {twice[0]!r}; each needs its own name")
        self.settings, self.source = settings, source
        self._lines = tuple(LineCounter(line) for line in lines)
        self._zones = tuple(ZoneWatch(zone) for zone in zones)
        self._last_seen: dict[int, float] = {}
        self._occupancy_start: float | None = None
        self._next_occupancy = 0.0
        self._origin: float | None = None

    @property
    def lines(self) -> tuple[LineCounter, ...]:
        """Each line with its counts."""
        return self._lines

    @property
    def zones(self) -> tuple[ZoneWatch, ...]:
        """Each zone with the tracks inside and its occupancy."""
        return self._zones

    def check_classes(self, classes: ClassTable) -> None:
        """Raise ValueError naming the first line or zone whose classes the engine's `classes` do not know."""
        for kind, part in [("line", counter.line) for counter in self._lines] + [
                ("zone", watch.zone) for watch in self._zones]:
            try:
                classes.ids_of(list(part.classes))
            except KeyError as error:
                raise ValueError(f"{kind} {part.name!r}: {error.args[0]}") from None

    def update(self, frame: Frame, segmentation: Segmentation) -> list[Event]:
        """The events of `segmentation` (of `frame`, the next frame in order): crossings, zone entries and exits,
        and the zones' occupancy when it is due."""
        when = _When(frame.index, self._seconds(frame), self.source)
        band = self.settings.band(segmentation.height, segmentation.width)
        seen = _seen(segmentation, self.settings.anchor)
        for item in seen:
            self._last_seen[item.track_id] = when.time
        gone = {track_id for track_id, last in self._last_seen.items()
                if when.time - last > self.settings.lost_seconds + _SAME_TIME}
        for track_id in gone:
            del self._last_seen[track_id]
        events = []
        for counter in self._lines:
            events += counter.observe(seen, band, when)
            counter.forget(gone)
        for watch in self._zones:
            events += watch.observe(seen, band, gone, when)
            watch.measure(segmentation)
        if self._zones and self._occupancy_due(when.time):
            events += [when.event("zone_occupancy", zone=watch.zone.name, occupancy=watch.occupancy,
                                  count=watch.count) for watch in self._zones]
        return events

    def draw(self, picture: Image) -> None:
        """Draw the zones (fill, outline, occupancy and count) and the lines (with their `in` arrow and counts)
        on `picture`, in place."""
        style = _Style.for_frame(picture.shape[0], picture.shape[1])
        labels = [watch.draw(picture, style, instance_color(-1 - k)) for k, watch in enumerate(self._zones)]
        labels += [counter.draw(picture, style) for counter in self._lines]
        taken: list[tuple[int, int, int, int]] = []
        for label in labels:  # over every outline and arrow, and never over each other
            label.draw(picture, style, taken)

    def _seconds(self, frame: Frame) -> float:
        """The frame's time: its pts in seconds, or its capture time since the first frame's when it has none."""
        seconds = frame.seconds
        if seconds is not None:
            return seconds
        if self._origin is None:
            self._origin = frame.captured_at
        return frame.captured_at - self._origin

    def _occupancy_due(self, time: float) -> bool:
        """Whether occupancy is reported at `time`: at the first frame, then at the first frame at or after each
        further `occupancy_period` seconds from it (a live source's late frame reports once for the periods it
        missed)."""
        if self._occupancy_start is None:
            self._occupancy_start = time
        elif time < self._next_occupancy - _SAME_TIME:
            return False
        period = self.settings.occupancy_period
        if period:
            periods = math.floor((time - self._occupancy_start) / period + _SAME_TIME) + 1
            self._next_occupancy = self._occupancy_start + periods * period
        return True

