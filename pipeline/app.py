"""Assembles the file-to-file job: decode → preprocess → infer → render → encode, one thread each.

The output file is opened when the first frame reaches the writer, so a run that fails before producing a frame
(engine cannot load, first packet undecodable) leaves nothing on disk; once opened, the writer's teardown always
finalizes it, after an error or Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import logging
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
from pipeline.video_io import VideoSink, VideoSource, one_line

log = logging.getLogger(__name__)


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


class EngineRestarts:
    """Replaces an engine that raised with a new, loaded one, up to `limit` times: a live run goes on."""

    def __init__(self, make_engine: Callable[[], Engine], limit: int, source: str) -> None:
        self._make_engine = make_engine
        self.limit = limit
        self.used = 0
        self._source = source

    def replace(self, failed: Engine, error: Exception, frame: int) -> Engine:
        """A new engine in place of `failed` (closed, best effort), logged in one line; raises once `limit` is used."""
        if self.used == self.limit:
            raise RuntimeError(f"{one_line(error)} (after {self.limit} engine restarts)") from error
        with contextlib.suppress(Exception):  # it already failed; its close may fail too
            failed.close()
        engine = self._make_engine()
        engine.load()
        self.used += 1
        log.warning("%s: the engine failed at frame %d (%s); restarted it (%d of %d)", self._source, frame,
                    one_line(error), self.used, self.limit)
        return engine


def build_stages(engine: Engine, renderer: Renderer | None, write: Callable[[Frame], None], batch: int, *,
                 track: TrackSettings | None = None, exports: Sequence[Export] = (), loaded: bool = False,
                 infer_timeout: float = 0.0, load_timeout: float = 0.0, restarts: EngineRestarts | None = None
                 ) -> list[Stage]:
    """The stages after capture, sharing one engine and one renderer: preprocess → infer → track → export → render
    → write. `track` (when enabled and the engine is an instance engine) adds the track stage, `exports` the export
    stage; without a renderer (annotations only) the last two are left out and `write` gets each exported frame.
    `loaded`: the caller loaded the engine and keeps it for more videos, so the infer stage resets it instead of
    loading it, and leaves it open. `infer_timeout`, `load_timeout`: the infer stage's watchdog limits in seconds
    (0: none; the load's covers the first, warm-up call too). `restarts`: an engine that raises is replaced and the
    frames it was given are dropped, instead of failing the run."""
    meter = RateMeter()
    tracker = Tracker(track) if track is not None and track.enabled and engine.kind == "instance" else None

    def preprocess(frames: list[Frame]) -> list[tuple[Frame, Any]]:
        return [(frame, engine.prepare(frame)) for frame in frames]

    def infer(items: list[tuple[Frame, Any]]) -> list[tuple[Frame, Segmentation]]:
        nonlocal engine
        frames = [frame for frame, _ in items]
        try:
            results = engine.infer(frames, [prepared for _, prepared in items])
        except Exception as error:
            if restarts is None:
                raise
            engine = restarts.replace(engine, error, frames[0].index)
            return []
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
              teardown=None if loaded else lambda: engine.close(), timeout=infer_timeout or None,
              setup_timeout=load_timeout or None),
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
                              loaded=engine is not None, infer_timeout=config.pipeline.infer_timeout,
                              load_timeout=config.pipeline.load_timeout)
        if self._sink is not None:
            stages[-1].teardown = self._sink.close
        policy = Policy.LIVE if config.pipeline.policy == "live" else Policy.LOSSLESS
        self.runner = Runner(source, stages, queue_size=config.pipeline.queue_size, policy=policy)

    @property
    def frames_written(self) -> int:
        """Frames in the output (the video, or the exports without one) so far; after a failed write, those that
        reached the disk."""
        return self._frames if self._sink is None else self._sink.frames_written

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
