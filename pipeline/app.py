"""Assembles the file-to-file job: decode → preprocess → infer → render → encode, one thread each.

The output file is opened when the first frame reaches the writer, so a run that fails before producing a frame
(engine cannot load, first packet undecodable) leaves nothing on disk; once opened, the writer's teardown always
finalizes it, after an error or Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import Engine, create_engine
from pipeline.config import RunConfig
from pipeline.exports import CocoWriter, Export, LabelMapWriter
from pipeline.render import Renderer
from pipeline.runner import Policy, Runner, RunStats, Stage
from pipeline.tracking import Tracker, TrackSettings
from pipeline.types import Frame, Segmentation
from pipeline.video_io import VideoSink, VideoSource


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


class RateMeter:
    """Frames per second over a sliding window, for the on-frame fps overlay."""

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


class LazySink:
    """Opens the `VideoSink` at the first frame and finalizes it on close; counts frames written."""

    def __init__(self, path: Path, source: VideoSource, config: RunConfig) -> None:
        self.path = path
        self._source = source
        self._config = config
        self._sink: VideoSink | None = None

    @property
    def frames_written(self) -> int:
        """Frames encoded so far."""
        return 0 if self._sink is None else self._sink.frames_written

    def write(self, frame: Frame) -> None:
        """Encode one rendered frame, opening the output on the first."""
        if self._sink is None:
            info = self._source.info
            self._sink = VideoSink(self.path, width=frame.size[1], height=frame.size[0], time_base=info.time_base,
                                   fps=info.fps, settings=self._config.output, audio_from=info.path)
        self._sink.write(frame)

    def close(self) -> None:
        """Flush and close the output if it was opened."""
        if self._sink is not None:
            self._sink.close()


def build_stages(engine: Engine, renderer: Renderer | None, write: Callable[[Frame], None], batch: int, *,
                 track: TrackSettings | None = None, exports: Sequence[Export] = (), loaded: bool = False
                 ) -> list[Stage]:
    """The stages after capture, sharing one engine and one renderer: preprocess → infer → track → export → render
    → write. `track` (when enabled and the engine is an instance engine) adds the track stage, `exports` the export
    stage; without a renderer (annotations only) the last two are left out and `write` gets each exported frame.
    `loaded`: the caller loaded the engine and keeps it for more videos, so the infer stage resets it instead of
    loading it, and leaves it open."""
    meter = RateMeter()
    tracker = Tracker(track) if track is not None and track.enabled and engine.kind == "instance" else None

    def preprocess(frames: list[Frame]) -> list[tuple[Frame, Any]]:
        return [(frame, engine.prepare(frame)) for frame in frames]

    def infer(items: list[tuple[Frame, Any]]) -> list[tuple[Frame, Segmentation]]:
        frames = [frame for frame, _ in items]
        results = engine.infer(frames, [prepared for _, prepared in items])
        return list(zip(frames, results, strict=True))

    def render(items: list[tuple[Frame, Segmentation]]) -> list[Frame]:
        assert renderer is not None  # staged only with a renderer
        rendered = []
        for frame, seg in items:
            image = renderer.render(frame.image, seg, fps=meter.tick())
            rendered.append(Frame(index=frame.index, image=image, pts=frame.pts, time_base=frame.time_base,
                                  source_id=frame.source_id, captured_at=frame.captured_at))
        return rendered

    def encode(frames: list[Frame]) -> list[Frame]:
        for frame in frames:
            write(frame)
        return []

    def export(items: list[tuple[Frame, Segmentation]]) -> list[tuple[Frame, Segmentation]]:
        for frame, seg in items:
            for sink in exports:
                sink.write(frame, seg)
            if renderer is None:
                write(frame)
        return [] if renderer is None else items

    def close_exports() -> None:
        with contextlib.ExitStack() as closing:  # every sink is closed, even after one fails to
            for sink in exports:
                closing.callback(sink.close)

    stages = [
        Stage("preprocess", preprocess),
        Stage("infer", infer, batch_size=batch, setup=engine.reset if loaded else engine.load,
              teardown=None if loaded else engine.close),
    ]
    if tracker is not None:
        stages.append(Stage("track", lambda items: [(frame, tracker.update(seg, frame.index)) for frame, seg in items]))
    if exports or renderer is None:
        stages.append(Stage("export", export, teardown=close_exports))
    if renderer is not None:
        stages += [Stage("render", render), Stage("write", encode)]
    return stages


def annotation_exports(config: RunConfig, source: VideoSource, *, coco: Path | None = None,
                       masks_dir: Path | None = None) -> list[Export]:
    """The annotation sinks a file run asks for: COCO results (named after the input video) and/or label-map PNGs."""
    exports: list[Export] = []
    if coco is not None:
        exports.append(CocoWriter(coco, video_name=Path(source.info.path).name, fps=source.info.fps,
                                  engine=config.engine))
    if masks_dir is not None:
        exports.append(LabelMapWriter(masks_dir))
    return exports


class AnnotateJob:
    """One file-to-file run; `frames_written` stays readable after `run` raises, for the error message.

    `output` None: annotations only (the `exports`), without the render and encode stages. `engine`: one the caller
    loaded and keeps loaded across runs (a batch worker's; reset for this video); None: this run builds, loads and
    closes its own.
    """

    def __init__(self, config: RunConfig, source: VideoSource, output: Path | None,
                 *, on_frame: Callable[[int], None] | None = None, exports: Sequence[Export] = (),
                 engine: Engine | None = None) -> None:
        self._sink = None if output is None else LazySink(output, source, config)
        self._on_frame = on_frame
        self._frames = 0
        renderer = None if output is None else Renderer(config.render)
        stages = build_stages(engine or create_engine(config.engine, config.engine_params), renderer,
                              self._write, config.pipeline.batch, track=config.track, exports=exports,
                              loaded=engine is not None)
        if self._sink is not None:
            stages[-1].teardown = self._sink.close
        policy = Policy.LIVE if config.pipeline.policy == "live" else Policy.LOSSLESS
        self.runner = Runner(source, stages, queue_size=config.pipeline.queue_size, policy=policy)

    @property
    def frames_written(self) -> int:
        """Frames in the output (the video, or the exports without one) so far."""
        return self._frames

    def run(self) -> RunSummary:
        """Run to the end of the input; raises `StageFailed` (stage named) or `KeyboardInterrupt`."""
        started = time.perf_counter()
        stats = self.runner.run()
        return RunSummary(frames=self.frames_written, seconds=time.perf_counter() - started,
                          output=None if self._sink is None else self._sink.path, stats=stats)

    def _write(self, frame: Frame) -> None:
        if self._sink is not None:
            self._sink.write(frame)
        self._frames += 1
        if self._on_frame is not None:
            self._on_frame(self.frames_written)
