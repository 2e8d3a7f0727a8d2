"""Live sources that come and go: one down at start must not keep the others dark, and it joins when it comes up.

Real FFmpeg stream servers on loopback: a UDP sender (`UdpStream`) and an HTTP server that is not listening until
it is started (`HttpStream`: before that, every connection is refused, so the source truly cannot open).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from live_helpers import HttpStream, UdpStream, free_port, need, wait_until

from seg_video.cli.main import main
from seg_video.core.config import LiveSettings
from seg_video.core.errors import MediaError
from seg_video.core.types import Frame
from seg_video.io.streams import LiveSource, SourceGroup, open_inputs

DEAD = "rtsp://user:secret@127.0.0.1:9/cam"
"""Nothing listens on the discard port: every connection is refused at once."""


@pytest.fixture
def http_stream(sample_clip: Path) -> Iterator[HttpStream]:
    """An HTTP stream server of the sample clip, not started yet; stopped after the test."""
    need("ffmpeg", "ffmpeg")
    stream = HttpStream(sample_clip, free_port())
    yield stream
    stream.stop()


def frame_times(path: Path) -> list[float]:
    """Each video frame's time in seconds."""
    with av.open(str(path)) as container:
        return [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]


def test_a_dead_source_leaves_the_live_one_recording_from_the_start(udp_stream: UdpStream, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec.mp4"
    assert main([DEAD, udp_stream.url, "--output", str(out), "--max-frames", "45", "--engine", "threshold"]) == 0

    captured = capsys.readouterr()
    assert "secret" not in captured.out + captured.err
    warning, summary = [line for line in captured.err.splitlines() if "127.0.0.1:9/cam" in line]
    assert warning == ("seg-video: rtsp://***@127.0.0.1:9/cam: cannot open (Connection refused); "
                       "retrying while the others run")
    assert summary.startswith("seg-video: rtsp://***@127.0.0.1:9/cam: got no frames in ")
    assert summary.endswith(f"; {tmp_path / 'rec-0.mp4'} not written")
    assert not (tmp_path / "rec-0.mp4").exists()
    times = frame_times(tmp_path / "rec-1.mp4")
    assert 40 <= len(times) <= 45  # the live policy may drop a few on a loaded machine
    assert times[0] == 0 and times[-1] == pytest.approx(len(times) / 30, abs=0.5)  # real time, no gap
    assert f"{tmp_path / 'rec-1.mp4'} ({len(times)} frames)" in captured.err


def test_a_source_that_appears_5_s_late_joins(udp_stream: UdpStream, http_stream: HttpStream, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec.mp4"
    late = threading.Timer(5.0, http_stream.start)
    late.start()
    try:  # the UDP source runs 8 s (240 frames), long enough for the late one to come while it does
        assert main([udp_stream.url, http_stream.url, "--output", str(out), "--max-frames", "240", "--engine",
                     "threshold", "--set", "live.reconnect_max=1"]) == 0
    finally:
        late.cancel()

    err = capsys.readouterr().err
    assert f"{http_stream.url}: cannot open (Connection refused); retrying while the others run" in err
    connected = [line for line in err.splitlines() if f"{http_stream.url}: connected after" in line]
    assert len(connected) == 1
    assert float(connected[0].split("connected after ")[1].split(" s")[0]) >= 4.5
    assert len(frame_times(tmp_path / "rec-0.mp4")) >= 120  # the live policy may drop some on a loaded machine
    times = frame_times(tmp_path / "rec-1.mp4")  # the late source's own recording, begun at its first frame
    assert len(times) >= 120 and times[0] == 0 and times[-1] == pytest.approx(240 / 30, abs=1.0)


def test_hosts_that_never_answer_cost_one_open_timeout_together(udp_stream: UdpStream) -> None:
    """Two servers that accept a connection and never say a word, next to a live stream: connected side by side."""
    silent = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    urls = [f"rtsp://127.0.0.1:{server.getsockname()[1]}/cam" for server in silent]
    stop = threading.Event()
    started = time.monotonic()
    inputs = open_inputs([*urls, udp_stream.url], LiveSettings(open_timeout=4.0), policy="auto", stop=stop)
    elapsed = time.monotonic() - started
    try:
        assert [source.state.status for source in inputs] == ["connecting", "connecting", "live"]
        assert [source.fps for source in inputs] == [None, None, 30.0]
        assert elapsed < 7.5  # one after the other would take 8 s and more
    finally:
        stop.set()
        for source in inputs:
            source.close()
        for server in silent:
            server.close()


def test_when_no_source_opens_it_is_one_error_without_credentials(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        open_inputs([DEAD, f"http://viewer:secret@127.0.0.1:{free_port()}/x.ts"], LiveSettings(), policy="auto",
                    stop=threading.Event())
    message = str(caught.value)
    assert message.startswith("no source could be opened (cannot open ") and "\n" not in message
    assert "secret" not in message and "rtsp://***@127.0.0.1:9/cam: Connection refused" in message
    with pytest.raises(MediaError, match=r"missing\.mp4"):  # files don't appear later: a missing one fails at once
        open_inputs([str(tmp_path / "missing.mp4"), DEAD], LiveSettings(), policy="auto", stop=threading.Event())


def test_source_states_from_connecting_to_live_to_reconnecting(http_stream: HttpStream,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="seg_video")
    stop = threading.Event()
    settings = LiveSettings(open_timeout=3.0, read_timeout=1.0, reconnect_min=0.2, reconnect_max=0.4)
    source = LiveSource(http_stream.url, settings, stop=stop)
    with pytest.raises(MediaError):
        source.connect()
    assert source.state.status == "connecting" and source.open_error == "Connection refused"
    frames: list[Frame] = []
    reader = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "attempt 3" in source.state.status, 10, "connection attempts")
        assert source.state.status.startswith("connecting in 0.4 s (attempt 3): Connection refused")
        http_stream.start()
        wait_until(lambda: len(frames) >= 15, 15, "frames once the server is up")
        assert source.state.status == "live" and source.state.gaps == []  # connecting late is no outage
        assert source.fps == 30.0
        http_stream.stop()
        wait_until(lambda: source.state.status.startswith("reconnecting in "), 10, "the outage to be noticed")
        http_stream.start()
        wait_until(lambda: len(source.state.gaps) == 1 and source.state.status == "live", 15, "the reconnection")
    finally:
        stop.set()
        reader.join(10)
    assert not reader.is_alive()
    messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert sum("connected after" in m and "reconnected" not in m for _, m in messages) == 1
    assert sum("reconnected after" in m for _, m in messages) == 1
    failures = [level for level, m in messages if "connection attempt" in m and "reconnection" not in m]
    assert failures and set(failures) == {logging.DEBUG}  # told once by open_inputs, not at every retry


def test_a_source_never_connected_gives_up_when_the_rest_of_its_run_has_ended() -> None:
    group = SourceGroup()
    group.join()  # another source of the run, running
    stop = threading.Event()
    source = LiveSource(DEAD, LiveSettings(reconnect_min=0.2, reconnect_max=0.4), stop=stop, group=group)
    with pytest.raises(MediaError):
        source.connect()
    frames: list[Frame] = []
    reader = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    reader.start()
    try:
        time.sleep(1.0)
        assert reader.is_alive()  # still trying while the other source runs
        group.leave()
        reader.join(5)
        assert not reader.is_alive() and not frames
    finally:
        stop.set()
