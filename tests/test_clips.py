"""Clips on events (`seg_video.io.clips`): 10 s of generated 30 fps frames, each carrying its index as a bar code,
are encoded for real with PyAV; events at known times must give clips that decode to exactly the frames from the
keyframe at or before (event − pre-roll) to (last event + post-roll)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from seg_video.core.types import MILLISECONDS, Event, EventType, Frame
from seg_video.io.clips import ClipSettings, ClipTrigger, EventClips, parse_trigger

FPS = 30
WIDTH, HEIGHT = 320, 180
BITS = 10
"""Bits of the bar code: frame indexes up to 1023."""
BAR = WIDTH // BITS
ORIGIN = time.monotonic() - 1000.0
"""Capture clock of the first generated frame (fixed, so that two runs name their clips alike)."""


def picture(index: int) -> npt.NDArray[np.uint8]:
    """A BGR frame whose top half is `index` as a bar code (most significant bit left: white 1, black 0) and whose
    bottom half is a moving gradient (something to encode)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            image[: HEIGHT // 2, bit * BAR:(bit + 1) * BAR] = 255
    ramp = (np.arange(WIDTH, dtype=np.int64) * 2 + index * 4) % 256
    image[HEIGHT // 2:, :, 1] = ramp.astype(np.uint8)
    return image


def read_index(image: npt.NDArray[np.uint8]) -> int:
    """The index a decoded `picture` carries."""
    index = 0
    for bit in range(BITS):
        block = image[10: HEIGHT // 2 - 10, bit * BAR + 6:(bit + 1) * BAR - 6]
        index = index << 1 | int(block.mean() > 128)
    return index


FRAMES = [picture(index) for index in range(10 * FPS)]


def frame(index: int) -> Frame:
    """The index-th frame as a live source gives it: pts in milliseconds since the first, its capture time."""
    return Frame(index=index, image=FRAMES[index], pts=round(index * 1000 / FPS), time_base=MILLISECONDS,
                 source_id="cam", captured_at=ORIGIN + index / FPS)


def event(index: int, kind: EventType = "line_cross", name: str = "door") -> Event:
    """An event of the index-th frame (its time: the frame's pts in seconds)."""
    seconds = round(index * 1000 / FPS) / 1000  # the frame's pts, in seconds
    if kind == "line_cross":
        return Event(type=kind, frame=index, time=seconds, source="cam", track_id=1, class_name="person",
                     line=name, direction="in")
    return Event(type=kind, frame=index, time=seconds, source="cam", track_id=1, class_name="person", zone=name)


def run(folder: Path, events: dict[int, Sequence[Event]], *, triggers: Iterable[ClipTrigger] = (ClipTrigger(
        "line_cross"),), pre: float = 1.0, post: float = 1.0, max_clip: float = 60.0, frames: int = 10 * FPS,
        source: str = "cam") -> EventClips:
    """Feed `frames` frames into a new `EventClips`, each frame's events right after it, then close it."""
    clips = EventClips(folder, list(triggers), ClipSettings(pre, post, max_clip), source=source, fps=FPS)
    for index in range(frames):
        clips.write(frame(index))
        for each in events.get(index, ()):
            clips.event(each)
    clips.close()
    return clips


def decoded(path: Path) -> list[tuple[int, float, bool]]:
    """Each frame of a clip: the index it carries, its time (s) and whether it is a keyframe."""
    with av.open(str(path)) as container:
        return [(read_index(picture.to_ndarray(format="bgr24")), float(picture.time or 0.0), picture.key_frame)
                for picture in container.decode(video=0)]


def assert_holds(path: Path, first: int, last: int) -> None:
    """The clip plays frames `first`..`last` in order, starting at a keyframe at time 0, each at its own time."""
    shown = decoded(path)
    assert [index for index, _, _ in shown] == list(range(first, last + 1))
    assert shown[0][2], "a clip starts with a keyframe"
    for index, seconds, _ in shown:
        assert seconds == pytest.approx((index - first) / FPS, abs=0.002)


def test_bar_code_survives_encoding(tmp_path: Path) -> None:
    """The helper's bar code reads back each frame's index after H.264 (what every other test relies on)."""
    clips = run(tmp_path, {0: [event(0)]}, pre=0.0, post=10.0)
    assert_holds(clips.clips[0], 0, 10 * FPS - 1)


def test_clip_holds_pre_roll_and_post_roll(tmp_path: Path) -> None:
    """An event at 5 s with 2 s of pre-roll and post-roll: the keyframe at 3 s (keyframes every second) to 7 s."""
    clips = run(tmp_path, {150: [event(150)]}, pre=2.0, post=2.0)
    assert len(clips.clips) == 1
    assert_holds(clips.clips[0], 90, 210)
    assert clips.clips[0].name.startswith("cam-line_cross-door-")


def test_pre_roll_starts_at_the_keyframe_before(tmp_path: Path) -> None:
    """A pre-roll that does not fall on a keyframe reaches back to the one before it: event at 5.5 s, 2 s → 3 s."""
    clips = run(tmp_path, {165: [event(165)]}, pre=2.0, post=0.5)
    assert_holds(clips.clips[0], 90, 180)


def test_events_close_together_make_one_clip(tmp_path: Path) -> None:
    """A second event during a clip extends it: events at 3 s and 4.5 s give one clip from 2 s to 6.5 s."""
    clips = run(tmp_path, {90: [event(90)], 135: [event(135)]}, pre=1.0, post=2.0)
    assert len(clips.clips) == 1
    assert_holds(clips.clips[0], 60, 195)


def test_events_apart_make_separate_clips(tmp_path: Path) -> None:
    """Events further apart than the post-roll plus the next pre-roll give a clip each, without clobbering."""
    clips = run(tmp_path, {60: [event(60)], 240: [event(240)]}, pre=1.0, post=1.0)
    assert len(clips.clips) == 2 and len(set(clips.clips)) == 2
    assert_holds(clips.clips[0], 30, 90)
    assert_holds(clips.clips[1], 210, 270)


def test_triggers_filter_events(tmp_path: Path) -> None:
    """Only events of a trigger's type (and its line or zone, when it names one) open clips."""
    events = {60: [event(60, "line_cross", "window")], 120: [event(120, "zone_enter", "hall")],
              210: [event(210, "line_cross", "door")], 255: [event(255, "zone_exit", "hall")]}
    clips = run(tmp_path, events, triggers=[parse_trigger("line_cross:door"), parse_trigger("zone_enter")])
    assert len(clips.clips) == 2
    assert clips.clips[0].name.startswith("cam-zone_enter-hall-")
    assert_holds(clips.clips[0], 90, 150)
    assert clips.clips[1].name.startswith("cam-line_cross-door-")
    assert_holds(clips.clips[1], 180, 240)
    assert sorted(tmp_path.iterdir()) == sorted(clips.clips)


def test_event_after_later_frames_still_gets_its_pre_roll(tmp_path: Path) -> None:
    """An event that arrives late (its frame was encoded 1.5 s earlier) gets the clip its time calls for."""
    clips = run(tmp_path, {195: [event(150)]}, pre=2.0, post=1.0)
    assert_holds(clips.clips[0], 90, 180)


def test_close_mid_clip_leaves_a_playable_file(tmp_path: Path) -> None:
    """The source ends 1 s into a 5 s post-roll: `close` finalizes the clip with every frame it had."""
    clips = run(tmp_path, {270: [event(270)]}, pre=1.0, post=5.0)
    assert len(clips.clips) == 1
    assert_holds(clips.clips[0], 240, 10 * FPS - 1)


def test_max_clip_bounds_a_clip(tmp_path: Path) -> None:
    """Events every half second keep extending the clip, but never past `max_clip` seconds; the next event then
    starts another clip, so every event is in a clip."""
    events = {index: [event(index)] for index in range(30, 10 * FPS, 15)}
    clips = run(tmp_path, events, pre=1.0, post=1.0, max_clip=3.0)
    assert len(clips.clips) >= 3
    covered: set[int] = set()
    for path in clips.clips:
        shown = [index for index, _, _ in decoded(path)]
        assert len(shown) <= 3 * FPS + 1
        covered.update(shown)
    assert covered.issuperset(events)


def test_names_never_clobber(tmp_path: Path) -> None:
    """Two runs of the same source and events in one folder: the second run's clips get new names and the first
    run's files are left as they were."""
    first = run(tmp_path, {150: [event(150)]}, frames=200)
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in first.clips}
    second = run(tmp_path, {150: [event(150)]}, frames=200)
    assert len(second.clips) == 1 and second.clips[0] not in before
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in first.clips} == before
    assert_holds(second.clips[0], 120, 180)


def test_source_name_in_file_names_has_no_credentials(tmp_path: Path) -> None:
    """A stream URL names its clips without its password, in characters any file system takes."""
    clips = run(tmp_path, {30: [event(30)]}, frames=90, source="rtsp://admin:hunter2@cam.local:554/live/1")
    name = clips.clips[0].name
    assert "hunter2" not in name and "admin" not in name
    assert name.startswith("rtsp_cam.local_554_live_1-line_cross-door-")


def test_keyframes_follow_source_time(tmp_path: Path) -> None:
    """A source slower than its stated rate (10 fps said as 30) still gets a keyframe every second of its time,
    so the pre-roll is as long as asked, not three times longer."""
    clips = EventClips(tmp_path, [ClipTrigger("line_cross")], ClipSettings(pre_roll=2.0, post_roll=0.0),
                       source="cam", fps=FPS)
    for index in range(0, 10 * FPS, 3):  # every third frame: 10 fps
        clips.write(frame(index))
    clips.event(event(210))
    clips.close()
    shown = decoded(clips.clips[0])
    assert [index for index, _, _ in shown] == list(range(150, 211, 3))
    keys = [index for index, _, key in shown if key]
    assert keys == [150, 180, 210]


def test_nothing_written_without_events(tmp_path: Path) -> None:
    """Frames alone are encoded into the ring only: no file appears, and close has nothing to finish."""
    clips = run(tmp_path, {}, frames=60)
    assert clips.clips == [] and list(tmp_path.iterdir()) == []


def test_event_before_any_frame_and_close_without_frames(tmp_path: Path) -> None:
    """An event before the first frame has nothing to save (no file); closing a source that never gave a frame is
    fine, and so is closing twice."""
    clips = EventClips(tmp_path, [ClipTrigger("line_cross")], ClipSettings(), source="cam", fps=None)
    clips.event(event(0))
    clips.close()
    clips.close()
    assert clips.clips == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("zone_enter", ClipTrigger("zone_enter")),
    ("line_cross:door", ClipTrigger("line_cross", "door")),
    (" zone_occupancy:hall ", ClipTrigger("zone_occupancy", "hall")),
])
def test_parse_trigger(text: str, expected: ClipTrigger) -> None:
    """`TYPE` and `TYPE:NAME` forms."""
    assert parse_trigger(text) == expected


@pytest.mark.parametrize("text", ["", "door", "line_crossing:door", "line_cross:", "zone_enter: "])
def test_parse_trigger_refuses(text: str) -> None:
    """Anything else is a one-line error that names the text."""
    with pytest.raises(ValueError, match="clip trigger") as caught:
        parse_trigger(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("settings", [ClipSettings(pre_roll=-1.0), ClipSettings(post_roll=float("nan")),
                                      ClipSettings(pre_roll=5.0, max_clip=5.5)])
def test_settings_refused(settings: ClipSettings, tmp_path: Path) -> None:
    """Negative or non-finite rolls, and a limit too short to reach the event, are refused up front."""
    with pytest.raises(ValueError):
        EventClips(tmp_path, [ClipTrigger("zone_enter")], settings, source="cam", fps=FPS)
