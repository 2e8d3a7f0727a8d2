"""What a `seg-video` command tells its user besides its results: its exit code, its one error line, the library's
log messages while a run lasts, and how signals stop it.

Exit codes: 0 done, 1 the run failed part-way (what was written is finalized), 2 bad input or usage (nothing
written), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); a second Ctrl-C or SIGTERM while a run finalizes
exits at once with the same codes. docs/RELIABILITY.md lists every fault and what happens.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from seg_video.core.text import mask_credentials

PROG = "seg-video"
EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143
LOGGER = "seg_video"
"""The library's loggers all live under this one; the CLI shows their messages on stderr while a run lasts."""


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so the run stops and finalizes like on Ctrl-C."""


def fail(message: str, code: int) -> int:
    """Print the one error line and return `code`: whatever raised, a URL's password is masked, and control
    characters a name or key may hold (newlines, terminal escapes) are shown escaped."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in mask_credentials(message))
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return code


class SignalStop:
    """The command's side of `stop_signals`: `ended()` once its outcome is settled (a file run: as soon as its
    outputs are finalized), so that a signal arriving while it returns is ignored instead of escaping as a
    traceback or as a bare "terminated" that no longer says what was written."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.over = False

    def ended(self) -> None:
        """The command is done: from now on a signal changes nothing."""
        self.over = True


@contextmanager
def stop_signals(*, second_exits: bool) -> Iterator[SignalStop]:
    """While a command runs: the first Ctrl-C or SIGTERM raises `KeyboardInterrupt` or `Terminated`, so the run
    stops and finalizes its outputs; with `second_exits`, a second one (a finalize taking too long) exits at once,
    130 or 143, without waiting for it. A file-size limit (SIGXFSZ) becomes a write error instead of killing the
    process. The handlers found are put back at the end (a signal after the command's end then acts as usual)."""
    stop = SignalStop()

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.over:
            return
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        if stop.received and second_exits:
            os.write(2, f"{PROG}: error: {word} again while finishing: exiting at once; the outputs may not "
                        "be finalized\n".encode())
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        stop.received.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield stop
    finally:
        stop.ended()
        for number, handler in previous.items():
            signal.signal(number, handler)


def written(frames: int, output: Path) -> str:
    """`N frames written to OUTPUT`, or `no output written`: how an ended run's error line says what it kept."""
    return f"{frames} frames written to {output}" if frames else "no output written"


@contextmanager
def messages_to_stderr(*, quiet: bool, quieted: str) -> Iterator[None]:
    """While a run lasts, the library's log messages (a backend chosen, an export, an engine build, a picture-size
    change, a live source's reconnects) go to stderr as one `seg-video: …` line each; with `quiet`, only the
    warnings of the loggers under `quieted`."""
    report = logging.StreamHandler(sys.stderr)
    report.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root, muted = logging.getLogger(LOGGER), logging.getLogger(quieted)
    previous = root.level, muted.level
    root.addHandler(report)
    root.setLevel(logging.INFO)
    if quiet:
        muted.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(report)
        root.setLevel(previous[0])
        muted.setLevel(previous[1])
