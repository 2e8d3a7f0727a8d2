"""The worker of `seg-video batch`, the same in every kind of pool: it loads the engine once and annotates one video
after another, each by its own `AnnotateJob`; kept free of the manifest, the progress display and the command line,
so that a pool needs nothing else of the batch."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from seg_video.batch.messages import Result, Task
from seg_video.core.errors import DecodeError, MediaError, StageFailed
from seg_video.engines.base import create_engine, engine_class
from seg_video.engines.cache import file_sha256
from seg_video.io.paths import OutputGuard
from seg_video.io.video import VideoSource
from seg_video.jobs.annotate import AnnotateJob, annotation_exports

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig

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
            guard = OutputGuard([Path(task.input)])
            exports = annotation_exports(self.config, source, guard, coco=_path(task.coco), masks_dir=_path(task.masks))
            job = AnnotateJob(self.config, source, _path(task.video), self.engine, owned=False, exports=exports,
                              on_frame=on_frame, guard=guard)
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
    params = engine_class(config.engine).Params
    has_device = any(f.name == "device" for f in dataclasses.fields(params))
    return has_device and config.engine_params.get("device") != "cpu"
