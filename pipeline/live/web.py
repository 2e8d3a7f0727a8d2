"""The `--serve` sink: a small HTTP server showing every feed on one page, with live stats and HLS playback.

Routes (each checks the token and the `Host` first, see below):
- `/` the page: a grid of tiles (4×4 for 16 feeds), each feed's state and numbers refreshed each second;
- `/feeds.stream` every feed's pictures over one connection, so the page needs one however many cameras (browsers
  open about six per host): a stream of frames, each a 10-byte header (feed index: uint16, sequence number mod 2³²:
  uint32, JPEG length: uint32, big-endian) followed by the JPEG;
- `/stream/N.mjpg` feed N alone as a multipart JPEG stream, for players and pages elsewhere;
- `/stats.json` every feed's numbers and state (`connecting`, `live`, `playing`, `reconnecting in …`, `ended`);
- `/hls/N/NAME` a file of feed N's HLS folder, when given: only plain names of playlists (`.m3u8`) and segments
  (`.ts`, `.m4s`, `.mp4`); a playlist's segment names carry the token, so a player's requests for them pass.

It binds 127.0.0.1 unless told otherwise; bound to any other address it requires a token (given, or generated and
printed once), checked on every request (`?token=` or `Authorization: Bearer`) in constant time; without a token it
answers only requests addressed to a loopback name (`Host`), against DNS rebinding. Nothing else is served from the
file system. Each client is served by its own thread, which sends the newest frame of each feed whenever the client
is ready for more and skips the rest: a client that stalls or leaves only affects itself, and the pipeline never
waits for any client. Request lines (which carry the token) are never logged.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import ipaddress
import json
import logging
import re
import secrets
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from seg_video.live.feed import Changes, Feed
from seg_video.live.window import grid_shape

log = logging.getLogger(__name__)

Address = tuple[str, int]
DEFAULT_HOST = "127.0.0.1"
SEND_TIMEOUT = 10.0
"""Seconds a client may leave a frame unread before it is disconnected."""
SEND_BUFFER = 256 * 1024
"""Bytes the kernel may hold per streaming client: little, so a slow client gets fresh frames, not a backlog."""
BOUNDARY = b"seg-video-frame"
FRAME_HEADER = struct.Struct("!HII")
"""Each picture of `/feeds.stream`: feed index, sequence number (mod 2³²), JPEG length; the JPEG follows."""
HLS_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".m4s": "video/iso.segment",
             ".mp4": "video/mp4"}
_HLS_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.(?:m3u8|ts|m4s|mp4)")
"""A file of an HLS folder: dot-separated plain words (no `/`, no `..`) ending in a playlist or segment type."""
_HLS_PATH = re.compile(r"/hls/(\d+)/([^/]+)")
_STREAM_PATH = re.compile(r"/stream/(\d+)\.mjpg")
_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URLs carry the token
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
}


def parse_address(text: str) -> Address:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT` as (host, port); the host defaults to 127.0.0.1, port 0 picks one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    if not port.isdecimal() or int(port) > 65535:
        raise ValueError(f"--serve takes [HOST:]PORT with a port 0..65535; got {text!r}")
    return host.removeprefix("[").removesuffix("]") or DEFAULT_HOST, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def playlist_with_token(playlist: str, query: str) -> str:
    """`playlist` with `query` (`?token=…`) added to each URI that names a file of its own folder, segment lines and
    `URI="…"` attributes alike; URIs elsewhere are left alone, so the token never travels to another host."""
    def tagged(uri: str) -> str:
        return uri + query if _HLS_NAME.fullmatch(uri) else uri

    lines = []
    for line in playlist.splitlines():
        if line.startswith("#"):
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{tagged(m.group(1))}"', line)
        elif line.strip():
            line = tagged(line.strip())
        lines.append(line)
    return "\n".join(lines) + "\n"


class WebView:
    """The HTTP view of `feeds` (and of their HLS folders, one per feed, when given); binds at construction (`OSError`
    if it cannot), serves from `start` to `close`. `streams_opened` counts the streaming responses begun so far."""

    def __init__(self, feeds: Sequence[Feed], address: Address, *, token: str | None = None,
                 hls_dirs: Sequence[Path] = ()) -> None:
        if token == "":
            raise ValueError("the browser view's token must not be empty (it would admit anyone)")
        if hls_dirs and len(hls_dirs) != len(feeds):
            raise ValueError(f"{len(hls_dirs)} HLS folders for {len(feeds)} feeds")
        self.feeds = feeds
        self.hls_dirs = list(hls_dirs)
        self.token = token if token is not None or is_loopback(address[0]) else secrets.token_urlsafe(18)
        self.closing = threading.Event()
        self.changes = Changes(feeds)
        self.streams_opened = 0
        self._clients: dict[threading.Thread, socket.socket] = {}
        self._clients_lock = threading.Lock()
        self._server = _Server(address, self)
        self.address: Address = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="web", daemon=True)

    @property
    def query(self) -> str:
        """`?token=…` when a token is required, else empty: what the page's own URLs carry."""
        return "" if self.token is None else f"?token={quote(self.token)}"

    @property
    def url(self) -> str:
        """The page's address, with the token when one is required."""
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        return f"http://{host}:{self.address[1]}/{self.query}"

    def start(self) -> None:
        """Serve in a background thread and say where."""
        self._thread.start()
        log.info("watch in a browser: %s", self.url)

    def close(self) -> None:
        """Stop serving, disconnect every client and wait for their threads."""
        self.closing.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._clients_lock:
            clients = dict(self._clients)
        for connection in clients.values():
            with contextlib.suppress(OSError):  # already gone
                connection.shutdown(socket.SHUT_RDWR)
        for thread in clients:
            thread.join(2.0)

    def authorized(self, query: str, authorization: str | None) -> bool:
        """Whether a request carries the token (always true when none is required)."""
        if self.token is None:
            return True
        given = parse_qs(query).get("token", [""])[0]
        if authorization is not None and authorization.startswith("Bearer "):
            given = authorization.removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def host_allowed(self, host: str | None) -> bool:
        """Whether to answer a request naming `host` (its `Host` header): a view without a token answers only to
        loopback names, so a web page whose domain an attacker re-points at 127.0.0.1 (DNS rebinding) cannot read it."""
        if self.token is not None or host is None:
            return True
        try:
            name = urlsplit(f"//{host}").hostname
        except ValueError:  # a malformed [IPv6] literal
            return False
        return name is not None and (is_loopback(name) or name.endswith(".localhost"))

    def page(self) -> bytes:
        """The HTML page: a tile per feed, drawn from `/feeds.stream`, captions filled from `/stats.json`."""
        rows, columns = grid_shape(max(1, len(self.feeds)))
        figures = "\n".join(self._tile(i, feed.name) for i, feed in enumerate(self.feeds))
        return (_PAGE.replace("{figures}", figures).replace("{query}", json.dumps(self.query))
                .replace("{columns}", str(columns)).replace("{rows}", str(rows)).encode())

    def _tile(self, i: int, name: str) -> str:
        """Feed `i`'s tile: its picture (or state), its caption, and its HLS link and button when it has HLS."""
        hls = (f'<a class="hls" href="hls/{i}/index.m3u8{html.escape(self.query)}" target="_blank">HLS</a>'
               f'<button class="hls" type="button" data-index="{i}" hidden>play HLS</button>') if self.hls_dirs else ""
        return (f'<figure id="tile{i}" data-frames="0"><div class="picture"><canvas id="picture{i}"></canvas>'
                f'<video id="video{i}" muted playsinline hidden></video><p class="state" id="state{i}">connecting…</p>'
                f'</div><figcaption><span id="stats{i}">{html.escape(name)}</span>{hls}</figcaption></figure>')

    def stats(self) -> bytes:
        """Every feed's numbers as JSON."""
        return json.dumps([feed.stats().to_json() for feed in self.feeds]).encode()

    def hls_file(self, index: int, name: str) -> tuple[str, bytes] | None:
        """(content type, body) of file `name` in feed `index`'s HLS folder, a playlist with the token added to its
        segments; None unless it is a plain playlist or segment name of a regular file there."""
        if index >= len(self.hls_dirs) or not _HLS_NAME.fullmatch(name):
            return None
        path = self.hls_dirs[index] / name
        try:
            if not path.is_file() or path.resolve().parent != self.hls_dirs[index].resolve():
                return None
            body = path.read_bytes()
        except OSError:  # the muxer removed an old segment meanwhile
            return None
        if path.suffix == ".m3u8" and self.query:
            body = playlist_with_token(body.decode("utf-8", "replace"), self.query).encode()
        return HLS_TYPES[path.suffix], body

    def track(self, connection: socket.socket | None) -> None:
        """Note (or with None, forget) the calling client thread's connection, so `close` can end it."""
        with self._clients_lock:
            if connection is None:
                self._clients.pop(threading.current_thread(), None)
            else:
                self._clients[threading.current_thread()] = connection

    def count_stream(self) -> None:
        """Note that a streaming response begins (the page's should be its only one)."""
        with self._clients_lock:
            self.streams_opened += 1


class _Server(ThreadingHTTPServer):
    """The threaded HTTP server, one daemon thread per client, knowing its view."""

    daemon_threads = True

    def __init__(self, address: Address, view: WebView) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.view = view
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that leave mid-reply; anything else is a bug worth its traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Checks the Host and the token on every request, then serves the page, the stats, a stream or an HLS file."""

    server: _Server
    timeout = SEND_TIMEOUT
    server_version = "seg-video"

    def setup(self) -> None:
        super().setup()
        self.server.view.track(self.connection)

    def finish(self) -> None:
        self.server.view.track(None)
        super().finish()

    def do_GET(self) -> None:
        view = self.server.view
        url = urlsplit(self.path)
        if not view.host_allowed(self.headers.get("Host")):
            self._reply(403, "text/plain; charset=utf-8", b"this view answers only to a loopback address; "
                                                          b"use --token to serve other names\n")
            return
        if not view.authorized(url.query, self.headers.get("Authorization")):
            self._reply(401, "text/plain; charset=utf-8", b"a valid token is required (?token=...)\n",
                        {"WWW-Authenticate": "Bearer"})
            return
        stream = _STREAM_PATH.fullmatch(url.path)
        hls = _HLS_PATH.fullmatch(url.path)
        found = None if hls is None else view.hls_file(int(hls.group(1)), hls.group(2))
        if url.path == "/":
            self._reply(200, "text/html; charset=utf-8", view.page())
        elif url.path == "/stats.json":
            self._reply(200, "application/json", view.stats())
        elif url.path == "/feeds.stream":
            self._stream_all()
        elif stream is not None and int(stream.group(1)) < len(view.feeds):
            self._stream_one(view.feeds[int(stream.group(1))])
        elif found is not None:
            self._reply(200, *found)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def _reply(self, code: int, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in {**_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                            **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _begin_stream(self, content_type: str) -> None:
        """The headers of an endless response, counted, on a socket with a small send buffer."""
        self.server.view.count_stream()
        self.send_response(200)
        for name, value in {**_HEADERS, "Content-Type": content_type, "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def _stream_all(self) -> None:
        """Send each feed's newest picture whenever it changed and the client has taken the last ones, until it
        leaves or the view closes. Each pass starts one feed further on, so no feed always goes last."""
        view = self.server.view
        sent = [0] * len(view.feeds)
        first = 0
        try:
            self._begin_stream("application/octet-stream")
            while not view.closing.is_set():
                published = view.changes.count
                for i in [*range(first, len(sent)), *range(first)]:
                    seq, data = view.feeds[i].jpeg()
                    if seq != sent[i] and data:
                        self.wfile.write(FRAME_HEADER.pack(i, seq & 0xFFFFFFFF, len(data)) + data)
                        sent[i] = seq
                first = (first + 1) % max(1, len(sent))
                view.changes.wait_beyond(published, timeout=0.5)
        except OSError:  # the client left, stalled past SEND_TIMEOUT, or the view closed its connection
            self.close_connection = True

    def _stream_one(self, feed: Feed) -> None:
        """Send the newest frame each time the client has taken the last, until it leaves or the view closes.

        Each part is followed at once by the next boundary: browsers show a part only when they see its end.
        """
        seen = 0
        try:
            self._begin_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.wfile.write(b"--" + BOUNDARY + b"\r\n")
            while not self.server.view.closing.is_set():
                if feed.wait_newer(seen, timeout=0.5) == seen:
                    continue
                seen, data = feed.jpeg()
                self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n--%b\r\n"
                                 % (len(data), data, BOUNDARY))
        except OSError:  # the client left, stalled past SEND_TIMEOUT, or the view closed its connection
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines carry the token."""


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seg-video</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { margin: 0; background: #111; color: #ddd; font: 13px system-ui, sans-serif; }
main { display: grid; gap: 6px; padding: 6px; box-sizing: border-box; height: 100vh;
       grid-template-columns: repeat({columns}, minmax(0, 1fr)); grid-template-rows: repeat({rows}, minmax(0, 1fr)); }
figure { margin: 0; display: flex; flex-direction: column; min-width: 0; min-height: 0; }
.picture { position: relative; flex: 1; min-height: 0; background: #222; }
canvas, video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
.state { position: absolute; inset: 0; margin: 0; display: flex; align-items: center; justify-content: center;
         text-align: center; color: #aaa; font-size: 15px; }
.pictured .state, .hls-playing .state { display: none; }
.pictured.down .state { display: block; inset: auto 0 0 0; padding: 2px 6px; background: #a00c; color: #fff; }
.pictured.down canvas { filter: grayscale(1) brightness(0.6); }
figcaption { display: flex; gap: 8px; padding: 3px 2px 0; white-space: nowrap; }
figcaption span { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; }
figcaption .hls { flex: none; padding: 0; border: 0; background: none; color: #8cf; font: inherit; cursor: pointer; }
.down figcaption { color: #f66; }
@media (max-width: 600px) {
  main { height: auto; grid-template-columns: 1fr; grid-template-rows: none; }
  .picture { flex: none; aspect-ratio: 4 / 3; }
}
</style></head>
<body><main>
{figures}
</main>
<script>
const query = {query};
const tiles = [...document.querySelectorAll("figure")];
const healthy = ["live", "playing"];
const pending = tiles.map(() => null), drawing = tiles.map(() => false);

// Each tile draws its newest picture: one that arrives while the last is decoding replaces the one waiting.
async function draw(i) {
  drawing[i] = true;
  while (pending[i] !== null) {
    const blob = pending[i];
    pending[i] = null;
    try {
      const bitmap = await createImageBitmap(blob);
      const canvas = document.getElementById("picture" + i);
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      canvas.getContext("2d").drawImage(bitmap, 0, 0);
      bitmap.close();
      tiles[i].dataset.frames = Number(tiles[i].dataset.frames) + 1;  // pictures drawn, for tests and debugging
      tiles[i].classList.add("pictured");
    } catch (e) { /* a damaged picture: the next one replaces it */ }
  }
  drawing[i] = false;
}

function received(i, jpeg) {
  if (i >= tiles.length) return;
  pending[i] = new Blob([jpeg], {type: "image/jpeg"});
  if (!drawing[i]) draw(i);
}

// All tiles' pictures over one connection: [index u16, sequence u32, length u32] then the JPEG, again and again.
async function stream() {
  for (;;) {
    try {
      const response = await fetch("feeds.stream" + query, {cache: "no-store"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const reader = response.body.getReader();
      let buffer = new Uint8Array(0);
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buffer.length + value.length);
        joined.set(buffer);
        joined.set(value, buffer.length);
        let offset = 0;
        while (joined.length - offset >= 10) {
          const header = new DataView(joined.buffer, offset, 10), length = header.getUint32(6);
          if (joined.length - offset - 10 < length) break;
          received(header.getUint16(0), joined.subarray(offset + 10, offset + 10 + length));
          offset += 10 + length;
        }
        buffer = joined.slice(offset);
      }
    } catch (e) { /* the server is gone or restarting */ }
    await new Promise(resolve => setTimeout(resolve, 1000));  // then connect again
  }
}

function describe(f) {
  const parts = [f.name, f.fps.toFixed(1) + " fps"];
  if (f.latency_p50_ms !== null) {
    parts.push("latency " + Math.round(f.latency_p50_ms) + " ms (p95 " + Math.round(f.latency_p95_ms) + ")");
  }
  parts.push(Object.values(f.dropped).reduce((a, b) => a + b, 0) + " dropped");
  if (f.gaps.length) parts.push(f.gaps.length + " reconnects (last gap " + f.gaps.at(-1).toFixed(1) + " s)");
  parts.push(f.status);
  return parts.join(" \\u00b7 ");
}

// A tile without a picture says it is connecting (or why not); one whose source is down keeps its last picture,
// greyed, under the state.
async function refresh() {
  try {
    const feeds = await (await fetch("stats.json" + query, {cache: "no-store"})).json();
    feeds.forEach((f, i) => {
      const down = !healthy.includes(f.status);
      const waiting = !tiles[i].classList.contains("pictured") && (!down || f.status === "connecting");
      const caption = document.getElementById("stats" + i);
      caption.textContent = caption.title = describe(f);
      document.getElementById("state" + i).textContent = waiting ? "connecting\\u2026" : f.status;
      tiles[i].classList.toggle("down", down);
    });
  } catch (e) { /* the server is gone or restarting: keep the last numbers */ }
}

// Where the browser plays HLS itself, a tile can switch to its HLS playlist and back.
if (document.createElement("video").canPlayType("application/vnd.apple.mpegurl")) {
  document.querySelectorAll("button.hls").forEach(button => {
    const i = button.dataset.index, video = document.getElementById("video" + i);
    const canvas = document.getElementById("picture" + i);
    button.hidden = false;
    button.addEventListener("click", () => {
      const playing = video.hidden;
      video.hidden = !playing;
      canvas.hidden = playing;
      button.textContent = playing ? "back to live" : "play HLS";
      tiles[i].classList.toggle("hls-playing", playing);
      if (playing) {
        video.src = "hls/" + i + "/index.m3u8" + query;
        video.play().catch(() => {});
      } else {
        video.removeAttribute("src");
        video.load();
      }
    });
  });
}

stream();
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""
