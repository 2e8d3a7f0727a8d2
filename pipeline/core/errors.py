"""Every error seg-video raises on purpose, in one place so callers (the CLI, programs using the API) can catch them
without importing the code that raises them. Each message is one line a user can act on.

    SegVideoError
    ├── UsageError      a request that cannot be carried out as given (paths, options); nothing was written
    ├── ConfigError     a setting is unknown or has a value it cannot take
    ├── EngineError     an engine cannot be built, loaded or run as asked
    ├── MediaError      an input cannot be used (missing, not media, no video, absurd size)
    ├── DecodeError     decoding failed part-way
    ├── WriteError      an output cannot be opened or written
    └── StageFailed     a pipeline stage raised (its `error` is the cause, `frame` where; StageTimeout: it hung)
"""

from __future__ import annotations


class SegVideoError(Exception):
    """Base of every error seg-video raises on purpose."""


class UsageError(SegVideoError):
    """A request that cannot be carried out as given (a missing input, an output that would replace a file or the
    input, options that contradict each other); raised before anything is written."""


class ConfigError(SegVideoError, ValueError):
    """A setting is unknown or has a value it cannot take; the message names the full key (`engine.motion.history`)."""


class EngineError(SegVideoError, RuntimeError):
    """An engine cannot be built or run as asked (unknown name, missing weights, bad parameter, unavailable device)."""


class MediaError(SegVideoError, RuntimeError):
    """An input cannot be used (missing, not media, no video, absurd size)."""


class DecodeError(SegVideoError, RuntimeError):
    """Decoding failed part-way; the message names the frame index reached."""


class WriteError(SegVideoError, RuntimeError):
    """An output cannot be opened or written; the message names the path."""


class StageFailed(SegVideoError, RuntimeError):
    """A stage raised; `stage` names it, `frame` the index of the frame it was working on (when known), and
    `__cause__` (also `error`) is the original exception."""

    def __init__(self, stage: str, error: BaseException, frame: int | None = None) -> None:
        where = "" if frame is None else f" at frame {frame}"
        super().__init__(f"{stage} stage failed{where}: {str(error) or type(error).__name__}")
        self.stage = stage
        self.error = error
        self.frame = frame


class StageTimeout(SegVideoError, RuntimeError):
    """The watchdog's verdict: a stage's `setup` or `process` call outlasted its limit (the stage is stuck)."""
