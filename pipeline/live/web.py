"""The `--serve` sink: a small HTTP server with an MJPEG stream per feed and a page showing them with live stats.

Routes: `/` the page (every feed, its numbers refreshed each second), `/stream/N.mjpg` feed N as a multipart JPEG
stream, `/stats.json` every feed's numbers. It binds 127.0.0.1 unless told otherwise; bound to any other address
it requires a token (given, or generated and printed once), checked on every request (`?token=` or
`Authorization: Bearer`) in constant time; without a token it answers only requests addressed to a loopback name
(`Host`), against DNS rebinding. Nothing is served from the file system. Each client is served by its own thread,
which sends the newest frame whenever the client is ready for one and skips the rest: a client that stalls or
leaves only affects itself, and the pipeline never waits for any client. Request lines (which carry the token) are
never logged.
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
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from seg_video.live.feed import Feed

log = logging.getLogger(__name__)

Address = tuple[str, int]
DEFAULT_HOST = "127.0.0.1"
SEND_TIMEOUT = 10.0
"""Seconds a client may leave a frame unread before it is disconnected."""
SEND_BUFFER = 256 * 1024
"""Bytes the kernel may hold per streaming client: little, so a slow client gets fresh frames, not a backlog."""
BOUNDARY = b"seg-video-frame"
_STREAM_PATH = re.compile(r"/stream/(\d+)\.mjpg")
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


class WebView:
    """The HTTP view of `feeds`; binds at construction (`OSError` if it cannot), serves from `start` to `close`."""

    def __init__(self, feeds: Sequence[Feed], address: Address, *, token: str | None = None) -> None:
        if token == "":
            raise ValueError("the browser view's token must not be empty (it would admit anyone)")
        self.feeds = feeds
        self.token = token if token is not None or is_loopback(address[0]) else secrets.token_urlsafe(18)
        self.closing = threading.Event()
        self._clients: dict[threading.Thread, socket.socket] = {}
        self._clients_lock = threading.Lock()
        self._server = _Server(address, self)
        self.address: Address = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="web", daemon=True)

    @property
    def url(self) -> str:
        """The page's address, with the token when one is required."""
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        return f"http://{host}:{self.address[1]}/" + ("" if self.token is None else f"?token={quote(self.token)}")

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
        """The HTML page: one figure per feed, captions filled from `/stats.json` every second."""
        query = "" if self.token is None else f"?token={quote(self.token)}"
        figures = "\n".join(
            f'<figure><img id="stream{i}" src="stream/{i}.mjpg{html.escape(query)}" alt="{html.escape(feed.name)}">'
            f'<figcaption id="stats{i}">{html.escape(feed.name)}</figcaption></figure>'
            for i, feed in enumerate(self.feeds))
        return _PAGE.replace("{figures}", figures).replace("{query}", json.dumps(query)).encode()

    def stats(self) -> bytes:
        """Every feed's numbers as JSON."""
        return json.dumps([feed.stats().to_json() for feed in self.feeds]).encode()

    def track(self, connection: socket.socket | None) -> None:
        """Note (or with None, forget) the calling client thread's connection, so `close` can end it."""
        with self._clients_lock:
            if connection is None:
                self._clients.pop(threading.current_thread(), None)
            else:
                self._clients[threading.current_thread()] = connection


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
    """Checks the token on every request, then serves the page, the stats or a stream."""

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
        if url.path == "/":
            self._reply(200, "text/html; charset=utf-8", view.page())
        elif url.path == "/stats.json":
            self._reply(200, "application/json", view.stats())
        elif stream is not None and int(stream.group(1)) < len(view.feeds):
            self._stream(view.feeds[int(stream.group(1))])
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def _reply(self, code: int, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in {**_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                            **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, feed: Feed) -> None:
        """Send the newest frame each time the client has taken the last, until it leaves or the view closes.

        Each part is followed at once by the next boundary: browsers show a part only when they see its end.
        """
        self.send_response(200)
        for name, value in {**_HEADERS, "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}",
                            "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        seen = 0
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
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
body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
main { display: grid; gap: 8px; padding: 8px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
figure { margin: 0; }
img { width: 100%; max-height: calc(100vh - 48px); object-fit: contain; background: #222; display: block; }
figcaption { padding: 4px 2px; } .down { color: #f66; }
</style></head>
<body><main>
{figures}
</main>
<script>
const query = {query};
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
async function refresh() {
  try {
    const feeds = await (await fetch("stats.json" + query, {cache: "no-store"})).json();
    feeds.forEach((f, i) => {
      const caption = document.getElementById("stats" + i);
      caption.textContent = describe(f);
      caption.className = ["live", "playing"].includes(f.status) ? "" : "down";
    });
  } catch (e) { /* the server is gone or restarting: keep the last numbers */ }
}
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""
