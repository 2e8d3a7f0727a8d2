"""The workers' side of `seg-video batch`, shared by both kinds of pool (local processes: `pipeline.batch_local`;
Ray actors: `pipeline.batch_ray`): the task a worker gets, the result and news it sends back, the `Pool` interface
the batch drives, and `BatchWorker`, which loads the engine once and annotates one video after another; kept free of
the manifest, the progress display and the command line, so that a pool needs nothing else of the batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engines.base import ENGINES, create_engine
from engines.cache import file_sha256
from pipeline.app import AnnotateJob, annotation_exports
from pipeline.config import RunConfig
from pipeline.runner import StageFailed
from pipeline.video_io import DecodeError, MediaError, VideoSource

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


class BatchWorker:
    """An engine loaded once, and the videos given to it annotated one after another, each by its own `AnnotateJob`."""

    def __init__(self, config: RunConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.engine = create_engine(config.engine, config.engine_params)
        self.engine.load()

    def annotate(self, task: Task, on_frame: Callable[[int], None] | None = None) -> Result:
        """Run one task; any failure of the video becomes the result's one-line `error` instead of an exception."""
        started = time.perf_counter()
        digest: str | None = None
        job: AnnotateJob | None = None
        try:
            digest = file_sha256(Path(task.input))
            source = VideoSource(task.input)
            exports = annotation_exports(self.config, source, coco=_path(task.coco), masks_dir=_path(task.masks))
            job = AnnotateJob(self.config, source, _path(task.video), on_frame=on_frame, exports=exports,
                              engine=self.engine)
            job.run()
            error = None
        except StageFailed as failure:
            error = str(failure.error) if isinstance(failure.error, (MediaError, DecodeError)) else str(failure)
        except Exception as failure:  # noqa: BLE001 - one video's failure is its entry's, never the batch's
            error = str(failure) if isinstance(failure, (MediaError, OSError)) else \
                f"{type(failure).__name__}: {failure}"
        return Result(frames=0 if job is None else job.frames_written, seconds=time.perf_counter() - started,
                      sha256=digest, error=None if error is None else " ".join(error.split()), worker=self.name)

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def uses_gpu(config: RunConfig) -> bool:
    """Whether the engine runs on a GPU where there is one: a neural engine not told `device=cpu`."""
    params = ENGINES[config.engine].engine_class().Params
    has_device = any(f.name == "device" for f in dataclasses.fields(params))
    return has_device and config.engine_params.get("device") != "cpu"
