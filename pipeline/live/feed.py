"""The newest rendered frame of one live pipeline and its live statistics: what the window and the web view show.

The pipeline's last stage `publish`es every rendered frame; viewers take the newest one whenever they are ready
and skip the rest. Publishing never waits for a viewer, so a slow window or a stalled browser cannot slow the run.
`Changes` counts the frames of several feeds together, so one viewer thread can wait for whichever changes first.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from seg_video.core.rate import RateMeter
from seg_video.core.types import Frame

if TYPE_CHECKING:
    from seg_video.core.runner import RunStats
    from seg_video.io.streams import SourceState

LATENCY_WINDOW = 5.0
"""Seconds of recent frames that the latency percentiles describe."""
STALE_AFTER = 1.0
"""Seconds without a new frame after which the shown rate is 0."""
JPEG_QUALITY = 80


@dataclass(frozen=True)
class FeedStats:
    """A feed's state for overlays, the web page and the run's summary; latencies in milliseconds."""

    name: str
    status: str
    frames: int
    fps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    dropped: dict[str, int]
    gaps: list[float]

    @property
    def dropped_total(self) -> int:
        """Frames dropped by the live queues, all stages together."""
        return sum(self.dropped.values())

    def line(self) -> str:
        """`12.3 fps | latency 120 ms (p95 140) | 340 dropped`, plus the outages, for overlays and logs."""
        parts = [f"{self.fps:.1f} fps"]
        if self.latency_p50_ms is not None:
            parts.append(f"latency {self.latency_p50_ms:.0f} ms (p95 {self.latency_p95_ms:.0f})")
        parts.append(f"{self.dropped_total} dropped")
        if self.gaps:
            parts.append(f"{len(self.gaps)} reconnect{'s' if len(self.gaps) > 1 else ''} "
                         f"(last gap {self.gaps[-1]:.1f} s)")
        return " | ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


class Feed:
    """One source's newest rendered frame (with a JPEG of it made on demand) and its rate, latency and drops."""

    def __init__(self, name: str, state: SourceState, run: RunStats) -> None:
        self.name = name
        self._state = state
        self._run = run
        self._changed = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0
        self._published_at = 0.0
        self._meter = RateMeter()
        self._fps = 0.0
        self._latencies: deque[tuple[float, float]] = deque()  # (published at, seconds since capture)
        self._jpeg_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` (quick, non-blocking) after every frame published from now on."""
        with self._changed:
            self._listeners.append(listener)

    def publish(self, frame: Frame) -> None:
        """Make `frame` the newest and note its capture-to-now latency; never blocks on viewers."""
        now = time.monotonic()
        with self._changed:
            self._frame = frame
            self._seq += 1
            self._published_at = now
            self._fps = self._meter.tick() or 0.0
            self._latencies.append((now, now - frame.captured_at))
            while self._latencies[0][0] < now - LATENCY_WINDOW:
                self._latencies.popleft()
            self._changed.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def latest(self) -> tuple[int, Frame | None]:
        """(sequence number, newest frame); the number grows by one per published frame, 0 before the first."""
        with self._changed:
            return self._seq, self._frame

    def wait_newer(self, seen: int, timeout: float) -> int:
        """Wait until a frame newer than sequence number `seen` is published or `timeout` passes; returns the newest."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > seen, timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes]:
        """(sequence number, JPEG bytes) of the newest frame, encoded once however many clients ask."""
        with self._jpeg_lock:
            seq, frame = self.latest()
            if frame is not None and seq != self._jpeg[0]:
                ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if ok:
                    self._jpeg = (seq, data.tobytes())
            return self._jpeg

    def stats(self) -> FeedStats:
        """The feed's numbers now: latency percentiles over the last `LATENCY_WINDOW` seconds."""
        with self._changed:
            latencies = [seconds for _, seconds in self._latencies]
            fresh = time.monotonic() - self._published_at < STALE_AFTER
            frames, fps = self._seq, self._fps if fresh else 0.0
        p50, p95 = (float(v) * 1000 for v in np.percentile(latencies, [50, 95])) if latencies else (None, None)
        return FeedStats(name=self.name, status=self._state.status, frames=frames, fps=fps, latency_p50_ms=p50,
                         latency_p95_ms=p95, dropped={name: q.dropped for name, q in self._run.queues.items()},
                         gaps=list(self._state.gaps))


class Changes:
    """How many frames `feeds` have published together since this was made: one wait covers every feed."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._changed = threading.Condition()
        self._count = 0
        for feed in feeds:
            feed.listen(self._ring)

    def _ring(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    @property
    def count(self) -> int:
        """Frames published by any of the feeds so far."""
        with self._changed:
            return self._count

    def wait_beyond(self, seen: int, timeout: float) -> int:
        """Wait until the count passes `seen` (some feed published) or `timeout` passes; returns the count."""
        with self._changed:
            self._changed.wait_for(lambda: self._count > seen, timeout)
            return self._count
