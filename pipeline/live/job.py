"""The live job: cameras, streams (and files played as live) → segmented pictures in a window, a browser, a file.

Each source gets its own pipeline (capture → preprocess → infer → track → render → publish, the stages of
`seg_video.jobs.frame_path`) with its own tracker, so track ids see one scene each. Their infer stages share one
engine (`seg_video.jobs.shared_engine`: the newest frame of each source in one batch, the network loaded once;
stateful engines keep a state per source), or with `live.engine_per_source` each has an engine of its own.
Under the live policy every queue holds one frame and the newest wins, so latency stays about one inference time
plus one frame interval however long the run. The publish stage hands each rendered frame to the source's `Feed`
(read by the window and the web view) and to its recording. All pipelines share one stop event: `q` in the
window, Ctrl-C or a failing stage ends them all, and every recording is finalized.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from seg_video.core.errors import StageFailed
from seg_video.core.runner import Policy, Runner, RunStats
from seg_video.core.text import mask_credentials
from seg_video.core.types import Frame, Item
from seg_video.engines.base import Engine, create_engine
from seg_video.io.clips import ClipSettings, ClipTrigger, EventClips
from seg_video.io.paths import OutputGuard
from seg_video.io.restream import Restream
from seg_video.io.streams import LiveInput, SourceState, source_kind
from seg_video.io.video import VideoWriter
from seg_video.jobs.frame_path import EngineRestarts, Inference, OwnEngine, build_stages
from seg_video.jobs.shared_engine import SharedEngine
from seg_video.jobs.watching import WatchPlan, WatchStep
from seg_video.live.feed import Feed, FeedStats
from seg_video.live.web import Address, WebView
from seg_video.live.window import Window
from seg_video.stages.render import Renderer
from seg_video.stages.track import tracker_for

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig


@dataclass
class LivePlan:
    """What the command line asks of a live run: its sources and where the recording goes (if anywhere)."""

    sources: list[str]
    output: str | None


def plan_live(positionals: Sequence[str], *, viewer: bool, output: str | None) -> LivePlan | None:
    """Read the positional arguments: None for the plain file job `IN OUT`, else the live run's sources.

    Without a viewer (window, web), two arguments whose second is a file are `IN OUT`: a file job when IN is a
    file, a live recording when IN is a camera or stream. Any other shape makes every argument a source.
    """
    kinds = [source_kind(p) for p in positionals]
    if not viewer and output is None and len(positionals) == 2 and kinds[1] == "file":
        return None if kinds[0] == "file" else LivePlan([positionals[0]], positionals[1])
    if not viewer and all(kind == "file" for kind in kinds) and len(positionals) <= 2:
        return None
    return LivePlan(list(positionals), output)


def output_paths(output: Path, count: int) -> list[Path]:
    """The recording of each of `count` sources: `output` itself for one, `name-0.mp4`, `name-1.mp4`… for more."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(count)]


@dataclass
class LiveOptions:
    """Where a live run's pictures go besides its feeds: a window, a web view, recordings, RTSP servers, HLS
    folders (one of each per source)."""

    display: bool = False
    serve: Address | None = None
    token: str | None = None
    outputs: list[Path] = field(default_factory=list)
    rtsp_out: list[str] = field(default_factory=list)
    """The RTSP URL each source is published to (`seg_video.io.restream.rtsp_targets`)."""
    hls_dirs: list[Path] = field(default_factory=list)
    """The folder of each source's live HLS playlist (`seg_video.io.restream.hls_dirs`; made if missing), which the
    web view also serves."""
    watch: WatchPlan | None = None
    """Lines, zones, privacy masking, heatmaps and event sinks (each source gets its own step; the sinks are the
    run's, closed by whoever made the plan)."""
    clips: tuple[Path, Sequence[ClipTrigger], ClipSettings] | None = None
    """Where clips on events go, the events that make them, and their rolls."""
    snapshot_dir: Path = Path(".")
    guard: OutputGuard = field(default_factory=OutputGuard)
    """Checks every recording and snapshot before it is written (the file sources are its inputs)."""


@dataclass
class LiveSummary:
    """What a finished (or stopped) live run did, per source."""

    seconds: float
    feeds: list[FeedStats]
    recordings: list[tuple[Path, int] | None]
    """Per source, in order: its recording's path and frame count, if it was recorded."""
    restreams: list[list[Restream]]
    """Per source, in order: its restreams (closed; their counts of frames sent and dropped stay readable)."""


@dataclass(frozen=True)
class Callbacks:
    """What a program embedding the live job is told, from each source's last stage (keep them quick)."""

    on_frame: Callable[[Frame], None] | None = None
    """Each rendered frame, as published."""
    on_item: Callable[[Item], None] | None = None
    """Each finished item: the captured frame, its segmentation (tracked) and its rendered picture."""


class _Publisher:
    """A live pipeline's frame sink: each rendered frame to the source's feed, its recording and the callbacks."""

    def __init__(self, feed: Feed, state: SourceState, recorder: VideoWriter | None, restreams: list[Restream],
                 clips: EventClips | None, callbacks: Callbacks) -> None:
        self.feed = feed
        self.recorder = recorder
        self._restreams = restreams
        self._clips = clips
        self._state = state
        self._callbacks = callbacks

    def write(self, item: Item) -> None:
        frame = item.output_frame()
        self.feed.publish(frame)
        for restream in self._restreams:
            restream.write(frame)  # never blocks: a stalled receiver costs that restream frames, not the pipeline
        if self._clips is not None:
            self._clips.write(frame)
            for event in item.events:
                self._clips.event(event)
        if self.recorder is not None:
            self.recorder.write(frame)
        if self._callbacks.on_frame is not None:
            self._callbacks.on_frame(frame)
        if self._callbacks.on_item is not None:
            self._callbacks.on_item(item)

    def close(self) -> None:
        self._state.status = "ended"
        with contextlib.ExitStack() as closing:  # every output is finalized, even after one fails to
            for restream in self._restreams:
                closing.callback(restream.close)
            if self._clips is not None:
                closing.callback(self._clips.close)
            if self.recorder is not None:
                closing.callback(self.recorder.close)


@dataclass(frozen=True)
class _SourceOutputs:
    """Where the `index`-th source's annotated frames are kept and sent besides its feed."""

    options: LiveOptions
    index: int

    @property
    def recording(self) -> Path | None:
        return self.options.outputs[self.index] if self.options.outputs else None

    def restreams(self, source: LiveInput) -> list[Restream]:
        """The source's RTSP and HLS restreams, started (each in a thread of its own); the HLS folder is made."""
        targets: list[str | Path] = []
        if self.options.rtsp_out:
            targets.append(self.options.rtsp_out[self.index])
        if self.options.hls_dirs:
            folder = self.options.hls_dirs[self.index]
            folder.mkdir(parents=True, exist_ok=True)
            targets.append(folder)
        return [Restream(target, fps=source.fps, name=f"{source.name} → {mask_credentials(str(target))}")
                for target in targets]

    def watch(self, source: LiveInput, count: int) -> WatchStep | None:
        """The source's lines, zones, privacy masking and heatmap (None: nothing watched)."""
        plan = self.options.watch
        return None if plan is None else plan.step(source.name, self.index, count)

    def clips(self, source: LiveInput) -> EventClips | None:
        """The source's clips on events (None without `clips`)."""
        if self.options.clips is None:
            return None
        folder, triggers, settings = self.options.clips
        return EventClips(folder, triggers, settings, source=source.name, fps=source.fps)


class _Pipeline:
    """One source's run: the frame path after capture, publishing into a feed and an optional recording."""

    def __init__(self, source: LiveInput, inference: Inference, batch: int, config: RunConfig,
                 stop: threading.Event, outputs: _SourceOutputs, guard: OutputGuard, callbacks: Callbacks,
                 count: int) -> None:
        live = source.policy is Policy.LIVE
        self.source = source
        self.recorder = None if outputs.recording is None else VideoWriter(outputs.recording, config.output,
                                                                           fps=source.fps, guard=guard)
        self.restreams = outputs.restreams(source)
        self.watching = outputs.watch(source, count)
        stats = RunStats()
        self.feed = Feed(source.name, source.state, stats)
        publisher = _Publisher(self.feed, source.state, self.recorder, self.restreams, outputs.clips(source),
                               callbacks)
        stages = build_stages(inference, publisher, tracker=tracker_for(config.track, inference.engine.kind),
                              renderer=Renderer(config.render), batch=batch, watch=self.watching,
                              infer_timeout=config.pipeline.infer_timeout, load_timeout=config.pipeline.load_timeout)
        self.runner = Runner(source.frames, stages, queue_size=1 if live else config.pipeline.queue_size,
                             policy=source.policy, stop_event=stop, stats=stats)
        self.failure: StageFailed | None = None
        self.finished = threading.Event()
        """Set when `run` has returned (its recording finalized); see `Runner._thread` for why not `is_alive`."""

    def run(self) -> None:
        """Run to the end of the source or the stop; a failure stops every pipeline and is kept for the job."""
        try:
            self.runner.run()
        except StageFailed as failure:
            self.failure = failure
            self.runner.stop()
        finally:
            self.finished.set()


class LiveJob:
    """Runs one pipeline per source, all stopped together, while the window (in this thread) and the web view show
    them; `stop` is the event the sources were opened with. The pipelines share one engine, `engine` when given
    (built, not loaded: the run loads and closes it), else one built with `engine_factory` (default: the config's
    engine), which also builds the replacements of an engine that fails (`live.engine_restarts`) and, with
    `live.engine_per_source`, every source's own. `on_frame`, `on_item`: see `Callbacks`. Binds the web view's port
    at once (`OSError`)."""

    def __init__(self, config: RunConfig, sources: Sequence[LiveInput], options: LiveOptions, *,
                 stop: threading.Event, engine: Engine | None = None,
                 engine_factory: Callable[[], Engine] | None = None,
                 on_frame: Callable[[Frame], None] | None = None, on_item: Callable[[Item], None] | None = None
                 ) -> None:
        for given, what in ((options.outputs, "recordings"), (options.rtsp_out, "RTSP targets"),
                            (options.hls_dirs, "HLS folders")):
            if given and len(given) != len(sources):
                raise ValueError(f"{len(given)} {what} for {len(sources)} sources")
        make_engine = engine_factory or (lambda: create_engine(config.engine, config.engine_params))
        outputs = [_SourceOutputs(options, i) for i in range(len(sources))]
        first = engine or make_engine()
        self.stop_event = stop
        self._options = options
        self.shared: SharedEngine | None = None
        """The engine every source shares (None with `live.engine_per_source`); its `stats` count its calls."""
        inferences: list[Inference]
        if config.live.engine_per_source:
            inferences = [OwnEngine(own, batch=_batch(source, config), restarts=_restarts(config, make_engine, name))
                          for own, source, name in zip([first] + [make_engine() for _ in sources[1:]], sources,
                                                       (source.name for source in sources), strict=True)]
        else:
            gathered = len(sources) if first.batches_well() else 1
            self.shared = SharedEngine(first, batch=config.pipeline.frames_per_call(gathered),
                                       gather=config.live.gather_ms / 1000,
                                       restarts=_restarts(config, make_engine, _shared_name(sources)))
            inferences = [self.shared.link(source.name, stop) for source in sources]
        self._pipelines = [_Pipeline(source, inference, _batch(source, config), config, stop, output, options.guard,
                                     Callbacks(on_frame, on_item), len(sources))
                           for source, inference, output in zip(sources, inferences, outputs, strict=True)]
        self.feeds = [pipeline.feed for pipeline in self._pipelines]
        self.web = None if options.serve is None else WebView(self.feeds, options.serve, token=options.token,
                                                              hls_dirs=options.hls_dirs)

    def run(self) -> LiveSummary:
        """Run until every source ends, the window is closed (q/Esc) or `stop()`; raises `StageFailed`,
        `KeyboardInterrupt`, or `DisplayError` when no window can open."""
        started = time.perf_counter()
        threads = [threading.Thread(target=p.run, name=f"live-{i}", daemon=True)
                   for i, p in enumerate(self._pipelines)]

        def running() -> bool:
            return not all(pipeline.finished.is_set() for pipeline in self._pipelines)

        try:
            if self.web is not None:
                self.web.start()
            if self.shared is not None:
                self.shared.start()
            for thread in threads:
                thread.start()
            if self._options.display:
                Window(self.feeds, snapshot_dir=self._options.snapshot_dir, guard=self._options.guard).run(running)
                self.stop_event.set()
            while running():
                for pipeline in self._pipelines:
                    pipeline.finished.wait(0.1)
        finally:
            self.stop_event.set()
            for thread, pipeline in zip(threads, self._pipelines, strict=True):
                if thread.ident is not None:  # started
                    pipeline.finished.wait()
            if self.shared is not None:
                self.shared.close()
            if self.web is not None:
                self.web.close()
        for pipeline in self._pipelines:
            if pipeline.failure is not None:
                raise pipeline.failure from pipeline.failure.error
        return LiveSummary(seconds=time.perf_counter() - started, feeds=[f.stats() for f in self.feeds],
                           recordings=[None if p.recorder is None else (p.recorder.path, p.recorder.frames_written)
                                       for p in self._pipelines],
                           restreams=[p.restreams for p in self._pipelines])

    def stop(self) -> None:
        """End the run from any thread: sources stop, stages finish, recordings are finalized."""
        self.stop_event.set()

    @property
    def frames_recorded(self) -> int:
        """Frames in all recordings so far."""
        return sum(p.recorder.frames_written for p in self._pipelines if p.recorder is not None)

    @property
    def watching(self) -> list[WatchStep | None]:
        """Each source's lines, zones and heatmap (their counts readable while the run goes and after it)."""
        return [p.watching for p in self._pipelines]

    @property
    def run_stats(self) -> list[RunStats]:
        """Each source's pipeline counters (its queues included), readable while the run goes: for soak tests."""
        return [p.runner.stats for p in self._pipelines]


def _batch(source: LiveInput, config: RunConfig) -> int:
    """Frames per inference call of a source's pipeline: one under the live policy, so nothing waits behind stale
    frames."""
    return 1 if source.policy is Policy.LIVE else config.pipeline.frames_per_call()


def _restarts(config: RunConfig, make_engine: Callable[[], Engine], name: str) -> EngineRestarts | None:
    """Replacements for a failing engine, as many as `live.engine_restarts` allows (none by default)."""
    limit = config.live.engine_restarts
    return EngineRestarts(make_engine, limit, name) if limit else None


def _shared_name(sources: Sequence[LiveInput]) -> str:
    """What messages call the shared engine: its only source's name, or how many it serves."""
    return sources[0].name if len(sources) == 1 else f"the engine shared by {len(sources)} sources"
