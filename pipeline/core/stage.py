"""One step of the pipeline as the runner (`seg_video.core.runner`) runs it: a function over batches of items, in a
thread of its own, with its setup, teardown and time limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seg_video.core.types import Item


@dataclass
class Stage:
    """One step of the pipeline: `process` fills in a batch of items and returns those to pass on (possibly none).

    `setup` runs first in the stage's own thread (engines load there); `teardown` always runs last in it, after
    an error or a stop too (sinks finalize there).
    """

    name: str
    process: Callable[[list[Item]], list[Item]]
    batch_size: int = 1
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    timeout: float | None = None
    """Seconds one `process` call may take before the watchdog fails the run; None: no limit."""
    setup_timeout: float | None = None
    """Seconds `setup` may take, and the first `process` call too (warm-up: lazy compilation, autotuning)."""
    on_demand: bool = False
    """Under the live policy, take the next item only once the next stage waits for one: work on frames that would be
    dropped downstream is never done, and what it hands on is the newest frame (preprocessing, when inference is
    slower than the source)."""
