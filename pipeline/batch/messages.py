"""What the batch and its workers tell each other, whichever kind of pool runs them (local processes:
`seg_video.batch.local_pool`; Ray actors: `seg_video.batch.ray_pool`): the task a worker gets, the result and news
it sends back, the `Worker` every pool runs and the `Pool` interface the batch drives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig

POLL_SECONDS = 0.25
"""How often the batch looks for news from its workers and redraws its progress."""


@dataclass(frozen=True)
class Task:
    """One video for a worker: the input and the temporary paths of the outputs it asks for."""

    input: str
    video: str | None
    coco: str | None
    masks: str | None


@dataclass(frozen=True)
class Result:
    """What a worker made of a task: frames, seconds, the input's sha256, and the one-line reason if it failed."""

    frames: int
    seconds: float
    sha256: str | None
    error: str | None
    worker: str


@dataclass(frozen=True)
class Update:
    """News from the worker in `slot`: frames done in its current video, its result, or why the worker was lost."""

    slot: int
    frames: int = 0
    result: Result | None = None
    lost: str | None = None


class Pool(Protocol):
    """Workers that each annotate one task at a time with an engine they loaded once."""

    names: list[str]

    def start(self) -> None:
        """Start every worker and wait until each has loaded its engine; raises `EngineError` if one cannot."""

    def submit(self, slot: int, task: Task) -> None:
        """Give the idle worker in `slot` a task."""

    def poll(self, timeout: float) -> list[Update]:
        """News from the workers, waiting at most `timeout` seconds for some."""

    def restart(self, slot: int) -> None:
        """Replace the lost worker in `slot` with a fresh one."""

    def close(self) -> None:
        """Let idle workers exit; the pool is done."""

    def abort(self) -> None:
        """Stop every worker now, mid-video too (Ctrl-C)."""


class Worker(Protocol):
    """What a pool runs in each of its processes or actors (`seg_video.batch.worker.BatchWorker`): made with the run's
    settings and a name, it loads the engine once, then annotates one task after another."""

    name: str

    def annotate(self, task: Task, on_frame: Callable[[int], None] | None = None) -> Result:
        """Run one task; a failure of the video is the result's `error`, not an exception."""

    def close(self) -> None:
        """Release the engine."""


MakeWorker = Callable[["RunConfig", str], Worker]
"""How a pool makes its workers (a class, so that it travels to other processes by name)."""
