"""The progress display of `seg-video batch` on stderr (live lines redrawn in place on a terminal, a line per
finished video elsewhere, or nothing); a module of its own so that the batch's loop only tells it what each worker
started, advanced and finished, and knows nothing of how that is shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from seg_video.batch.messages import POLL_SECONDS
from seg_video.cli.progress import bar, format_duration
from seg_video.cli.report import PROG

if TYPE_CHECKING:
    from seg_video.batch.manifest import Entry


class BatchProgress:
    """Progress on stderr: on a terminal an overall line (videos, frames, fps across workers) and a status line per
    worker, redrawn in place; elsewhere a line per finished video; nothing when `quiet`."""

    def __init__(self, entries: Sequence[Entry], workers: Sequence[str], *, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "quiet" if quiet else "live" if self.stream.isatty() else "log"
        self._entries = entries
        self._workers = list(workers)
        self._current: list[tuple[str, int] | None] = [None] * len(workers)
        self._frames = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._lines = 0

    @property
    def frames(self) -> int:
        """Frames annotated by this run so far, videos in progress included."""
        return self._frames + sum(current[1] for current in self._current if current is not None)

    def begin(self, slot: int, entry: Entry) -> None:
        """The worker in `slot` started on the entry."""
        self._current[slot] = (str(entry.name), 0)

    def advance(self, slot: int, frames: int) -> None:
        """The worker in `slot` has done `frames` frames of its video."""
        current = self._current[slot]
        if current is not None:
            self._current[slot] = (current[0], frames)

    def end(self, slot: int, entry: Entry) -> None:
        """The worker in `slot` finished the entry (done, failed, or lost)."""
        self._current[slot] = None
        self._frames += entry.frames if entry.status == "done" else 0
        if self.mode == "log":
            finished = sum(e.status != "pending" for e in self._entries)
            what = f"{entry.frames} frames in {entry.seconds:.1f} s" if entry.status == "done" else entry.reason
            self.stream.write(f"{PROG}: [{finished}/{len(self._entries)}] {entry.status} {entry.name}: {what}\n")
            self.stream.flush()
        self.draw(force=True)

    def note(self, text: str) -> None:
        """Tell of an event (a lost worker) in the line-per-video log."""
        if self.mode == "log":
            self.stream.write(f"{PROG}: {text}\n")
            self.stream.flush()

    def draw(self, *, force: bool = False) -> None:
        """Redraw the live display (at most 4 times a second unless `force`)."""
        now = time.monotonic()
        if self.mode != "live" or (not force and now - self._last_draw < POLL_SECONDS):
            return
        self._last_draw = now
        lines = [self.overall(now - self._started)] + [
            f"  {name}: " + ("idle" if current is None else f"{current[0]}  {current[1]} frames")
            for name, current in zip(self._workers, self._current, strict=True)]
        up = f"\033[{self._lines}F" if self._lines else ""
        self.stream.write(up + "".join(f"{line}\033[K\n" for line in lines))
        self.stream.flush()
        self._lines = len(lines)

    def overall(self, elapsed: float) -> str:
        """The overall line: videos finished of all, failures and skips, frames and fps, time and ETA."""
        total = len(self._entries)
        counts = {status: sum(e.status == status for e in self._entries) for status in ("done", "failed", "skipped")}
        finished = sum(counts.values())
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        worked = counts["done"] + counts["failed"]
        remaining = total - finished
        eta = f" ETA {format_duration(elapsed / worked * remaining)}" if worked and remaining else ""
        return (f"{bar(finished / total if total else 1.0)} {finished}/{total} videos ({counts['failed']} failed, "
                f"{counts['skipped']} skipped) {self.frames} frames {fps:5.1f} fps {format_duration(elapsed)}{eta}")
