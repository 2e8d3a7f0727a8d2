"""The Python API as a program uses it: `segment`, `annotate`, `load_engine`, `draw`, and the README's examples."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import av
import cv2
import numpy as np
import pytest
from live_helpers import UdpStream
from test_readme import ROOT

import seg_video
from seg_video import ClassTable, Engine, Frame, Segmentation


def pipeline_threads() -> list[str]:
    """Names of the threads alive now besides the main one and pytest's own."""
    return sorted(t.name for t in threading.enumerate() if t is not threading.main_thread() and t.daemon)


def wait_for_no_threads(baseline: Sequence[str], seconds: float) -> float:
    """Seconds until only the `baseline` threads are left; fails after `seconds`."""
    started = time.monotonic()
    while pipeline_threads() != sorted(baseline):
        if time.monotonic() - started > seconds:
            pytest.fail(f"threads still running after {seconds} s: {pipeline_threads()}")
        time.sleep(0.01)
    return time.monotonic() - started


class Halves(Engine):
    """One instance per frame: the left half (an engine defined by a program, passed as an instance)."""

    kind: ClassVar[Literal["instance", "semantic"]] = "instance"

    def __init__(self, fail_at: int = -1) -> None:
        self.fail_at = fail_at

    @property
    def classes(self) -> ClassTable:
        return ClassTable(("left",))

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        results = []
        for frame in frames:
            if frame.index == self.fail_at:
                raise RuntimeError(f"no half at frame {frame.index}")
            height, width = frame.size
            masks = np.zeros((1, height, width), bool)
            masks[0, :, : width // 2] = True
            results.append(Segmentation(height, width, self.classes, boxes=[[0, 0, width // 2, height]], scores=[1.0],
                                        class_ids=[0], masks=masks))
        return results


def test_segment_yields_every_frame_in_order_tracked(sample_clip: Path) -> None:
    seen = [(frame.index, seg) for frame, seg in seg_video.segment(sample_clip, engine="motion")]
    assert [index for index, _ in seen] == list(range(60))
    assert all(seg.track_ids is not None and len(seg.track_ids) == len(seg) for _, seg in seen)
    assert sum(len(seg) for _, seg in seen) > 60  # the sample's shapes move: motion finds them
    assert len({int(i) for _, seg in seen for i in seg.track_ids}) < 10  # ids persist, not one per detection


def open_files() -> set[str]:
    """Where this process's file descriptors point now."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            found.add(os.readlink(fd))
    return found


def test_breaking_out_of_the_loop_stops_every_thread_within_a_second(sample_clip: Path) -> None:
    before = pipeline_threads()
    for frame, _ in seg_video.segment(str(sample_clip), engine="motion"):
        if frame.index == 3:
            assert len(pipeline_threads()) > len(before) + 4  # capture, preprocess, infer, track, write, runner
            assert str(sample_clip) in open_files()
            break
    assert wait_for_no_threads(before, 1.0) < 1.0
    assert str(sample_clip) not in open_files()  # the source released


def test_close_stops_a_held_iterator_and_ends_it(sample_clip: Path) -> None:
    before = pipeline_threads()
    frames = seg_video.segment(sample_clip, engine="threshold")
    frame, seg = next(frames)
    assert frame.index == 0 and isinstance(seg, Segmentation)
    frames.close()
    assert wait_for_no_threads(before, 1.0) < 1.0
    with pytest.raises(StopIteration):
        next(frames)
    with seg_video.segment(sample_clip, max_frames=5) as limited:
        assert [frame.index for frame, _ in limited] == [0, 1, 2, 3, 4]
    wait_for_no_threads(before, 1.0)


def test_errors_are_typed_not_system_exit(sample_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(seg_video.MediaError, match="file not found"):
        seg_video.segment(tmp_path / "missing.mp4")
    with pytest.raises(seg_video.ConfigError, match="unknown engine 'nope'"):
        seg_video.segment(sample_clip, engine="nope")
    with pytest.raises(seg_video.ConfigError, match=r"engine\.motion\.bogus"):
        seg_video.segment(sample_clip, engine="motion", bogus=1)
    with pytest.raises(seg_video.ConfigError, match=r"render: alpha must be 0\.\.1"):
        seg_video.annotate(sample_clip, tmp_path / "out.mp4", config={"render": {"alpha": 2.0}})
    with pytest.raises(seg_video.UsageError, match="belong to load_engine"):
        seg_video.segment(sample_clip, engine=Halves(), k=3)
    assert issubclass(seg_video.StageFailed, seg_video.SegVideoError)


def test_a_failing_engine_surfaces_as_stage_failed_after_the_frames_before(sample_clip: Path) -> None:
    before = pipeline_threads()
    got = []
    with pytest.raises(seg_video.StageFailed, match="infer stage failed at frame 7") as failure:
        for frame, seg in seg_video.segment(sample_clip, engine=Halves(fail_at=7)):
            got.append(frame.index)
            assert seg.classes.names == ("left",) and len(seg) == 1
    assert isinstance(failure.value.error, RuntimeError)
    assert got == list(range(len(got))) and len(got) <= 7
    wait_for_no_threads(before, 1.0)


def test_annotate_writes_the_video_and_says_what_it_did(sample_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    summary = seg_video.annotate(sample_clip, out, engine="kmeans", k=3, coco=tmp_path / "out.json")
    assert (summary.frames, summary.output) == (60, out) and summary.fps > 0
    with av.open(str(out)) as video:
        assert sum(1 for _ in video.decode(video=0)) == 60
    assert (tmp_path / "out.json").stat().st_size > 0
    with pytest.raises(seg_video.UsageError, match="output exists"):
        seg_video.annotate(sample_clip, out)
    with pytest.raises(seg_video.UsageError, match="is the input file"):
        seg_video.annotate(sample_clip, sample_clip, overwrite=True)
    assert seg_video.annotate(sample_clip, out, overwrite=True, max_frames=10).frames == 10


class ThreadsSeen(Halves):
    """Halves, noting OpenCV's thread count at each inference."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        self.seen.add(cv2.getNumThreads())
        return super().infer(frames, prepared)


def test_a_file_run_gives_opencv_the_threads_its_stages_leave_and_restores_them(sample_clip: Path,
                                                                                 tmp_path: Path) -> None:
    before = cv2.getNumThreads()
    automatic = ThreadsSeen()
    seg_video.annotate(sample_clip, tmp_path / "auto.mp4", engine=automatic, max_frames=5)
    assert len(automatic.seen) == 1 and 1 <= min(automatic.seen) < max(before, 2)
    assert cv2.getNumThreads() == before
    chosen = ThreadsSeen()
    seg_video.annotate(sample_clip, tmp_path / "set.mp4", engine=chosen, max_frames=5,
                       config={"pipeline": {"opencv_threads": 3}})
    assert chosen.seen == {3} and cv2.getNumThreads() == before
    with pytest.raises(seg_video.ConfigError, match=r"opencv_threads must be 0 \(automatic\) or 1\.\.1024; got -1"):
        seg_video.annotate(sample_clip, tmp_path / "bad.mp4", engine="motion",
                           config={"pipeline": {"opencv_threads": -1}})


def test_a_loaded_engine_is_reused_and_reset_between_runs(sample_clip: Path, tmp_path: Path) -> None:
    def boxes(run: seg_video.Segments) -> list[list[float]]:
        return [seg.boxes.ravel().tolist() for _, seg in run]

    fresh = boxes(seg_video.segment(sample_clip, engine="motion", max_frames=30))
    with seg_video.load_engine("motion") as engine:
        first = boxes(seg_video.segment(sample_clip, engine=engine, max_frames=30))
        second = boxes(seg_video.segment(sample_clip, engine=engine, max_frames=30))  # background model reset
        summary = seg_video.annotate(sample_clip, tmp_path / "out.mp4", engine=engine, max_frames=30)
    assert first == second == fresh
    assert summary.frames == 30


def test_draw_returns_a_new_annotated_picture() -> None:
    image = np.full((120, 160, 3), 80, np.uint8)
    seg = Halves().infer([Frame(index=0, image=image)], [image])[0]
    drawn = seg_video.draw(image, seg, alpha=0.5, labels=False)
    assert drawn.shape == image.shape and drawn is not image
    assert np.all(image == 80)  # the input is kept
    assert np.any(drawn[:, :80] != 80) and np.all(drawn[30:90, 100:150] == 80)  # only the left half is painted
    with pytest.raises(seg_video.ConfigError, match=r"render\.colour"):
        seg_video.draw(image, seg, colour="red")


def test_segment_reads_a_network_stream_live_and_stops_when_left(udp_stream: UdpStream) -> None:
    before = pipeline_threads()
    frames = []
    for frame, seg in seg_video.segment(udp_stream.url, engine="motion", config={"live": {"read_timeout": 2.0}}):
        frames.append(frame)
        assert seg.track_ids is not None
        if len(frames) == 20:
            break
    assert [f.index for f in frames] == sorted(f.index for f in frames)  # newest wins: indices rise, may skip
    assert frames[-1].captured_at - frames[0].captured_at > 0.3  # real time, not a backlog
    assert wait_for_no_threads(before, 1.0) < 1.0


def python_api_examples() -> list[str]:
    """The ```python blocks of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_readme_python_examples_run(sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    examples = python_api_examples()
    assert len(examples) >= 3
    monkeypatch.chdir(tmp_path)
    os.symlink(sample_clip, tmp_path / "clip.mp4")
    for example in examples:
        exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == [line for line in printed[:3] if line.split()[0].isdigit()]  # frame lines come first
