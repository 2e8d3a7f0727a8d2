"""The frame path every job runs after capture: preprocess → infer (→ finish) (→ privacy) → track (→ watch) → export →
render → write, one thread each (`seg_video.core.runner`), every stage filling in its part of the frame's `Item`. An
engine that splits its inference (`Engine.finish`) has its second, frame-independent half run in a finish stage of
its own.

The job hands in the parts it wants: the inference (an engine of its own, or its share of one that serves many
sources), a tracker, the watching (`seg_video.jobs.watching`), exports, a renderer. The last stage gives each
finished item to the job's `FrameSink` (a video writer, a live feed, the iterator of `seg_video.segment`) and closes
it at the end, however the run ends; without a renderer, the exports are written in that same stage.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from seg_video.core.rate import RateMeter
from seg_video.core.stage import Stage
from seg_video.core.text import one_line
from seg_video.core.types import Frame, Item

if TYPE_CHECKING:
    from seg_video.engines.base import Engine
    from seg_video.io.exports import Export
    from seg_video.jobs.watching import WatchStep
    from seg_video.stages.render import Renderer
    from seg_video.stages.track import Tracker

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Where the write stage hands each finished item, in frame order; closed once, in the write stage's thread."""

    def write(self, item: Item) -> None:
        """Take one finished item."""

    def close(self) -> None:
        """The run is over (ended, stopped or failed)."""


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


class Inference(Protocol):
    """What the infer stage runs: an engine of the pipeline's own (`OwnEngine`) or its share of one serving many
    sources (`seg_video.jobs.shared_engine`)."""

    @property
    def engine(self) -> Engine:
        """The engine whose `prepare` and `finish` the pipeline's other stages call (it may change on a restart)."""

    def start(self) -> None:
        """Get ready, in the infer thread, before the first frames (load the engine, or wait for it to be loaded)."""

    def observe(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Any] | None:
        """`Engine.observe` on a batch, in the infer thread; None when the engine failed and was replaced (the
        frames are dropped)."""

    def stop(self) -> None:
        """The run is over: release what `start` took."""


def observe_warm(engine: Engine, frames: Sequence[Frame], prepared: Sequence[Any], warm: set[tuple[int, int]],
                 batch: int) -> list[Any]:
    """`engine.observe`, warming the engine up first for each frame size it has not seen (noted in `warm`) with
    batches of `batch`."""
    for height, width in {frame.size for frame in frames} - warm:
        engine.warm_up(height, width, batch)
        warm.add((height, width))
    return engine.observe(frames, prepared)


class OwnEngine:
    """A pipeline's own engine. `owned`: the run loads it in its infer thread and closes it at the end; otherwise
    the caller loaded it and keeps it for more runs, so the run only resets it. `restarts`: an engine that raises is
    replaced and the frames it was given are dropped, instead of failing the run."""

    def __init__(self, engine: Engine, *, batch: int = 1, owned: bool = True,
                 restarts: EngineRestarts | None = None) -> None:
        self.engine = engine
        self._batch = batch
        self._owned = owned
        self._restarts = restarts
        self._warm: set[tuple[int, int]] = set()
        """The frame sizes the current engine has warmed up for in this run."""

    def start(self) -> None:
        """Load the engine (owned) or reset it (the caller's)."""
        if self._owned:
            self.engine.load()
        else:
            self.engine.reset()

    def observe(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Any] | None:
        """The engine's results for the batch, warmed up for its frame size first; None after a restart."""
        try:
            return observe_warm(self.engine, frames, prepared, self._warm, self._batch)
        except Exception as error:
            if self._restarts is None:
                raise
            self.engine = self._restarts.replace(self.engine, error, frames[0].index)
            self._warm.clear()
            return None

    def stop(self) -> None:
        """Close the engine if the run owns it."""
        if self._owned:
            self.engine.close()


def build_stages(inference: Inference, sink: FrameSink, *, tracker: Tracker | None = None,
                 renderer: Renderer | None = None, batch: int = 1, exports: Sequence[Export] = (),
                 watch: WatchStep | None = None, infer_timeout: float = 0.0, load_timeout: float = 0.0
                 ) -> list[Stage]:
    """The stages after capture, around `inference` (which the infer stage starts and stops in its thread), taking
    `batch` frames per inference call. `watch`: the source's privacy masking (right after inference), lines, zones
    and heatmap (after tracking) and their drawing (on the rendered picture). `infer_timeout`, `load_timeout`:
    the infer stage's watchdog limits in seconds (0: none; the load's covers the first call too, so the warm-up
    for the run's first frames counts as setup)."""
    meter = RateMeter()
    finishing = inference.engine.finishes()

    def preprocess(items: list[Item]) -> list[Item]:
        for item in items:
            item.prepared = inference.engine.prepare(item.frame)
        return items

    def infer(items: list[Item]) -> list[Item]:
        results = inference.observe([item.frame for item in items], [item.prepared for item in items])
        if results is None:
            return []
        for item, result in zip(items, results, strict=True):
            item.prepared = None  # the prepared input may hold device memory
            if finishing:
                item.observed = result
            else:
                item.segmentation = result
        return items

    def finish(items: list[Item]) -> list[Item]:
        for item in items:
            item.segmentation, item.observed = inference.engine.finish(item.frame, item.observed), None
        return items

    def protect(items: list[Item]) -> list[Item]:
        assert watch is not None  # staged only with a watch step
        for item in items:
            watch.protect(item)
        return items

    def observe(items: list[Item]) -> list[Item]:
        assert watch is not None
        for item in items:
            watch.observe(item)
        return items

    def follow(items: list[Item]) -> list[Item]:
        assert tracker is not None  # staged only with a tracker
        for item in items:
            item.segmentation = tracker.update(item.result(), item.index, item.frame.seconds)
        return items

    def export(items: list[Item]) -> list[Item]:
        for item in items:
            for target in exports:
                target.write(item.frame, item.result())
        return items

    def render(items: list[Item]) -> list[Item]:
        assert renderer is not None  # staged only with a renderer
        for item in items:
            item.rendered = renderer.render(item.frame.image, item.result(), fps=meter.tick())
            if watch is not None:
                watch.draw(item.rendered)
        return items

    def write(items: list[Item]) -> list[Item]:
        for item in items:
            sink.write(item)
        return []

    def close_exports() -> None:
        with contextlib.ExitStack() as closing:  # every output is closed, even after one fails to
            for target in exports:
                closing.callback(target.close)

    def close_all() -> None:
        with contextlib.ExitStack() as closing:
            closing.callback(sink.close)
            close_exports()

    stages = [
        Stage("preprocess", preprocess, on_demand=True),
        Stage("infer", infer, batch_size=batch, setup=inference.start, teardown=inference.stop,
              timeout=infer_timeout or None, setup_timeout=load_timeout or None),
    ]
    if finishing:
        stages.append(Stage("finish", finish))
    if watch is not None and watch.privacy is not None:
        stages.append(Stage("privacy", protect))
    if tracker is not None:
        stages.append(Stage("track", follow))
    if watch is not None:
        stages.append(Stage("watch", observe, teardown=watch.close))
    if renderer is not None:
        if exports:
            stages.append(Stage("export", export, teardown=close_exports))
        stages += [Stage("render", render), Stage("write", write, teardown=sink.close)]
    elif exports:  # the exports are the output: a frame counts as written once they have it
        stages.append(Stage("export", lambda items: write(export(items)), teardown=close_all))
    else:
        stages.append(Stage("write", write, teardown=sink.close))
    return stages
