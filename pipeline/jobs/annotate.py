"""The file job: a video file in, its annotated copy and/or machine-readable annotations out, every frame in order.

`annotation_job` checks every path before anything is written, opens the input and assembles the job; `AnnotateJob`
runs decode → the frame path (`seg_video.jobs.frame_path`) → encode. The video is written by `VideoWriter` (opened
at the first frame, always finalized); the exports by the export stage. `seg_video.annotate` and the CLI's file run
are both this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seg_video.core.errors import UsageError
from seg_video.core.runner import Policy, Runner, RunStats
from seg_video.core.threads import opencv_threads, threads_left
from seg_video.core.types import Item
from seg_video.io.exports import CocoWriter, Export, LabelMapWriter
from seg_video.io.paths import OutputGuard, check_folder, check_input, check_output
from seg_video.io.video import VideoSource, VideoWriter, output_plan
from seg_video.jobs.frame_path import OwnEngine, build_stages
from seg_video.stages.render import Renderer
from seg_video.stages.track import tracker_for

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig
    from seg_video.engines.base import Engine
    from seg_video.jobs.watching import WatchPlan, WatchStep


@dataclass
class RunSummary:
    """What a finished (or stopped) run produced."""

    frames: int
    seconds: float
    output: Path | None
    """The video written; None for an annotations-only run."""
    stats: RunStats

    @property
    def fps(self) -> float:
        """Frames written per wall-clock second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class FileOutput:
    """The file job's frame sink: the annotated video (if any) and a count of the frames done."""

    def __init__(self, writer: VideoWriter | None, on_frame: Callable[[int], None] | None) -> None:
        self.writer = writer
        self.on_frame = on_frame
        self.frames = 0

    def write(self, item: Item) -> None:
        if self.writer is not None:
            self.writer.write(item.output_frame())
        self.frames += 1
        if self.on_frame is not None:
            self.on_frame(self.frames_written)

    @property
    def frames_written(self) -> int:
        return self.frames if self.writer is None else self.writer.frames_written

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def annotation_exports(config: RunConfig, source: VideoSource, guard: OutputGuard, *, coco: Path | None = None,
                       masks_dir: Path | None = None) -> list[Export]:
    """The annotation sinks a file run asks for: COCO results (named after the input video) and/or label-map PNGs,
    each writing only where `guard` allows."""
    exports: list[Export] = []
    if coco is not None:
        exports.append(CocoWriter(coco, video_name=Path(source.info.path).name, fps=source.info.fps,
                                  engine=config.engine, guard=guard))
    if masks_dir is not None:
        exports.append(LabelMapWriter(masks_dir, guard))
    return exports


class AnnotateJob:
    """One file-to-file run; `frames_written` stays readable after `run` raises, for the error message.

    `output` None: annotations only (the `exports`), without the render stage. `owned`: the run loads the engine
    (in its infer thread) and closes it at the end; otherwise the caller loaded it and keeps it for more runs (a
    batch worker's, or one from `seg_video.load_engine`), and the run resets it. `on_frame` is told the count of
    frames done after each one. `guard` (default: one protecting the input) checks the video before it is written.
    """

    def __init__(self, config: RunConfig, source: VideoSource, output: Path | None, engine: Engine, *, owned: bool,
                 exports: Sequence[Export] = (), on_frame: Callable[[int], None] | None = None,
                 guard: OutputGuard | None = None, watch: WatchStep | None = None) -> None:
        info = source.info
        writer = None if output is None else VideoWriter(output, config.output, fps=info.fps, time_base=info.time_base,
                                                         audio_from=info.path,
                                                         guard=guard or OutputGuard([Path(info.path)]))
        self.source = source
        self.watching = watch
        """The run's lines, zones, privacy and heatmap (None: nothing watched)."""
        self._output = FileOutput(writer, on_frame)
        batch = config.pipeline.frames_per_call()
        stages = build_stages(OwnEngine(engine, batch=batch, owned=owned), self._output,
                              tracker=tracker_for(config.track, engine.kind),
                              renderer=None if output is None else Renderer(config.render), batch=batch,
                              exports=exports, watch=watch,
                              infer_timeout=config.pipeline.infer_timeout, load_timeout=config.pipeline.load_timeout)
        policy = Policy.LIVE if config.pipeline.policy == "live" else Policy.LOSSLESS
        self.runner = Runner(source, stages, queue_size=config.pipeline.queue_size, policy=policy)
        self._opencv_threads = config.pipeline.opencv_threads

    @property
    def frames_written(self) -> int:
        """Frames in the output (the video, or the exports without one) so far; after a failed write, those that
        reached the disk."""
        return self._output.frames_written

    @property
    def total_frames(self) -> int | None:
        """Frames the run will write, when the input says how many it has."""
        count = self.source.info.frame_count
        limit = self.source.max_frames
        return count if limit is None or count is None else min(count, limit)

    def watch(self, on_frame: Callable[[int], None]) -> None:
        """Tell `on_frame` the count of frames done after each one (a progress display)."""
        self._output.on_frame = on_frame

    def run(self) -> RunSummary:
        """Run to the end of the input; raises `StageFailed` (stage named) or `KeyboardInterrupt`."""
        started = time.perf_counter()
        with opencv_threads(threads_left(self.runner.thread_count, self._opencv_threads)):
            stats = self.runner.run()
        writer = self._output.writer
        return RunSummary(frames=self.frames_written, seconds=time.perf_counter() - started,
                          output=None if writer is None else writer.path, stats=stats)


def annotation_job(source: Path, output: Path | None, config: RunConfig, engine: Engine, *, owned: bool,
                   coco: Path | None = None, masks_dir: Path | None = None, overwrite: bool = False,
                   max_frames: int | None = None, watch: WatchPlan | None = None) -> AnnotateJob:
    """Check every path (nothing is written yet: `UsageError` says what is wrong), open the input (`MediaError`), and
    assemble the job. An existing output is replaced only with `overwrite`; no output is ever the input."""
    if output is None and coco is None and masks_dir is None:
        raise UsageError("nothing to write: give an output video, a COCO file and/or a label-map folder")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; got {max_frames}")
    files = [path for path in (output, coco) if path is not None]
    if len({path.resolve() for path in files}) < len(files):
        raise UsageError(f"OUTPUT and --coco are the same file: {coco}")
    check_input(source)
    guard = OutputGuard([source])
    for path in files:
        check_output(path, guard, overwrite=overwrite)
    if output is not None:
        output_plan(output, config.output)  # a container seg-video can write, checked before anything loads
    if masks_dir is not None:
        check_folder(masks_dir, guard, overwrite=overwrite)
    video = VideoSource(source, max_frames=max_frames)
    exports = annotation_exports(config, video, guard, coco=coco, masks_dir=masks_dir)
    return AnnotateJob(config, video, output, engine, owned=owned, exports=exports, guard=guard,
                       watch=None if watch is None else watch.step(str(source)))
