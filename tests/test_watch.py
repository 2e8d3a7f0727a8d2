"""Counting lines and zones (`seg_video.stages.watch`): exact crossings both ways on walkers with known paths, no
count from a walker stopping on a line or from jitter within the band, zone entries and exits at the right frames,
occupancy against the truth of instance masks and of a label map, the occupancy period, one-line parse errors, the
drawing, and one run of a walkers clip through the real `motion` engine and tracker."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import seg_video
from seg_video.core.types import ClassTable, Event, Frame, Segmentation
from seg_video.io.walkers import Walker, WalkersScene, write_walkers_clip
from seg_video.stages.watch import LINE_COLOUR, Line, Watch, WatchSettings, Zone, parse_line, parse_zone

FPS = 30.0
WIDTH, HEIGHT = 320, 240
BAND = 5.0
SETTINGS = WatchSettings(hysteresis_px=BAND)
DOOR = Line("door", (40, 120), (280, 120))
"""Drawn left to right: `in` is downwards in the picture."""


def frame_of(index: int, image: np.ndarray | None = None) -> Frame:
    """Frame `index` of a 30 fps source (a blank picture unless given)."""
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8) if image is None else image
    return Frame(index=index, image=picture, pts=index, time_base=Fraction(1, 30))


def run(watch: Watch, scene: WalkersScene, frames: int) -> list[Event]:
    """Every event of the scene's first `frames` frames, fed to `watch` as truth."""
    return [event for index in range(frames) for event in watch.update(frame_of(index), scene.truth(index))]


def first_frame(walker: Walker, test: Callable[[float, float], bool]) -> int:
    """The first frame whose anchor (the bottom centre of the walker's integer box) passes `test`."""
    for index in range(10_000):
        box = walker.box(index / FPS)
        if box is not None and test((box[0] + box[2]) / 2, box[3]):
            return index
    raise AssertionError("never")


def box_seg(boxes: list[tuple[float, float, float, float]], track_ids: list[int] | None = None,
            classes: tuple[str, ...] = ("person",), class_ids: list[int] | None = None) -> Segmentation:
    """A tracked segmentation of boxes alone."""
    n = len(boxes)
    return Segmentation(height=HEIGHT, width=WIDTH, classes=ClassTable(classes),
                        boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.ones(n, np.float32),
                        class_ids=np.array(class_ids or [0] * n, np.int64),
                        track_ids=None if track_ids is None else np.array(track_ids, np.int64))


# Lines


def test_walkers_crossing_both_ways_count_exactly_at_the_frame_they_leave_the_band() -> None:
    down = [Walker(((x, 40), (x, 220)), speed=80, start=0.1 * k) for k, x in enumerate((60, 120))]
    up = Walker(((200, 220), (200, 40)), speed=60, class_name="car", colour=(220, 110, 30))
    outside = Walker(((300, 40), (300, 220)), speed=80)  # crosses the line's extension beyond its end (x = 280)
    scene = WalkersScene([*down, up, outside], WIDTH, HEIGHT, FPS)
    watch = Watch([DOOR], [], SETTINGS, source="cam")
    events = run(watch, scene, 100)
    assert [(e.type, e.direction, e.track_id, e.class_name, e.frame) for e in events] == sorted([
        ("line_cross", "in", 1, "person", first_frame(down[0], lambda x, y: y > 120 + BAND)),
        ("line_cross", "in", 2, "person", first_frame(down[1], lambda x, y: y > 120 + BAND)),
        ("line_cross", "out", 3, "car", first_frame(up, lambda x, y: y < 120 - BAND)),
    ], key=lambda row: row[4])
    counter = watch.lines[0]
    assert counter.counts == {("in", "person"): 2, ("out", "car"): 1}
    assert (counter.total("in"), counter.total("out")) == (2, 1)
    first = events[0].frame
    assert events[0].to_json() == {"type": "line_cross", "frame": first, "time": round(first / 30, 3), "source": "cam",
                                   "track_id": 1, "class": "person", "line": "door", "direction": "in"}


def test_direction_follows_the_lines_orientation() -> None:
    """`in` is from the left to the right seen from the start facing the end: the same walk is `out` over the
    reversed line, and a line drawn downwards counts a walk to the left as `in`."""
    scene = WalkersScene([Walker(((100, 40), (100, 220)), speed=90),
                          Walker(((40, 200), (280, 200)), speed=120, size=(10, 10))], WIDTH, HEIGHT, FPS)
    reverse = Line("reverse", DOOR.end, DOOR.start)
    downwards = Line("downwards", (160, 150), (160, 230))
    watch = Watch([DOOR, reverse, downwards], [], SETTINGS)
    run(watch, scene, 90)
    assert [counter.counts for counter in watch.lines] == [{("in", "person"): 1}, {("out", "person"): 1},
                                                          {("out", "person"): 1}]
    assert downwards.side((150, 190)) > 0  # left of the picture: the right-hand side of a line drawn downwards


def test_a_walker_who_stops_on_the_line_counts_at_most_once() -> None:
    on_line = (100.0, 120.0)
    goes_on = Walker(((100, 40), on_line, (100, 220)), speed=80, pause=1.5)
    goes_back = Walker(((200, 40), (200, 122), (200, 40)), speed=80, pause=1.5, colour=(40, 190, 60))
    scene = WalkersScene([goes_on, goes_back], WIDTH, HEIGHT, FPS)
    watch = Watch([DOOR], [], SETTINGS)
    events = run(watch, scene, 150)
    assert [(e.track_id, e.direction) for e in events] == [(1, "in")]
    assert events[0].frame == first_frame(goes_on, lambda x, y: y > 120 + BAND)  # when it walks on, not before


def test_each_track_counts_once_per_direction() -> None:
    """In, out, in again: in 1, out 1 (a door counter counts people, not their hesitations)."""
    walker = Walker(((100, 40), (100, 200), (100, 60), (100, 220)), speed=120)
    watch = Watch([DOOR], [], SETTINGS)
    events = run(watch, WalkersScene([walker], WIDTH, HEIGHT, FPS), 120)
    assert [e.direction for e in events] == ["in", "out"]
    assert watch.lines[0].counts == {("in", "person"): 1, ("out", "person"): 1}


def test_jitter_within_the_band_is_never_a_crossing_and_beyond_it_is() -> None:
    rng = np.random.default_rng(7)
    watch = Watch([DOOR], [], SETTINGS)
    bottoms = 120 + rng.uniform(-BAND, BAND, 200)  # on the line, shaking by up to the band each way
    events = [e for i, y in enumerate(bottoms) for e in watch.update(frame_of(i), box_seg([(90, y - 40, 110, y)], [4]))]
    assert events == [] and watch.lines[0].counts == {}
    wider = 120 + np.where(np.arange(40) % 2, 1, -1) * (BAND + 2)  # over and back, beyond the band each time
    events = [e for i, y in enumerate(wider) for e in watch.update(frame_of(200 + i), box_seg([(90, y - 40, 110, y)],
                                                                                              [4]))]
    assert [e.direction for e in events] == ["in", "out"]


def test_only_confirmed_tracks_of_the_lines_classes_cross() -> None:
    walk = [(90, y - 40, 110, y) for y in range(60, 200, 10)]
    cars_only = Line("cars", DOOR.start, DOOR.end, classes=("car",))
    watch = Watch([DOOR, cars_only], [], SETTINGS)
    for i, (x1, y1, x2, y2) in enumerate(walk):
        seg = box_seg([(x1, y1, x2, y2), (x1 + 40, y1, x2 + 40, y2), (x1 + 80, y1, x2 + 80, y2)], [0, 5, 6],
                      classes=("person", "car"), class_ids=[0, 0, 1])
        watch.update(frame_of(i), seg)
    untracked = Watch([DOOR], [], SETTINGS)  # an engine without tracks (or a semantic one) crosses nothing
    for i, box in enumerate(walk):
        untracked.update(frame_of(i), box_seg([box]))
    assert watch.lines[0].counts == {("in", "person"): 1, ("in", "car"): 1}  # id 0: not confirmed, not counted
    assert watch.lines[1].counts == {("in", "car"): 1}
    assert untracked.lines[0].counts == {}


# Zones


def test_zone_enter_and_exit_at_the_frames_the_anchor_goes_in_and_out() -> None:
    zone = Zone("platform", ((100, 100), (220, 100), (220, 200), (100, 200)))
    across = Walker(((40, 160), (300, 160)), speed=90)
    stays = Walker(((160, 40), (160, 150)), speed=90, colour=(220, 110, 30))  # ends (is lost) inside the zone
    scene = WalkersScene([across, stays], WIDTH, HEIGHT, FPS)
    settings = WatchSettings(hysteresis_px=BAND, lost_seconds=1.0)
    watch = Watch([], [zone], settings)
    events = [e for e in run(watch, scene, 150) if e.type != "zone_occupancy"]
    last_seen = math.ceil(stays.duration * FPS) - 1
    assert [(e.type, e.track_id, e.frame) for e in events] == sorted([
        ("zone_enter", 1, first_frame(across, lambda x, y: x >= 100)),
        ("zone_exit", 1, first_frame(across, lambda x, y: x > 220 + BAND)),
        ("zone_enter", 2, first_frame(stays, lambda x, y: y >= 100)),
        ("zone_exit", 2, last_seen + round(settings.lost_seconds * FPS) + 1),  # gone once lost for lost_seconds
    ], key=lambda row: row[2])
    assert all(e.zone == "platform" and e.class_name == "person" for e in events)
    assert watch.zones[0].inside == frozenset() and watch.zones[0].count == 0


def test_a_track_on_the_edge_does_not_chatter_in_and_out() -> None:
    zone = Zone("edge", ((100, 0), (200, 0), (200, 240), (100, 240)))
    watch = Watch([], [zone], WatchSettings(hysteresis_px=BAND, occupancy_period=100))
    xs = 100 + np.random.default_rng(3).uniform(-BAND, 2, 100)
    events = [e for i, x in enumerate(xs) for e in watch.update(frame_of(i), box_seg([(x - 10, 80, x + 10, 120)], [9]))
              if e.type != "zone_occupancy"]
    assert [e.type for e in events] == ["zone_enter"]
    assert watch.zones[0].inside == {9}


def occupancy_walkers() -> list[Walker]:
    """Walkers that overlap each other and the zones' edges on their way."""
    return [Walker(((40, 150), (280, 150)), speed=100, size=(40, 60)),
            Walker(((280, 180), (40, 170)), speed=80, size=(30, 70), shape="ellipse", class_name="car",
                   colour=(220, 110, 30)),
            Walker(((150, 40), (170, 230)), speed=70, size=(50, 40), colour=(40, 190, 60))]


def test_zone_occupancy_is_the_share_of_the_zone_that_masks_cover() -> None:
    scene = WalkersScene(occupancy_walkers(), WIDTH, HEIGHT, FPS)
    box = Zone("box", ((90, 100), (230, 100), (230, 200), (90, 200)))  # pixels 90..230 × 100..200, ends included
    cars = Zone("cars", ((60, 60), (300, 120), (250, 230), (20, 200)), classes=("car",))
    watch = Watch([], [box, cars], SETTINGS)
    polygon = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillPoly(polygon, [np.array(cars.points, np.int32)], 1)
    busiest = 0.0
    for index in range(90):
        seg = scene.truth(index)
        watch.update(frame_of(index), seg)
        full = seg.full_masks()
        assert full is not None
        union = full.any(axis=0)
        truth_box = union[100:201, 90:231].mean()
        car_pixels = full[seg.class_ids == 1].any(axis=0)
        truth_cars = (car_pixels & polygon.astype(bool)).sum() / polygon.sum()
        assert abs(watch.zones[0].occupancy - truth_box) <= 0.02 * max(truth_box, 0.01)
        assert abs(watch.zones[1].occupancy - truth_cars) <= 0.02 * max(truth_cars, 0.01)
        busiest = max(busiest, truth_box)
    assert busiest > 0.2  # the check had something to measure


def test_overlapping_masks_cover_a_zone_once_and_other_classes_not_at_all() -> None:
    masks = np.zeros((3, HEIGHT, WIDTH), bool)
    masks[0, 100:150, 100:150] = True  # 2500 px
    masks[1, 120:170, 120:170] = True  # 2500 px, 900 of them shared with the first
    masks[2, 0:240, 0:320] = True  # a car everywhere
    seg = Segmentation(height=HEIGHT, width=WIDTH, classes=ClassTable(("person", "car")),
                       boxes=np.array([(100, 100, 150, 150), (120, 120, 170, 170), (0, 0, 320, 240)], np.float32),
                       scores=np.ones(3, np.float32), class_ids=np.array([0, 0, 1]), masks=masks,
                       track_ids=np.array([1, 2, 3]))
    people = Zone("people", ((80, 80), (199, 80), (199, 199), (80, 199)), classes=("person",))  # 120 x 120 px
    watch = Watch([], [people])
    watch.update(frame_of(0), seg)
    assert watch.zones[0].occupancy == pytest.approx((2500 + 2500 - 900) / 120**2)


def test_zone_occupancy_of_a_label_map() -> None:
    scene = WalkersScene(occupancy_walkers(), WIDTH, HEIGHT, FPS)
    classes = ClassTable((None, "person", "car"))  # 0: background, as semantic engines have it
    box = Zone("box", ((90, 100), (230, 100), (230, 200), (90, 200)))
    cars = Zone("cars", box.points, classes=("car",))
    watch = Watch([], [box, cars], SETTINGS)
    for index in range(0, 90, 3):
        truth = scene.truth(index)
        labels = np.zeros((HEIGHT, WIDTH), np.uint8)
        full = truth.full_masks()
        assert full is not None
        for mask, class_id in zip(full, truth.class_ids, strict=True):
            labels[mask] = class_id + 1
        semantic = Segmentation(height=HEIGHT, width=WIDTH, classes=classes, label_map=labels)
        watch.update(frame_of(index), semantic)
        inside = labels[100:201, 90:231]
        assert abs(watch.zones[0].occupancy - (inside > 0).mean()) <= 1e-9
        assert abs(watch.zones[1].occupancy - (inside == 2).mean()) <= 1e-9
        assert watch.zones[0].count == 0  # a label map has no tracks


def test_occupancy_is_reported_every_period_of_source_time() -> None:
    zone = Zone("all", ((0, 0), (319, 0), (319, 239), (0, 239)))
    empty = box_seg([], [])

    def reported(period: float, times: list[float]) -> list[int]:
        watch = Watch([], [zone], WatchSettings(occupancy_period=period))
        return [e.frame for i, t in enumerate(times)
                for e in watch.update(Frame(i, np.zeros((HEIGHT, WIDTH, 3), np.uint8), pts=round(t * 1000),
                                            time_base=Fraction(1, 1000)), empty)]

    steady = [i / 30 for i in range(100)]
    assert reported(1.0, steady) == [0, 30, 60, 90]
    assert reported(0.5, steady) == list(range(0, 100, 15))
    assert reported(0.0, steady[:10]) == list(range(10))
    gappy = [0.0, 0.4, 0.9, 1.05, 1.5, 3.2, 3.3, 4.0, 4.25]  # a live source's uneven frames: due at 1, 2, 3, 4...
    assert reported(1.0, gappy) == [0, 3, 5, 7]  # a late frame reports, the next one is due a period after it


# Parsing, checks, drawing


def test_lines_and_zones_parse_and_bad_ones_fail_in_one_line() -> None:
    assert parse_line("door:100,400,500,400") == Line("door", (100.0, 400.0), (500.0, 400.0))
    assert parse_zone("platform:0,0,100,0,100,80,0,80") == Zone("platform", ((0, 0), (100, 0), (100, 80), (0, 80)))
    assert parse_line("gate: 1.5, 2, 3, 4 ").start == (1.5, 2.0)
    for bad, message in [("door", "NAME:X1,Y1,X2,Y2"), (":1,2,3,4", "NAME:X1,Y1,X2,Y2"),
                         ("door:1,2,3", "4 numbers"), ("door:1,2,3,x", "NAME:X1,Y1,X2,Y2"),
                         ("door:1,2,nan,4", "NAME:X1,Y1,X2,Y2"), ("door:5,5,5,5", "no length")]:
        with pytest.raises(ValueError, match=message) as caught:
            parse_line(bad)
        assert "\n" not in str(caught.value)
    for bad, message in [("z:0,0,1,1", "3 or more"), ("z:0,0,1,1,2", "3 or more"), ("z:0,0,1,1,2,2", "no area"),
                         ("0,0,1,0,1,1", "NAME:")]:
        with pytest.raises(ValueError, match=message) as caught:
            parse_zone(bad)
        assert "\n" not in str(caught.value)


def test_settings_names_and_classes_are_checked() -> None:
    with pytest.raises(ValueError, match="anchor"):
        Watch([], [], WatchSettings(anchor="feet"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="occupancy_period"):
        Watch([], [], WatchSettings(occupancy_period=-1))
    with pytest.raises(ValueError, match="two lines are named 'door'"):
        Watch([DOOR, DOOR], [])
    watch = Watch([Line("door", (0, 0), (9, 9), classes=("persn",))], [])
    with pytest.raises(ValueError, match="line 'door': unknown class 'persn'"):
        watch.check_classes(ClassTable(("person", "car")))
    Watch([DOOR], []).check_classes(ClassTable(("person",)))
    assert WatchSettings().band(360, 640) == pytest.approx(7.2) and WatchSettings().band(20, 20) == 2.0


def test_anchor_setting_moves_the_point_that_crosses() -> None:
    """A 40 px tall box that walks down until its top is on the line: its bottom and centre crossed, its top did
    not."""
    walk = [(90, y - 40, 110, y) for y in range(60, 165, 5)]
    for anchor, crossings in [("bottom", 1), ("centre", 1), ("top", 0)]:
        watch = Watch([DOOR], [], WatchSettings(anchor=anchor, hysteresis_px=BAND))  # type: ignore[arg-type]
        for i, box in enumerate(walk):
            watch.update(frame_of(i), box_seg([box], [1]))
        assert watch.lines[0].total("in") == crossings, anchor


def test_draw_shows_the_line_the_zone_and_their_labels() -> None:
    background = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    zone = Zone("platform", ((20, 150), (300, 150), (300, 230), (20, 230)))
    watch = Watch([DOOR], [zone], SETTINGS)
    scene = WalkersScene([Walker(((100, 40), (100, 220)), speed=90)], WIDTH, HEIGHT, FPS)
    run(watch, scene, 45)
    picture = background.copy()
    watch.draw(picture)
    assert (picture[120, 150] == LINE_COLOUR).all()  # the line itself
    assert (picture[200, 250] != background[200, 250]).any()  # the zone's tint
    assert (picture[60:100, 250:300] == background[60:100, 250:300]).all()  # nothing elsewhere
    changed = (picture != background).any(axis=2)
    assert changed[:115, 40:140].sum() > 300  # the counts' label, above the line's left end


# End to end


def test_a_walkers_clip_through_the_motion_engine_and_tracker_counts_exactly(tmp_path: Path) -> None:
    """The real `motion` engine and tracker on an encoded clip: two walkers go in, one goes out, one passes
    beyond the line's end; the counts are exact, and the zone's occupancy by the engine's masks is within 2 % of
    the zone of the truth's."""
    walkers = [Walker(((70, 45), (70, 215)), speed=70, start=0.8),
               Walker(((150, 45), (150, 215)), speed=60, start=1.0, colour=(40, 190, 60)),
               Walker(((230, 215), (230, 45)), speed=70, start=0.9, colour=(220, 110, 30)),
               Walker(((303, 45), (303, 215)), speed=70, start=0.8, size=(20, 44), colour=(20, 210, 230))]
    clip = tmp_path / "walkers.mp4"
    scene = write_walkers_clip(clip, walkers, seconds=3.8, size=(WIDTH, HEIGHT), fps=FPS)
    low = Zone("low", ((40, 130), (280, 130), (280, 230), (40, 230)))
    watch, truth = Watch([DOOR], [low], source="0"), Watch([], [low])
    events, most = [], 0.0
    for frame, seg in seg_video.segment(clip, engine="motion"):
        events += watch.update(frame, seg)
        truth.update(frame, scene.truth(frame.index))
        assert abs(watch.zones[0].occupancy - truth.zones[0].occupancy) <= 0.02
        most = max(most, truth.zones[0].occupancy)
    assert watch.lines[0].counts == {("in", "moving"): 2, ("out", "moving"): 1}
    assert len({e.track_id for e in events if e.type == "line_cross"}) == 3
    assert most > 0.03  # the check had something to measure
