"""The browser view: 16 cameras over one connection in headless Chromium, source states on the page, HLS files, the
token and the Host check on every route, stalled clients."""

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
from typing import NamedTuple

import numpy as np
import pytest
from browser import Browser
from live_helpers import Recorder, SlowEngine, camera, need, wait_until

from seg_video.api import run_config
from seg_video.core.runner import Policy, RunStats
from seg_video.core.types import Frame
from seg_video.io.streams import SourceState
from seg_video.live.feed import Feed
from seg_video.live.job import LiveJob, LiveOptions
from seg_video.live.web import FRAME_HEADER, WebView, is_loopback, parse_address, playlist_with_token

ROUTES = ("/", "/stats.json", "/feeds.stream", "/stream/0.mjpg", "/hls/0/index.m3u8")
FRAMES = "[...document.querySelectorAll('figure')].map(tile => Number(tile.dataset.frames))"
"""JavaScript: how many pictures each tile has drawn."""
PICTURES = """[...document.querySelectorAll('canvas')].map(canvas => {
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width || 1, canvas.height || 1).data;
  let hash = 0;
  for (let k = 0; k < pixels.length; k += 3) hash = (Math.imul(hash, 31) + pixels[k]) | 0;
  return hash;
})"""
"""JavaScript: a hash of the picture each tile shows now."""
BOXES = "[...document.querySelectorAll('figure')].map(tile => { const r = tile.getBoundingClientRect(); " \
        "return [r.left, r.top, r.right, r.bottom]; })"
"""JavaScript: each tile's place on the screen (left, top, right, bottom)."""


class Reply(NamedTuple):
    """An HTTP reply: status, body and content type."""

    status: int
    body: bytes
    content_type: str | None


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


@contextmanager
def started(view: WebView) -> Iterator[WebView]:
    """`view` serving for the `with` block, closed after."""
    view.start()
    try:
        yield view
    finally:
        view.close()


def get(view: WebView, path: str, headers: dict[str, str] | None = None) -> Reply:
    """The reply to a GET of `path` (sent as written, dots and escapes included) to the view, over loopback."""
    connection = http.client.HTTPConnection("127.0.0.1", view.address[1], timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.read(), response.getheader("Content-Type"))
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


def test_sixteen_cameras_update_in_chromium_over_one_connection() -> None:
    stop = threading.Event()
    cameras = [camera(f"cam{i}", 60.0, Policy.LIVE, width=160, height=120) for i in range(16)]
    job = LiveJob(run_config(), cameras, LiveOptions(serve=("127.0.0.1", 0)), stop=stop,
                  engine_factory=lambda: SlowEngine(0.0))
    with serving(job) as view, Browser(view.url, (1280, 800)) as browser:
        wait_until(lambda: min(browser.evaluate(FRAMES)) > 0, 20, "a picture in every tile")
        frames, pictures = browser.evaluate(FRAMES), browser.evaluate(PICTURES)
        time.sleep(2.0)
        frames_later, pictures_later = browser.evaluate(FRAMES), browser.evaluate(PICTURES)
        boxes, screen = browser.evaluate(BOXES), browser.evaluate("[innerWidth, innerHeight]")
        streams = view.streams_opened

    assert all(later > before for before, later in zip(frames, frames_later, strict=True)), (frames, frames_later)
    stuck = [i for i, (a, b) in enumerate(zip(pictures, pictures_later, strict=True)) if a == b]
    assert not stuck, f"tiles {stuck} showed the same picture for 2 s"
    assert streams == 1, "the page took every tile's pictures over one streaming connection"
    assert len({round(left) for left, *_ in boxes}) == 4 and len({round(top) for _, top, *_ in boxes}) == 4
    assert all(right <= screen[0] and bottom <= screen[1] for *_, right, bottom in boxes), "4×4 on one screen"


def test_the_page_shows_the_moving_picture_and_its_stats() -> None:
    stop = threading.Event()
    job = LiveJob(run_config(), [camera("cam", 30.0, Policy.LIVE, width=320, height=240)],
                  LiveOptions(serve=("127.0.0.1", 0)), stop=stop, engine_factory=lambda: SlowEngine(0.01))
    caption_pattern = r"cam · [\d.]+ fps · latency \d+ ms \(p95 \d+\) · \d+ dropped · live"
    with serving(job) as view, Browser(view.url, (640, 520)) as browser:
        caption = "document.getElementById('stats0').textContent"
        wait_until(lambda: re.fullmatch(caption_pattern, browser.evaluate(caption)) is not None, 20,
                   "the live stats in the caption")
        first = browser.screenshot()
        time.sleep(0.5)
        second = browser.screenshot()
        state = browser.evaluate("getComputedStyle(document.getElementById('state0')).display")

    picture = first[8:-32, 8:-8].astype(int)  # the picture's area, inside the page's margins, above the caption
    assert picture.std() > 20, "the picture was drawn (not the empty page)"
    changed = np.abs(picture - second[8:-32, 8:-8].astype(int)).max(axis=2) > 40
    assert changed.mean() > 0.002, "the picture moves between the two screenshots"
    assert state == "none", "a live tile with a picture shows no state over it"


def test_tiles_show_their_source_state() -> None:
    feeds = [Feed(name, SourceState(status=status), RunStats()) for name, status in [
        ("cam-a", "connecting"), ("cam-b", "reconnecting in 2.0 s (attempt 3): Connection refused"),
        ("cam-c", "ended"), ("cam-d", "live")]]
    feeds[1].publish(Frame(index=0, image=np.full((120, 160, 3), 200, np.uint8)))
    states = """[0, 1, 2, 3].map(i => { const state = document.getElementById('state' + i);
      const tile = document.getElementById('tile' + i).classList;
      return [state.textContent, getComputedStyle(state).display, tile.contains('pictured'), tile.contains('down')];
    })"""
    with started(WebView(feeds, ("127.0.0.1", 0))) as view, Browser(view.url) as browser:
        wait_until(lambda: browser.evaluate(states)[1][2:] == [True, True], 20, "the stats and the picture")
        shown = browser.evaluate(states)

    assert shown[0] == ["connecting…", "flex", False, True], "no picture yet: the tile says so"
    assert shown[1] == ["reconnecting in 2.0 s (attempt 3): Connection refused", "block", True, True], \
        "the source is down: its last picture stays, marked with the state"
    assert shown[2] == ["ended", "flex", False, True]
    assert shown[3] == ["connecting…", "flex", False, False], "connected, no picture through the pipeline yet"


def test_a_token_is_required_beyond_loopback(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="seg_video")
    feed = Feed("cam", SourceState(), RunStats())
    (tmp_path / "index.m3u8").write_text("#EXTM3U\n")
    with started(WebView([feed], ("0.0.0.0", 0), hls_dirs=[tmp_path])) as view:
        assert view.token is not None and len(view.token) >= 20
        assert f"?token={view.token}" in caplog.text  # printed once, so the operator can open it
        for path in (*ROUTES, "/?token=", f"/?token={view.token[:-1]}x"):
            assert get(view, path).status == 401, path
        assert get(view, f"/?token={view.token}").status == 200
        assert get(view, "/stats.json", {"Authorization": f"Bearer {view.token}"}).status == 200
        assert get(view, f"/hls/0/index.m3u8?token={view.token}").status == 200
        page = get(view, f"/?token={view.token}").body.decode()
        assert page.count(f"?token={view.token}") == 2  # the page's own requests carry it, the HLS link too
        assert get(view, f"/stream/7.mjpg?token={view.token}").status == 404

    feeds = [feed, Feed("rtsp://***@cam2/live", SourceState(), RunStats())]
    with started(WebView(feeds, ("127.0.0.1", 0))) as loopback:
        assert loopback.token is None and get(loopback, "/stats.json").status == 200
        page = get(loopback, "/").body.decode()
        assert 'id="tile1"' in page and "rtsp://***@cam2/live" in page and 'fetch("feeds.stream"' in page
        assert ".mjpg" not in page and 'class="hls"' not in page, "no connection per tile; no HLS without folders"


def test_every_route_checks_the_host_on_loopback(tmp_path: Path) -> None:
    (tmp_path / "index.m3u8").write_text("#EXTM3U\n")
    with started(WebView([Feed("cam", SourceState(), RunStats())], ("127.0.0.1", 0), hls_dirs=[tmp_path])) as view:
        for host in ("evil.example", f"evil.example:{view.address[1]}", "127.0.0.1.evil.example"):
            for path in ROUTES:
                assert get(view, path, {"Host": host}).status == 403, (host, path)
        for host in (f"localhost:{view.address[1]}", "127.0.0.1", "cam.localhost"):
            assert get(view, "/hls/0/index.m3u8", {"Host": host}).status == 200, host


@pytest.fixture
def hls_folder(tmp_path: Path) -> Path:
    """A folder of FFmpeg's HLS muxer: index.m3u8 and three 1 s segments (index0.ts…) of 10 fps H.264."""
    folder = tmp_path / "cam0"
    folder.mkdir()
    subprocess.run([need("ffmpeg", "ffmpeg"), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=10", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10",
                    "-pix_fmt", "yuv420p", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    str(folder / "index.m3u8")], check=True, timeout=60)
    return folder


def test_hls_files_are_served_with_the_token_and_nothing_else(hls_folder: Path, tmp_path: Path) -> None:
    folder = hls_folder
    (tmp_path / "secret.ts").write_bytes(b"not for the web")
    (folder / "notes.txt").write_text("not a playlist or a segment")
    (folder / "link.ts").symlink_to(tmp_path / "secret.ts")
    feed = Feed("cam", SourceState(), RunStats())
    with started(WebView([feed], ("127.0.0.1", 0), token="s3cret", hls_dirs=[folder])) as view:
        playlist = get(view, "/hls/0/index.m3u8?token=s3cret")
        segment_name = "index0.ts"
        segment = get(view, f"/hls/0/{segment_name}", {"Authorization": "Bearer s3cret"})
        refused = {path: get(view, path + "?token=s3cret").status for path in (
            "/hls/0/../secret.ts", "/hls/0/..%2Fsecret.ts", "/hls/0/%2e%2e%2fsecret.ts", "/hls/0/link.ts",
            "/hls/0/notes.txt", "/hls/0/.index.m3u8", "/hls/0/index..m3u8", "/hls/0/missing.ts",
            "/hls/1/index.m3u8", "/hls/0/", "/hls/0/sub/index0.ts")}
        unauthorized = get(view, f"/hls/0/{segment_name}").status
        frames = subprocess.run(  # a real player follows the playlist's names, token and all
            [need("ffprobe", "ffmpeg"), "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
             "stream=nb_read_frames", "-of", "csv=p=0", f"http://127.0.0.1:{view.address[1]}/hls/0/index.m3u8"
                                                         "?token=s3cret"],
            check=True, capture_output=True, text=True, timeout=60).stdout
        page = get(view, "/?token=s3cret").body.decode()

    assert (playlist.status, playlist.content_type) == (200, "application/vnd.apple.mpegurl")
    segments = [line for line in playlist.body.decode().splitlines() if line and not line.startswith("#")]
    assert segments == ["index0.ts?token=s3cret", "index1.ts?token=s3cret", "index2.ts?token=s3cret"]
    assert (segment.status, segment.content_type) == (200, "video/mp2t")
    assert segment.body == (folder / segment_name).read_bytes()
    assert set(refused.values()) == {404}, refused
    assert unauthorized == 401
    assert {int(count) for count in frames.split()} == {30}  # the stream's and its program's
    assert 'href="hls/0/index.m3u8?token=s3cret"' in page


def test_the_page_plays_a_tile_as_hls_where_the_browser_can(hls_folder: Path) -> None:
    feed = Feed("cam", SourceState(), RunStats())
    video = "document.getElementById('video0')"
    with started(WebView([feed], ("127.0.0.1", 0), token="s3cret", hls_dirs=[hls_folder])) as view, \
            Browser(view.url) as browser:
        if not browser.evaluate(f"{video}.canPlayType('application/vnd.apple.mpegurl')"):
            pytest.skip("this Chromium does not play HLS itself")
        browser.evaluate("document.querySelector('button.hls').click()")
        wait_until(lambda: browser.evaluate(f"{video}.currentTime") > 1.0, 20, "the HLS playlist to play")
        shown = browser.evaluate(f"[{video}.hidden, document.getElementById('picture0').hidden, {video}.error]")
    assert shown == [False, True, None], "the tile shows the video instead of the live picture"


def test_a_playlist_carries_the_token_to_its_own_files_only() -> None:
    playlist = ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:1.0,\nseg-1.m4s\n#EXTINF:1.0,\n'
                'https://cdn.example/seg-2.m4s\n#EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/k"\n')
    assert playlist_with_token(playlist, "?token=t") == (
        '#EXTM3U\n#EXT-X-MAP:URI="init.mp4?token=t"\n#EXTINF:1.0,\nseg-1.m4s?token=t\n#EXTINF:1.0,\n'
        'https://cdn.example/seg-2.m4s\n#EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/k"\n')


def count_pictures(view: WebView, path: str, seconds: float) -> int:
    """How many pictures a well-behaved client receives from `path` (feed 0's stream, or all feeds' with one feed)
    in `seconds`; the combined stream's pictures must come newest first, never an older one after a newer."""
    with socket.create_connection(("127.0.0.1", view.address[1]), timeout=5) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            received += client.recv(1 << 16)
    if path.endswith(".mjpg"):
        return received.count(b"Content-Type: image/jpeg")
    body, offset, sequences = received.partition(b"\r\n\r\n")[2], 0, []
    while len(body) - offset >= FRAME_HEADER.size:
        index, sequence, length = FRAME_HEADER.unpack_from(body, offset)
        jpeg = body[offset + FRAME_HEADER.size:offset + FRAME_HEADER.size + length]
        if len(jpeg) < length:
            break
        assert index == 0 and jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")
        sequences.append(sequence)
        offset += FRAME_HEADER.size + length
    assert sequences == sorted(set(sequences))
    return len(sequences)


@pytest.mark.parametrize("path", ["/feeds.stream", "/stream/0.mjpg"])
def test_a_stalled_client_does_not_slow_the_pipeline(path: str) -> None:
    stop = threading.Event()
    published = Recorder()
    job = LiveJob(run_config(), [camera("cam", 30.0, Policy.LIVE, width=640, height=480)],
                  LiveOptions(serve=("127.0.0.1", 0)), stop=stop, engine_factory=lambda: SlowEngine(0.0),
                  on_frame=published)
    with serving(job) as view, socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", view.address[1]))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())  # and never reads
        wait_until(lambda: len(published.items) > 15, 5, "the stream to start")
        time.sleep(1.0)  # the stalled client's buffers fill up: its server thread now blocks on sending
        count, since = len(published.items), time.monotonic()
        pictures = count_pictures(view, path, 2.0)
        fps = (len(published.items) - count) / (time.monotonic() - since)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5, "closing the view waited on the stalled client"
    assert fps > 25, f"the pipeline slowed to {fps:.1f} fps"
    assert pictures > 40, "a well-behaved client beside the stalled one still gets the stream"
