"""Headless Chromium driven over the DevTools protocol through a pipe: the page tests read a live page at real times.

`--dump-dom` and `--screenshot` act when a page has loaded, and a page that streams has loaded long before it has
drawn anything (its pictures arrive by `fetch`), while `--virtual-time-budget` runs the page's clock ahead of the
stream's. With `--remote-debugging-pipe` Chromium reads commands on fd 3 and answers on fd 4 (JSON, each message
ended by a NUL byte): no port, no WebSocket, and no connection to the server besides the page's own.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Any

import cv2
import numpy as np
from live_helpers import need, wait_until

REPLY_TIMEOUT = 30.0
"""Seconds a command may take to be answered, on a loaded CI box."""


def _above_three(fd: int) -> int:
    """`fd` moved to a number of 10 or more (the original closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """Headless Chromium showing `url` in a `size` (w, h) window; `evaluate` runs JavaScript in the page."""

    def __init__(self, url: str, size: tuple[int, int] = (1280, 800)) -> None:
        chromium = need("chromium", "chromium")
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()
        # Numbered 10 or more, so that `3<&… 4>&…` cannot overwrite them (in bash: dash reads one digit only).
        commands, replies = _above_three(commands), _above_three(replies)
        self._profile = tempfile.TemporaryDirectory(prefix="seg-video-chromium-")
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{commands} 4>&{replies}', chromium, "--headless", "--no-sandbox",
             "--disable-gpu", "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            pass_fds=(commands, replies), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)
        self._received = b""
        self._last_id = 0
        try:
            page = next(t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self._session = self._call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            navigation = self._call("Page.navigate", self._session, url=url)
            if "errorText" in navigation:
                raise AssertionError(f"Chromium could not open {url}: {navigation['errorText']}")
            wait_until(lambda: self.evaluate("document.readyState") == "complete", 20, "the page to load")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page (promises awaited)."""
        reply = self._call("Runtime.evaluate", self._session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"the page threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self) -> np.ndarray:
        """What the window shows now, as a BGR image."""
        data = base64.b64decode(self._call("Page.captureScreenshot", self._session, format="png")["data"])
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        return image

    def close(self) -> None:
        """Quit Chromium (killed if it does not quit) and remove its profile."""
        if self.process.poll() is None:
            try:
                self._call("Browser.close", timeout=5)
                self.process.wait(10)
            except (OSError, TimeoutError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)
        for fd in (self._commands, self._replies):
            with contextlib.suppress(OSError):  # closed by an earlier call
                os.close(fd)
        self._profile.cleanup()

    def _call(self, method: str, session: str | None = None, *, timeout: float = REPLY_TIMEOUT,
              **params: Any) -> Any:
        """Send one command (to the page's session, or the browser's) and return its result, skipping events."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._received:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                    raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise EOFError(f"Chromium quit before answering {method}")
                self._received += chunk
            raw, _, self._received = self._received.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
