"""The browser view: the page in headless Chromium, the token beyond loopback, stalled clients."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import Recorder, SlowEngine, camera, need, wait_until

from seg_video.api import run_config
from seg_video.core.runner import Policy, RunStats
from seg_video.io.streams import SourceState
from seg_video.live.feed import Feed
from seg_video.live.job import LiveJob, LiveOptions
from seg_video.live.web import WebView, is_loopback, parse_address


@contextmanager
def serving(job: LiveJob) -> Iterator[WebView]:
    """Run `job` (which serves) in a thread for the `with` block; stop it and wait after."""
    thread = threading.Thread(target=job.run, daemon=True)
    thread.start()
    assert job.web is not None
    try:
        yield job.web
    finally:
        job.stop()
        thread.join(10)
        assert not thread.is_alive(), "the job did not stop"


def get(view: WebView, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body of a GET to the view, over loopback."""
    connection = http.client.HTTPConnection("127.0.0.1", view.address[1], timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_addresses() -> None:
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match=r"port 0\.\.65535"):
        parse_address("host:http")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("cam.local")


def screenshot(url: str, path: Path) -> np.ndarray:
    """What headless Chromium shows of `url` after a second and a half (the page keeps loading: a stream)."""
    subprocess.run([need("chromium", "chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=640,520", f"--screenshot={path}", "--timeout=1500", url],
                   check=True, capture_output=True, timeout=60)
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_page_in_headless_chromium_shows_the_moving_stream_and_its_stats(tmp_path: Path) -> None:
    need("chromium", "chromium")
    stop = threading.Event()
    job = LiveJob(run_config(), [camera("cam", 30.0, Policy.LIVE, width=320, height=240)],
                  LiveOptions(serve=("127.0.0.1", 0)), stop=stop, engine_factory=lambda: SlowEngine(0.01))
    with serving(job) as view:
        wait_until(lambda: job.feeds[0].latest()[0] > 0, 5, "the first frame")
        first = screenshot(view.url, tmp_path / "1.png")
        second = screenshot(view.url, tmp_path / "2.png")
        dom = subprocess.run([need("chromium", "chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                              "--virtual-time-budget=2500", "--dump-dom", view.url],  # once the page's script ran
                             check=True, capture_output=True, text=True, timeout=60).stdout

    picture = first[8:-48, 8:-8].astype(int)  # the stream's area, inside the page's margins, above the caption
    assert picture.std() > 20, "the stream image was drawn (not the empty page)"
    changed = np.abs(picture - second[8:-48, 8:-8].astype(int)).max(axis=2) > 40
    assert changed.mean() > 0.002, "the picture moves between the two screenshots"
    caption = re.search(r'<figcaption id="stats0"[^>]*>(.*?)</figcaption>', dom)
    assert caption is not None and re.search(r"cam · [\d.]+ fps · latency \d+ ms \(p95 \d+\) · \d+ dropped · live",
                                             caption.group(1)), "the page shows the live stats"


def test_a_token_is_required_beyond_loopback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seg_video")
    feed = Feed("cam", SourceState(), RunStats())
    view = WebView([feed], ("0.0.0.0", 0))
    view.start()
    try:
        assert view.token is not None and len(view.token) >= 20
        assert f"?token={view.token}" in caplog.text  # printed once, so the operator can open it
        for path in ("/", "/stats.json", "/stream/0.mjpg", "/?token=", f"/?token={view.token[:-1]}x"):
            assert get(view, path)[0] == 401, path
        assert get(view, f"/?token={view.token}")[0] == 200
        assert get(view, "/stats.json", {"Authorization": f"Bearer {view.token}"})[0] == 200
        body = get(view, f"/?token={view.token}")[1]
        assert view.token in body.decode()  # the page's own requests carry it
        assert get(view, f"/stream/7.mjpg?token={view.token}")[0] == 404
    finally:
        view.close()

    loopback = WebView([feed, Feed("rtsp://***@cam2/live", SourceState(), RunStats())], ("127.0.0.1", 0))
    loopback.start()
    try:
        assert loopback.token is None and get(loopback, "/stats.json")[0] == 200
        page = get(loopback, "/")[1].decode()
        assert 'src="stream/0.mjpg"' in page and 'src="stream/1.mjpg"' in page and "rtsp://***@cam2/live" in page
    finally:
        loopback.close()


def read_parts(view: WebView, seconds: float) -> int:
    """How many JPEG parts a well-behaved client receives from stream 0 in `seconds`."""
    with socket.create_connection(("127.0.0.1", view.address[1]), timeout=5) as client:
        client.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            received += client.recv(1 << 16)
        return received.count(b"Content-Type: image/jpeg")


def test_a_stalled_client_does_not_slow_the_pipeline() -> None:
    stop = threading.Event()
    published = Recorder()
    job = LiveJob(run_config(), [camera("cam", 30.0, Policy.LIVE, width=640, height=480)],
                  LiveOptions(serve=("127.0.0.1", 0)), stop=stop, engine_factory=lambda: SlowEngine(0.0),
                  on_frame=published)
    with serving(job) as view, socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", view.address[1]))
        stalled.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
        wait_until(lambda: len(published.items) > 15, 5, "the stream to start")
        time.sleep(1.0)  # the stalled client's buffers fill up: its server thread now blocks on sending
        count, since = len(published.items), time.monotonic()
        parts = read_parts(view, 2.0)
        fps = (len(published.items) - count) / (time.monotonic() - since)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5, "closing the view waited on the stalled client"
    assert fps > 25, f"the pipeline slowed to {fps:.1f} fps"
    assert parts > 40, "a well-behaved client beside the stalled one still gets the stream"
