"""Frames per second over a sliding window: the on-frame fps overlay and the live feeds' rates."""

from __future__ import annotations

import time


class RateMeter:
    """Frames per second over the last `window` frames."""

    def __init__(self, window: int = 30) -> None:
        self._times: list[float] = []
        self._window = window

    def tick(self) -> float | None:
        """Record one frame now; returns the current rate once two frames were seen."""
        self._times.append(time.perf_counter())
        del self._times[: -self._window]
        if len(self._times) < 2:
            return None
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])
