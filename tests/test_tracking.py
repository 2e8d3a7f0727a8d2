"""Tracking: objects keep their ids through crossings (synthetic sequences and the sample clip end to end), the
ByteTrack score stages, track ends, and the `[track]` settings."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from seg_video.api import run_config
from seg_video.cli.main import main
from seg_video.core.colors import instance_color
from seg_video.core.config import TrackSettings
from seg_video.core.errors import ConfigError
from seg_video.core.types import ClassTable, Segmentation, boxes_from_masks
from seg_video.io.sample import SampleScene
from seg_video.stages.track import Tracker

H, W = 160, 320
THINGS = ClassTable(("thing", "other"))
Mask = npt.NDArray[np.bool_]


def disc(x: float, y: float, radius: int) -> Mask:
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (round(x), round(y)), radius, 1, thickness=-1)
    return mask.astype(bool)


def frame(masks: list[Mask], scores: list[float] | None = None, classes: list[int] | None = None) -> Segmentation:
    """A segmentation of the non-empty `masks` (boxes from the masks)."""
    stack = np.array(masks, bool).reshape(-1, H, W)
    return Segmentation(H, W, THINGS, boxes=boxes_from_masks(stack), scores=scores or [0.9] * len(masks),
                        class_ids=classes or [0] * len(masks), masks=stack)


def crossing(steps: int, tilt: int, radii: tuple[int, int], a_in_front: bool,
             jitter: int = 0) -> list[list[Mask]]:
    """Two discs crossing the frame in opposite directions (`tilt` px up/down), one hiding the other where they
    meet; each frame's visible masks [a, b], moved by up to `jitter` px at random (a detector's wobble)."""
    rng = np.random.default_rng(steps + tilt)
    frames = []
    for i in range(steps):
        t = i / (steps - 1)
        a = disc(30 + 260 * t, 80 - tilt + 2 * tilt * t, radii[0])
        b = disc(290 - 260 * t, 80 + tilt - 2 * tilt * t, radii[1])
        if a_in_front:
            b &= ~a
        else:
            a &= ~b
        if jitter:
            a, b = (np.roll(m, tuple(rng.integers(-jitter, jitter + 1, size=2)), axis=(0, 1)) for m in (a, b))
        frames.append([a, b])
    return frames


def id_switches(tracker: Tracker, frames: list[list[Mask]], score_of_visible: bool = False) -> int:
    """Changes of the id found on each object from one frame it is seen with an id to the next."""
    last: dict[int, int] = {}
    switches = 0
    full = [max(masks[k].sum() for masks in frames) for k in range(2)]
    for index, masks in enumerate(frames):
        seen = [k for k, m in enumerate(masks) if m.sum() > 30]
        scores = [0.9 if masks[k].sum() > 0.5 * full[k] or not score_of_visible else 0.3 for k in seen]
        out = tracker.update(frame([masks[k] for k in seen], scores), index)
        for k in seen:
            ids = [int(out.track_ids[j]) for j in range(len(out)) if np.array_equal(out.full_masks()[j], masks[k])]
            if ids and ids[0]:  # 0: not confirmed yet
                switches += k in last and last[k] != ids[0]
                last[k] = ids[0]
    return switches


@pytest.mark.parametrize("iou", ["mask", "box"])
@pytest.mark.parametrize(("tilt", "radii", "a_in_front"), [
    (0, (16, 16), True), (0, (12, 22), True), (0, (22, 12), False), (8, (16, 16), False), (20, (12, 22), False),
    (20, (22, 12), True)])
def test_two_objects_crossing_keep_their_ids(iou: str, tilt: int, radii: tuple[int, int], a_in_front: bool) -> None:
    # Same class, same speed; at tilt 0 one is hidden entirely behind the other for some frames.
    frames = crossing(60, tilt, radii, a_in_front)
    assert id_switches(Tracker(TrackSettings(iou=iou)), frames) == 0
    assert id_switches(Tracker(TrackSettings(iou=iou)), frames, score_of_visible=True) == 0


def test_id_switches_stay_rare_with_jittery_masks() -> None:
    runs = [crossing(80, tilt, radii, front, jitter=2) for tilt in (0, 8, 20) for radii in ((16, 16), (12, 22))
            for front in (True, False)]
    switches = sum(id_switches(Tracker(TrackSettings(iou=iou)), frames) for frames in runs for iou in ("mask", "box"))
    assert switches <= 1, f"{switches} id switches in {2 * len(runs)} crossings"


def test_low_scores_match_after_high_ones_and_start_tracks_above_low_score() -> None:
    tracker = Tracker(TrackSettings(confirm=1))  # low_score 0: every instance the engine reports is kept
    tracker.update(frame([disc(100, 80, 20)], [0.9]), 0)
    # The low-scored instance overlaps the track most, but the high-scored one chooses first.
    out = tracker.update(frame([disc(102, 80, 20), disc(112, 80, 20), disc(40, 30, 10)], [0.3, 0.9, 0.05]), 1)
    assert list(out.track_ids) == [2, 1, 3]

    byte = Tracker(TrackSettings(high_score=0.5, low_score=0.5, confirm=1))  # ByteTrack's rule
    byte.update(frame([disc(100, 80, 20)], [0.9]), 0)
    out = byte.update(frame([disc(103, 80, 20), disc(250, 80, 20)], [0.3, 0.3]), 1)
    assert list(out.track_ids) == [1]  # the low-scored instance continuing track 1 stays, the other goes
    assert out.masks is not None and np.array_equal(out.full_masks()[0], disc(103, 80, 20))


def test_tracks_end_after_max_age_and_classes_never_mix() -> None:
    tracker = Tracker(TrackSettings(max_age=3, confirm=1))
    assert list(tracker.update(frame([disc(100, 80, 20)]), 0).track_ids) == [1]
    assert list(tracker.update(frame([disc(100, 80, 20)]), 3).track_ids) == [1]  # unseen for 2 frames: resumed
    assert list(tracker.update(frame([disc(100, 80, 20)]), 8).track_ids) == [2]  # unseen for 4: a new object
    assert list(tracker.update(frame([disc(100, 80, 20)], classes=[1]), 9).track_ids) == [3]


def test_new_objects_get_an_id_only_once_confirmed_and_flickers_never_do() -> None:
    tracker = Tracker(TrackSettings(confirm=3))
    flicker = disc(250, 40, 8)
    ids = [tracker.update(frame([disc(40 + 4 * i, 80, 16)] + ([flicker] if i == 1 else [])), i).track_ids.tolist()
           for i in range(5)]
    assert ids == [[0], [0, 0], [1], [1], [1]]  # the flicker, seen once, left no track to number
    assert tracker.update(frame([disc(250, 40, 8)]), 5).track_ids.tolist() == [0]  # a new object starts at 0 again


def test_an_object_hidden_behind_a_pillar_for_half_a_second_keeps_its_id() -> None:
    """10 fps: a disc walks behind a still occluder (no instance there), hidden entirely for 5 frames, partly
    before and after; it comes out as a sliver first."""
    pillar = np.zeros((H, W), bool)
    pillar[:, 140:220] = True
    tracker = Tracker(TrackSettings())
    seen = []
    for index in range(30):
        visible = disc(40 + 8 * index, 80, 16) & ~pillar
        if visible.sum() < 20:
            assert tracker.update(frame([]), index, index / 10).track_ids.tolist() == []
            continue
        seen.append(int(tracker.update(frame([visible]), index, index / 10).track_ids[0]))
    hidden = 30 - len(seen)
    assert hidden >= 5 and seen[2:] == [1] * (len(seen) - 2), seen  # confirmed at its third frame, then kept


def test_lost_tracks_wait_lost_seconds_at_the_videos_frame_rate() -> None:
    for fps, kept in ((10, False), (30, True)):  # unseen for 15 frames: 1.5 s at 10 fps, half a second at 30
        tracker = Tracker(TrackSettings(confirm=1, lost_seconds=1.0))
        tracker.update(frame([disc(100, 80, 20)]), 0, 0.0)
        tracker.update(frame([disc(100, 80, 20)]), 1, 1 / fps)
        resumed = tracker.update(frame([disc(100, 80, 20)]), 17, 17 / fps).track_ids.tolist()
        assert resumed == ([1] if kept else [2]), fps


def test_motion_is_predicted_across_skipped_frames() -> None:
    """A live source drops frames: a fast object is expected where its velocity takes it, not where it was."""
    tracker = Tracker(TrackSettings())
    for index in range(4):  # 12 px per frame
        tracker.update(frame([disc(40 + 12 * index, 80, 10)]), index)
    far = tracker.update(frame([disc(40 + 12 * 7, 80, 10)]), 7)  # frames 4..6 dropped: 36 px further
    assert list(far.track_ids) == [1]


def test_track_settings_come_from_config_and_are_checked() -> None:
    config = run_config(config={"track": {"iou": "box", "max_age": 5}}, sections={"track": {"high_score": 0.6}})
    assert config.track == TrackSettings(iou="box", max_age=5, high_score=0.6)
    assert run_config().track.enabled
    for bad in ({"low_score": 0.7, "high_score": 0.6}, {"match_iou": 0.0}, {"max_age": -1}, {"iou": "iou"}):
        with pytest.raises(ConfigError, match="track"):
            run_config(config={"track": bad})


def test_the_sample_clip_keeps_every_object_id_and_colour(sample_clip: Path, tmp_path: Path) -> None:
    """End to end: objects of the sample clip cross (and touch: the motion engine then sees one region); the label
    maps give each object one track id wherever it is seen on its own, in the video's colour for that id."""
    tracked, plain = tmp_path / "tracked", tmp_path / "plain"
    assert main([str(sample_clip), "--no-video", "--masks-dir", str(tracked), "--quiet"]) == 0
    assert main([str(sample_clip), "--no-video", "--masks-dir", str(plain), "--no-track", "--quiet"]) == 0

    ids = object_ids(tracked)
    assert all(len(seen) >= 25 for seen in ids.values())  # of 45 frames after warm-up: alone, and with an id
    assert {k: len(set(seen)) for k, seen in ids.items()} == {0: 1, 1: 1, 2: 1}, ids
    assert sum(len(set(seen)) - 1 for seen in object_ids(plain).values()) > 0  # untracked numbering changes
    with Image.open(tracked / "000030.png") as picture:
        palette = np.array(picture.getpalette()[:768], np.uint8).reshape(256, 3)
    for seen in ids.values():
        assert tuple(palette[seen[0]][::-1]) == instance_color(seen[0])  # RGB palette, BGR renderer colour


def object_ids(folder: Path, width: int = 320, height: int = 240, frames: int = 60) -> dict[int, list[int]]:
    """The track id on each sample-scene object in each frame where one instance covers it alone."""
    scene = SampleScene(width, height, 30.0)
    ids: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for index in range(frames):
        with Image.open(folder / f"{index:06d}.png") as picture:
            labels = np.asarray(picture)
        masks = scene.render(index)[1]
        for k, mask in enumerate(masks):
            if mask.sum() < 50:
                continue
            value = int(np.bincount(labels[mask]).argmax())
            merged = any((labels[other] == value).mean() > 0.2 for j, other in enumerate(masks)
                         if j != k and other.sum() >= 50)
            if value and not merged:
                ids[k].append(value)
    return ids
