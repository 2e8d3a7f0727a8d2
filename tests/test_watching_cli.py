"""Watching from the command line, end to end: a clip of walkers on known paths through `seg-video IN OUT` with
a counting line, a zone, events as JSON Lines, privacy masking and a heatmap; and the usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from seg_video.cli.main import main
from seg_video.io.walkers import Walker, write_walkers_clip

WIDTH, HEIGHT, FPS = 320, 240, 30.0
WALKERS = [Walker(((70, 45), (70, 215)), speed=70, start=0.8),
           Walker(((150, 45), (150, 215)), speed=60, start=1.0, colour=(40, 190, 60)),
           Walker(((230, 215), (230, 45)), speed=70, start=0.9, colour=(220, 110, 30))]
"""Two go down across the door (in), one goes up (out)."""


@pytest.fixture(scope="module")
def walkers_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = tmp_path_factory.mktemp("walkers") / "walkers.mp4"
    write_walkers_clip(clip, WALKERS, seconds=3.8, size=(WIDTH, HEIGHT), fps=FPS)
    return clip


def test_a_file_run_counts_the_walkers_and_writes_its_events_heatmap_and_masked_video(
        walkers_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, events, heat = tmp_path / "out.mp4", tmp_path / "events.jsonl", tmp_path / "heat.png"

    code = main([str(walkers_clip), str(out), "--engine", "motion", "--line", "door:20,120,280,120",
                 "--zone", "low:40,130,280,130,280,230,40,230", "--events", str(events), "--heatmap", str(heat),
                 "--blur", "moving", "--blur-style", "fill"])

    said = capsys.readouterr().err
    assert code == 0, said
    assert "door in 2 out 1" in said and f"{events}: " in said
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    crossings = [(e["direction"], e["class"]) for e in lines if e["type"] == "line_cross"]
    assert sorted(crossings) == [("in", "moving"), ("in", "moving"), ("out", "moving")]
    assert all(set(e) == {"type", "line", "direction", "track_id", "class", "frame", "time", "source"}
               for e in lines if e["type"] == "line_cross")
    entered = {e["track_id"] for e in lines if e["type"] == "zone_enter"}
    assert len(entered) == 3 and {e["track_id"] for e in lines if e["type"] == "zone_exit"} <= entered
    assert any(e["type"] == "zone_occupancy" and e["occupancy"] > 0 for e in lines)
    picture = cv2.imread(str(heat))
    assert picture is not None and picture.shape == (HEIGHT, WIDTH, 3)
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == round(3.8 * FPS)


@pytest.mark.parametrize(("flags", "complaint"), [
    (["--line", "door:1,2,3"], "a line is NAME:X1,Y1,X2,Y2"),
    (["--line", "door:0,0,10,10", "--line", "door:5,5,9,9"], "two lines are named 'door'"),
    (["--blur", "persn"], "persn"),
    (["--heatmap", "heat.jpg"], "--heatmap writes a PNG"),
    (["--webhook", "ftp://host/x"], "webhook"),
    (["--clips", "clips"], "--clips works on live sources"),
])
def test_watching_usage_errors_are_one_line(walkers_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            flags: list[str], complaint: str) -> None:
    code = main([str(walkers_clip), str(tmp_path / "out.mp4"), "--engine", "motion", *flags])

    said = capsys.readouterr().err.strip()
    assert code == 2 and said.count("\n") == 0 and complaint in said, said
    assert not (tmp_path / "out.mp4").exists()


def test_a_live_run_counts_too_and_saves_a_clip_around_each_crossing(walkers_clip: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The clip played as a live source (at its own rate): the same counts, events as they happen, and an MP4
    holding a second before and after each crossing, from the annotated frames."""
    events, clips = tmp_path / "events.jsonl", tmp_path / "clips"

    code = main([str(walkers_clip), "--serve", "0", "--output", str(tmp_path / "rec.mp4"), "--engine", "motion",
                 "--line", "door:20,120,280,120", "--events", str(events), "--clips", str(clips),
                 "--clip-on", "line_cross:door", "--pre-roll", "1", "--post-roll", "1"])

    said = capsys.readouterr().err
    assert code == 0, said
    assert "door in 2 out 1" in said
    crossings = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted(e["direction"] for e in crossings if e["type"] == "line_cross") == ["in", "in", "out"]
    made = sorted(clips.glob("*.mp4"))
    assert made, "a clip around the crossings"
    for clip in made:
        with av.open(str(clip)) as container:
            times = [float(frame.time) for frame in container.decode(video=0)]
        assert len(times) >= 45 and times[0] == 0.0, "a second of pre-roll and one of post-roll at least"
        assert np.all(np.diff(times) > 0)


def test_the_python_api_counts_with_lines_and_zones(walkers_clip: Path) -> None:
    """Item 7: lines and zones as objects over `seg_video.segment`'s tracked segmentations, without the CLI."""
    import seg_video

    watch = seg_video.Watch([seg_video.Line("door", (20, 120), (280, 120))],
                            [seg_video.Zone("low", ((40, 130), (280, 130), (280, 230), (40, 230)))], source="cam")
    events: list[seg_video.Event] = []
    for frame, segmentation in seg_video.segment(walkers_clip, engine="motion"):
        events += watch.update(frame, segmentation)

    assert watch.lines[0].total("in") == 2 and watch.lines[0].total("out") == 1
    assert {e.type for e in events} >= {"line_cross", "zone_enter", "zone_occupancy"}
    assert all(e.source == "cam" for e in events)
