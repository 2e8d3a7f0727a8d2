"""Live runs: bounded latency under the live policy, a real FFmpeg stream on loopback, reconnection, the CLI."""

from __future__ import annotations

import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import pytest
from live_helpers import Recorder, SlowEngine, UdpStream, camera, free_port, wait_until

from seg_video.api import run_config
from seg_video.cli.main import main
from seg_video.core.config import LiveSettings
from seg_video.core.runner import Policy
from seg_video.core.text import mask_credentials
from seg_video.io.sample import write_sample_clip
from seg_video.io.streams import open_input, source_kind
from seg_video.live.job import LiveJob, LiveOptions, LivePlan, output_paths, plan_live

FRAME_INTERVAL = 1 / 30
ROOT = Path(__file__).resolve().parent.parent


def quarters(values: list[float]) -> tuple[float, float]:
    """Medians of the first and the last quarter of `values`."""
    quarter = max(1, len(values) // 4)
    return statistics.median(values[:quarter]), statistics.median(values[-quarter:])


@pytest.mark.parametrize(("text", "masked"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsp://admin:p@ss@cam/live", "rtsp://***@cam/live"),  # an unescaped @ in the password
    ("http://viewer@cam.local/mjpg?user=a&password=xyz&fps=5", "http://***@cam.local/mjpg?user=a&password=***&fps=5"),
    ("srt://127.0.0.1:9000?mode=caller&passphrase=s3cret", "srt://127.0.0.1:9000?mode=caller&passphrase=***"),
    ("cannot open rtsp://u:pw@h/x: Connection refused", "cannot open rtsp://***@h/x: Connection refused"),
    ("udp://127.0.0.1:1234", "udp://127.0.0.1:1234"),
    ("/dev/video0", "/dev/video0"),
])
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_source_kinds() -> None:
    assert [source_kind(s) for s in ("0", "12", "/dev/video2")] == ["camera"] * 3
    assert [source_kind(s) for s in ("rtsp://cam/1", "HTTP://x/y.mjpg", "udp://@:1234", "srt://h:9")] == ["stream"] * 4
    assert [source_kind(s) for s in ("clip.mp4", "file:///tmp/a.mp4", "/dev/video", "C:/a.mp4")] == ["file"] * 4


def test_command_line_shapes() -> None:
    assert plan_live(["in.mp4", "out.mp4"], viewer=False, output=None) is None  # the file job, unchanged
    assert plan_live(["in.mp4"], viewer=False, output="out.mp4") is None
    assert plan_live(["rtsp://cam/1", "rec.mp4"], viewer=False, output=None) == LivePlan(["rtsp://cam/1"], "rec.mp4")
    assert plan_live(["0", "1"], viewer=True, output="rec.mp4") == LivePlan(["0", "1"], "rec.mp4")
    assert plan_live(["a.mp4", "b.mp4"], viewer=True, output=None) == LivePlan(["a.mp4", "b.mp4"], None)
    assert plan_live(["a.mp4", "b.mp4", "c.mp4"], viewer=False, output="o.mp4") == \
        LivePlan(["a.mp4", "b.mp4", "c.mp4"], "o.mp4")
    assert output_paths(Path("d/rec.mp4"), 2) == [Path("d/rec-0.mp4"), Path("d/rec-1.mp4")]


def test_live_latency_stays_flat_where_lossless_grows() -> None:
    """Two synthetic 30 fps cameras into a 60 ms engine, one per policy, side by side for 2.5 s."""
    published = Recorder()
    stop = threading.Event()
    sources = [camera("live", 2.5, Policy.LIVE), camera("lossless", 2.5, Policy.LOSSLESS)]
    job = LiveJob(run_config(), sources, LiveOptions(), stop=stop, engine_factory=lambda: SlowEngine(0.06),
                  on_frame=published)
    summary = job.run()

    live = [p.latency for p in published.of("live")]
    first, last = quarters(live)
    assert last <= 1.5 * first + FRAME_INTERVAL, f"live latency grew: {first:.3f} s → {last:.3f} s"
    dropped = summary.feeds[0].dropped
    assert dropped["preprocess"] > 0 and dropped["infer"] == 0, "stale frames are dropped before they are prepared"
    assert len(live) + summary.feeds[0].dropped_total == 75
    assert published.of("live")[-1].index == 74  # the newest frame always gets through

    lossless = [p.latency for p in published.of("lossless")]
    first, last = quarters(lossless)
    assert last > first + 0.5, "lossless latency should grow when the engine is slower than the camera"
    assert len(lossless) == 75 and summary.feeds[1].dropped_total == 0


@contextmanager
def running(job: LiveJob) -> Iterator[list[BaseException]]:
    """Run `job` in a thread for the `with` block, then stop it and wait; the list receives its exception."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            job.run()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        job.stop()
        thread.join(10)
        assert not thread.is_alive(), "the job did not stop"


def test_stream_on_loopback_drops_stale_frames_and_keeps_latency_bounded(udp_stream: UdpStream) -> None:
    stop = threading.Event()
    source = open_input(udp_stream.url, LiveSettings(open_timeout=5.0, read_timeout=2.0), policy="auto", stop=stop)
    assert source.policy is Policy.LIVE
    published = Recorder()
    job = LiveJob(run_config(), [source], LiveOptions(), stop=stop, engine_factory=lambda: SlowEngine(0.1),
                  on_frame=published)
    with running(job) as errors:
        time.sleep(5.0)

    assert not errors
    latencies = [p.latency for p in published.items]
    assert len(latencies) >= 25  # about 9 a second through a 100 ms engine
    first, last = quarters(latencies)
    assert last <= 1.5 * first + FRAME_INTERVAL, f"latency grew: {first:.3f} s → {last:.3f} s"
    stats = job.feeds[0].stats()
    assert stats.dropped["preprocess"] > 0 and stats.dropped["infer"] == 0
    assert stats.frames == len(latencies)


def test_reconnects_after_the_server_stops_and_reports_the_gap(udp_stream: UdpStream,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seg_video")
    threads_before = set(threading.enumerate())
    stop = threading.Event()
    settings = LiveSettings(open_timeout=1.0, read_timeout=0.5, reconnect_min=0.2, reconnect_max=0.8)
    source = open_input(udp_stream.url, settings, policy="auto", stop=stop)
    job = LiveJob(run_config(), [source], LiveOptions(), stop=stop, engine_factory=lambda: SlowEngine(0.01))
    feed = job.feeds[0]
    with running(job) as errors:
        wait_until(lambda: feed.latest()[0] >= 20, 10, "frames before the outage")
        udp_stream.stop()
        wait_until(lambda: source.state.status != "live", 5, "the stall to be noticed")
        time.sleep(0.2)  # the last frames still in the pipeline come out
        before = feed.latest()[0]
        time.sleep(1.0)
        assert feed.latest()[0] == before  # nothing arrives while the server is down
        udp_stream.start()
        wait_until(lambda: bool(source.state.gaps), 10, "the reconnection")
        wait_until(lambda: feed.latest()[0] >= before + 20, 10, "frames after the outage")

    assert not errors
    assert source.state.status in ("live", "ended")
    assert len(source.state.gaps) == 1 and source.state.gaps[0] >= 1.5  # the stall, the wait and the restart
    messages = [record.getMessage() for record in caplog.records]
    assert any("lost (no data within the timeout)" in m for m in messages)
    assert any("reconnected after" in m and "without frames" in m for m in messages)
    assert "1 reconnect (last gap" in feed.stats().line()
    wait_until(lambda: set(threading.enumerate()) <= threads_before, 5, "every thread of the run to end")


def test_cli_records_a_stream_and_never_prints_its_password(udp_stream: UdpStream, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    url = udp_stream.url.replace("udp://", "udp://viewer:hunter2@")
    out = tmp_path / "rec.mp4"
    assert main([url, str(out), "--max-frames", "45", "--engine", "motion"]) == 0

    err = capsys.readouterr().err
    assert "hunter2" not in err and "udp://***@127.0.0.1" in err
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert 40 <= len(frames) <= 45
    assert float(frames[-1].pts * frames[-1].time_base) == pytest.approx(len(frames) / 30, abs=0.5)  # real time


def test_cli_runs_several_sources_side_by_side_with_a_recording_each(sample_clip: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec.mp4"
    assert main([str(sample_clip), str(sample_clip), "--serve", "0", "--output", str(out), "--max-frames", "20",
                 "--engine", "threshold"]) == 0

    err = capsys.readouterr().err
    for recording in (tmp_path / "rec-0.mp4", tmp_path / "rec-1.mp4"):
        with av.open(str(recording)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 20  # files default to lossless: every frame
        assert f"{recording} (20 frames)" in err
    assert not out.exists()


def test_cli_unreachable_stream_is_a_usage_error_without_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run's only source cannot be opened: nothing else could run, so it is exit 2 in one line."""
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/live"
    assert main([url, "--serve", "0", "--set", "live.open_timeout=2"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert err == f"seg-video: error: cannot open rtsp://***@127.0.0.1:{url.rsplit(':', 1)[1]}: Connection refused\n"


def test_cli_live_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["0"]) == 2
    assert "somewhere to show or keep" in capsys.readouterr().err
    assert main(["--serve", "nope", "0"]) == 2
    assert "--serve takes [HOST:]PORT" in capsys.readouterr().err
    assert main(["0", "--serve", "0.0.0.0:8080", "--token", ""]) == 2
    assert "--token must not be empty" in capsys.readouterr().err
    assert main(["0", "--display", "--camera-size", "big"]) == 2
    assert "--camera-size takes WIDTHxHEIGHT" in capsys.readouterr().err


def test_sigterm_ends_a_live_run_with_its_recording_finalized(tmp_path: Path) -> None:
    clip = write_sample_clip(tmp_path / "clip.mp4", seconds=10, width=160, height=120, audio=False)
    run = subprocess.Popen([sys.executable, "-m", "seg_video", str(clip), "--serve", "0", "--output", "rec.mp4",
                            "--policy", "live", "--engine", "threshold"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "rec.mp4").exists(), 20, "the recording to start")
        time.sleep(1.0)
        run.send_signal(signal.SIGTERM)
        assert run.wait(10) == 143
    finally:
        if run.poll() is None:
            run.kill()
    err = run.stderr.read() if run.stderr else ""
    with av.open(str(tmp_path / "rec.mp4")) as container:
        times = [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]
    assert f"terminated; {len(times)} frames written to rec.mp4" in err
    assert len(times) >= 20 and times[-1] == pytest.approx(len(times) / 30, abs=0.3)  # played at its own pace


def test_the_live_display_preset() -> None:
    config = run_config(config="live-display")
    assert config.pipeline.policy == "live" and config.live.rtsp_transport == "tcp"
    assert config.live.reconnect_min < config.live.reconnect_max
