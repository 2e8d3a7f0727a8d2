"""The window: composition and keys without a screen, the message on a headless machine, the real thing under Xvfb."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from live_helpers import need, wait_until

from seg_video.cli.main import main
from seg_video.core.runner import RunStats
from seg_video.io.sample import write_sample_clip
from seg_video.io.streams import SourceState
from seg_video.live.feed import Feed, FeedStats
from seg_video.live.window import DisplayError, Window, banner, check_display, compose, grid_shape

ROOT = Path(__file__).resolve().parent.parent


def stats(name: str, status: str = "live") -> FeedStats:
    return FeedStats(name=name, status=status, frames=10, fps=29.5, latency_p50_ms=120.0, latency_p95_ms=140.0,
                     dropped={"infer": 7}, gaps=[3.2])


def test_grid_of_tiles_with_overlays() -> None:
    assert [grid_shape(n) for n in (1, 2, 3, 4, 5, 9)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3)]
    big, small = np.full((360, 640, 3), 200, np.uint8), np.full((120, 160, 3), 200, np.uint8)
    down = stats("b", "reconnecting in 1.0 s (attempt 2): Connection refused")
    canvas = compose([big, small, None], [stats("a"), down, stats("c")])

    assert canvas.shape == (720, 1280, 3)  # 2×2 tiles of the largest frame's size
    assert stats("a").line() == "29.5 fps | latency 120 ms (p95 140) | 7 dropped | 1 reconnect (last gap 3.2 s)"
    tile_a, tile_b = canvas[:360, :640], canvas[:360, 640:]
    assert (tile_a[:40, :300] != 200).any() and (tile_a[200:, :] == 200).all()  # text top-left, picture below
    assert (tile_b[-30:, :100, 2] > tile_b[-30:, :100, 0]).any()  # a red banner for the reconnecting source
    assert (tile_b[180:300, 320] == 200).all() and (tile_b[180:300, 5] == 0).all()  # the small frame, letterboxed
    assert (canvas[360:, 640:] == 0).all()  # the grid's unused cell


def test_tiles_read_their_source_state() -> None:
    assert banner("live") is None and banner("playing") is None
    assert banner("connecting") == ("connecting...", (0, 130, 220))  # amber
    assert banner("ended") == ("ended", (90, 90, 90))  # grey
    assert banner("reconnecting in 2.0 s (attempt 3): timed out") == (
        "reconnecting in 2.0 s (attempt 3): timed out", (30, 30, 200))  # red

    picture = np.full((240, 320, 3), 200, np.uint8)
    canvas = compose([None, None, picture, None], [stats("a", "connecting"), stats("b", "live"),
                                                   stats("c", "ended"), stats("d", "ended")])
    connecting, connected, ended, never = canvas[:240, :320], canvas[:240, 320:], canvas[240:, :320], canvas[240:, 320:]
    for waiting in (connecting, connected, never):
        assert (waiting[:20, :40] > 200).any(), "the source's name, top-left"
        assert (waiting[105:135, 100:220] > 200).any(), "a word in the middle: connecting... (no picture: never)"
    assert (connecting[-25:] == 48).all() and (connected[-25:] == 48).all(), "no banner: the middle says it"
    for gone in (ended, never):
        assert (gone[-20:, :30] == 90).all(axis=2).any(), "a grey banner at the bottom: ended"
    assert (ended[100:200, 100:220] == 200).all(), "the last picture stays"


def test_keys_quit_pause_and_snapshot(tmp_path: Path) -> None:
    window = Window([Feed("cam", SourceState(), RunStats())], snapshot_dir=tmp_path)
    assert window.on_key(-1) and window.on_key(ord("x"))
    assert not window.on_key(ord("q")) and not window.on_key(27)
    assert window.on_key(ord(" ")) and window.paused
    assert window.on_key(ord(" ")) and not window.paused
    window.shown = np.full((90, 160, 3), 77, np.uint8)
    assert window.on_key(ord("s"))
    (saved,) = tmp_path.glob("seg-video-*.png")
    assert (cv2.imread(str(saved)) == 77).all()


def test_a_headless_machine_gets_a_clear_message(monkeypatch: pytest.MonkeyPatch, sample_clip: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(DisplayError, match=r"no display \(DISPLAY is not set\).*--serve"):
        check_display()
    assert main([str(sample_clip), "--display"]) == 2
    assert "cannot open a window: no display (DISPLAY is not set)" in capsys.readouterr().err

    monkeypatch.setenv("DISPLAY", ":9731")  # nothing listens there
    with pytest.raises(DisplayError, match="no X server answers at DISPLAY=:9731"):
        check_display()


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A virtual X display (Xvfb) for the test; yields its DISPLAY value."""
    server = subprocess.Popen([need("Xvfb", "xvfb"), "-displayfd", "1", "-screen", "0", "1280x800x24",
                               "-nolisten", "tcp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        yield f":{server.stdout.readline().strip()}"
    finally:
        server.terminate()
        server.wait(10)


def test_window_under_xvfb_snapshots_and_quits_with_keys(xvfb: str, tmp_path: Path) -> None:
    xdotool = need("xdotool", "xdotool")
    clip = write_sample_clip(tmp_path / "clip.mp4", seconds=10, width=160, height=120, audio=False)
    env = {**os.environ, "DISPLAY": xvfb, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "seg_video", str(clip), "--display", "--output", "rec.mp4",
                            "--engine", "threshold"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        window = subprocess.run([xdotool, "search", "--sync", "--name", "^seg-video$"], env=env, check=True,
                                capture_output=True, text=True, timeout=20).stdout.split()[0]
        time.sleep(0.5)
        subprocess.run([xdotool, "windowfocus", "--sync", window, "key", "s"], env=env, check=True, timeout=10)
        wait_until(lambda: any(tmp_path.glob("seg-video-*.png")), 5, "the snapshot")
        subprocess.run([xdotool, "key", "q"], env=env, check=True, timeout=10)
        assert run.wait(10) == 0
    finally:
        if run.poll() is None:
            run.kill()
    output = run.stdout.read() if run.stdout else ""

    (snapshot,) = tmp_path.glob("seg-video-*.png")
    shown = cv2.imread(str(snapshot))
    assert shown is not None and shown.shape == (120, 160, 3)
    with av.open(str(tmp_path / "rec.mp4")) as container:
        recorded = sum(1 for _ in container.decode(video=0))
    assert 0 < recorded < 300, "q ended the run early and the recording was finalized"
    assert "snapshot saved" in output and f"rec.mp4 ({recorded} frames)" in output
