"""Restreaming against real receivers: an `ffmpeg -rtsp_flags listen` RTSP server end (which records what it is
sent), one killed mid-run and one frozen with SIGSTOP, and an HLS folder read back with PyAV."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from live_helpers import free_port, need, scene_frames

from seg_video.core.types import Frame
from seg_video.io.restream import HLS_PLAYLIST, Restream, RestreamSettings, hls_dirs, rtsp_targets

FPS = 30.0
FAST = RestreamSettings(reconnect_max=1.0, io_timeout=1.0, close_timeout=2.0)
"""Quick to notice and retry, so each test stays short."""


def receiver(port: int, out: Path) -> subprocess.Popen[bytes]:
    """An RTSP server end on loopback that records the one stream published to it into `out` (NUT)."""
    return subprocess.Popen([need("ffmpeg", "ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-rtsp_flags", "listen",
                             "-i", f"rtsp://127.0.0.1:{port}/live", "-c", "copy", "-f", "nut", str(out)])


def frame_times(path: Path) -> list[float]:
    """Presentation times (s) of the video packets in `path`, in file order."""
    with av.open(str(path)) as container:
        return [float(p.pts * p.time_base) for p in container.demux(video=0) if p.size and p.pts is not None]


SCENE = [frame.image for frame in scene_frames(30, width=320, height=240)]


def scene(index: int) -> Frame:
    """A second of the sample scene, looped."""
    return Frame(index=index, image=SCENE[index % len(SCENE)])


def noise(index: int) -> Frame:
    """A picture no encoder can shrink (~50 kB per frame): fills a stalled receiver's socket buffers in seconds."""
    image = np.random.default_rng(index).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return Frame(index=index, image=image)


@dataclass
class Feeder:
    """Writes frames into a restream in real time at `FPS` (as captured), timing every `write` call."""

    restream: Restream
    pictures: Callable[[int], Frame] = scene
    written: int = 0
    slowest: float = 0.0

    def frames(self) -> Iterator[None]:
        """Write one frame per step, each stamped and written when it is due."""
        start = time.monotonic()
        while True:
            due = start + self.written / FPS
            time.sleep(max(0.0, due - time.monotonic()))
            frame = self.pictures(self.written)
            frame.captured_at = due
            began = time.monotonic()
            self.restream.write(frame)
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.written += 1
            yield

    def run(self, seconds: float) -> None:
        """Feed for `seconds`."""
        steps = self.frames()
        for _ in range(round(seconds * FPS)):
            next(steps)

    def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Feed until `condition` holds; fail naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        for _ in self.frames():
            if condition():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what} (status: {self.restream.status})")


def assert_spaced(times: list[float]) -> None:
    """Times rise, each step a whole number of frame intervals (drops skip frames) within a few ms."""
    steps = np.diff(times)
    assert (steps > 0).all(), times
    intervals = steps * FPS
    assert np.abs(intervals - np.round(intervals)).max() * 1000 / FPS < 4, np.round(steps, 4)
    assert np.median(steps) == pytest.approx(1 / FPS, abs=0.002)


def test_names_of_targets_and_folders() -> None:
    assert rtsp_targets("rtsp://u:p@host:8554/cam?x=1", 1) == ["rtsp://u:p@host:8554/cam?x=1"]
    assert rtsp_targets("rtsp://host:8554/cam/?x=1", 2) == ["rtsp://host:8554/cam-0?x=1", "rtsp://host:8554/cam-1?x=1"]
    assert rtsp_targets("rtsp://host", 2) == ["rtsp://host/stream-0", "rtsp://host/stream-1"]
    assert hls_dirs(Path("out"), 1) == [Path("out/0")]
    with pytest.raises(ValueError, match="reconnect_min"):
        RestreamSettings(reconnect_min=2, reconnect_max=1).validate()
    with pytest.raises(ValueError, match=r"not an rtsp:// .*\*\*\*@"):
        Restream("http://user:secret@host/x", fps=FPS)


def test_rtsp_frames_arrive_with_their_capture_times(tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "got.nut"
    server = receiver(port, out)
    try:
        restream = Restream(f"rtsp://127.0.0.1:{port}/live", fps=FPS, settings=FAST)
        feeder = Feeder(restream)
        feeder.run(3.0)
        restream.close()
        server.wait(15)
    finally:
        server.kill()
    times = frame_times(out)
    assert restream.sent >= 60  # the few before the relay connected were dropped
    assert restream.sent + restream.dropped == feeder.written
    assert restream.sent - 2 <= len(times) <= restream.sent
    assert_spaced(times[1:])  # the receiver stamps the first frame before it has the sender's clock
    assert feeder.slowest < 0.02


def test_a_vanished_receiver_is_retried_without_blocking(tmp_path: Path) -> None:
    port = free_port()
    first = receiver(port, tmp_path / "first.nut")
    second: subprocess.Popen[bytes] | None = None
    restream = Restream(f"rtsp://127.0.0.1:{port}/live", fps=FPS, settings=FAST, name="cam")
    try:
        feeder = Feeder(restream)
        feeder.until(lambda: restream.status == "live" and restream.sent > 10, 15, "the first connection")
        first.kill()
        first.wait(10)
        feeder.until(lambda: restream.status.startswith("reconnecting"), 10, "the loss to be noticed")
        dropped = restream.dropped
        feeder.run(1.0)
        assert restream.dropped > dropped
        second = receiver(port, tmp_path / "second.nut")
        feeder.until(lambda: restream.reconnects >= 1 and restream.status == "live", 15, "the reconnection")
        sent = restream.sent
        feeder.run(1.0)
        restream.close()
        second.wait(15)
    finally:
        restream.close()
        for server in (first, second):
            if server is not None:
                server.kill()
    assert feeder.slowest < 0.02
    times = frame_times(tmp_path / "second.nut")
    assert len(times) >= restream.sent - sent > 15
    assert_spaced(times[1:])


def test_a_stalled_receiver_blocks_neither_write_nor_close(tmp_path: Path) -> None:
    port = free_port()
    server = receiver(port, tmp_path / "got.nut")
    restream = Restream(f"rtsp://127.0.0.1:{port}/live", fps=FPS, settings=FAST)
    try:
        feeder = Feeder(restream, pictures=noise)
        feeder.until(lambda: restream.status == "live" and restream.sent > 10, 15, "the connection")
        os.kill(server.pid, signal.SIGSTOP)
        feeder.until(lambda: restream.status.startswith("reconnecting"), 15, "the stall to be noticed")
        feeder.run(1.0)
        began = time.monotonic()
        restream.close()
        closing = time.monotonic() - began
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait(10)
    assert feeder.slowest < 0.02
    assert closing < FAST.close_timeout + 2
    assert restream.status == "closed"


def test_hls_playlist_lives_slides_and_ends(tmp_path: Path) -> None:
    need("ffmpeg", "ffmpeg")  # the same FFmpeg builds are present wherever the RTSP tests run
    folder = hls_dirs(tmp_path, 1)[0]
    folder.mkdir()
    playlist = folder / HLS_PLAYLIST
    restream = Restream(folder, fps=FPS, settings=RestreamSettings(hls_list_size=2))
    feeder = Feeder(restream)
    feeder.until(playlist.exists, 15, "the live playlist")
    assert "#EXT-X-ENDLIST" not in playlist.read_text()
    feeder.run(3.0)
    restream.close()
    text = playlist.read_text()
    assert text.endswith("#EXT-X-ENDLIST\n")
    listed = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(listed) == 2 and all("/" not in name for name in listed)  # relative: the web page serves the folder
    assert len(list(folder.glob("*.ts"))) <= 3  # older segments were deleted as the list slid
    times = frame_times(playlist)
    assert_spaced(times)
    assert times[-1] - times[0] == pytest.approx((len(times) - 1) / FPS, abs=0.01)
    assert len(times) >= 0.8 * FPS  # the last two segments: a whole one (1 s) and the one that close ended


def test_the_cli_restreams_a_source_to_rtsp_and_hls_with_its_times(sample_clip: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`seg-video CLIP --rtsp-out URL --hls DIR`: the clip played live, annotated, published to a real RTSP server
    end and written as an HLS playlist; both read back hold the frames at the clip's times."""
    from seg_video.cli.main import main

    port, received, folder = free_port(), tmp_path / "received.nut", tmp_path / "hls"
    server = receiver(port, received)
    try:
        time.sleep(0.5)  # the receiver listens
        code = main([str(sample_clip), "--rtsp-out", f"rtsp://user:secret@127.0.0.1:{port}/live", "--hls",
                     str(folder), "--max-frames", "60", "--engine", "threshold"])
        server.wait(15)
    finally:
        server.kill()
    said = capsys.readouterr().err
    assert code == 0, said
    assert "secret" not in said and "rtsp://***@127.0.0.1" in said
    times = frame_times(received)
    # the frames before the relay process is up and connected are dropped (counted): half a second or more on a
    # loaded machine
    assert len(times) >= 30, f"{len(times)} of 60 frames reached the RTSP server"
    steps = np.diff(times[1:])
    assert abs(float(np.median(steps)) - 1 / 30) < 0.005, "frames keep the clip's 30 fps timing"
    playlist = folder / "0" / HLS_PLAYLIST
    assert playlist.read_text().rstrip().endswith("#EXT-X-ENDLIST")
    hls_times = frame_times(playlist)
    assert len(hls_times) >= 50 and 1.7 < hls_times[-1] - hls_times[0] < 2.1


def test_the_cli_refuses_a_restream_it_cannot_make(sample_clip: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from seg_video.cli.main import main

    assert main([str(sample_clip), "--rtsp-out", "http://user:secret@host/x"]) == 2
    assert capsys.readouterr().err.strip() == ("seg-video: error: --rtsp-out takes an rtsp:// or rtsps:// URL; got "
                                               "http://***@host/x")
    taken = tmp_path / "taken"
    (taken / "0").mkdir(parents=True)
    (taken / "0" / HLS_PLAYLIST).write_text("#EXTM3U\n")
    assert main([str(sample_clip), "--hls", str(taken)]) == 2
    assert capsys.readouterr().err.strip() == (f"seg-video: error: --hls is not empty: {taken} (use --overwrite to "
                                               "write into it)")
