"""A one-line progress bar on stderr (frames, fps, ETA), drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """`m:ss` or `h:mm:ss`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar(fraction: float, width: int = 24) -> str:
    """`[#####.....]`: `fraction` (0..1) of `width` cells filled."""
    filled = int(min(1.0, fraction) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class Progress:
    """Redraws at most `rate_hz` times a second; `total` may be unknown (None)."""

    def __init__(self, total: int | None, stream: TextIO | None = None, *, enabled: bool | None = None,
                 rate_hz: float = 8.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._interval = 1.0 / rate_hz
        self._drawn = False

    def update(self, done: int) -> None:
        """Report `done` frames finished so far."""
        now = time.monotonic()
        if not self.enabled or now - self._last_draw < self._interval:
            return
        self._last_draw = now
        self.stream.write("\r" + self.line(done, now - self._started) + "\033[K")
        self.stream.flush()
        self._drawn = True

    def line(self, done: int, elapsed: float) -> str:
        """The text of the bar for `done` frames after `elapsed` seconds."""
        fps = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            eta = (self.total - done) / fps if fps > 0 else 0.0
            return (f"{bar(done / self.total)} {done}/{self.total} frames "
                    f"{fps:5.1f} fps  ETA {format_duration(eta)}")
        return f"{done} frames {fps:5.1f} fps  {format_duration(elapsed)}"

    def close(self) -> None:
        """End the bar's line so later output starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
