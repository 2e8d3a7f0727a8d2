"""The iterator job behind `seg_video.segment`: the CLI's threaded pipeline, handing each frame and its
segmentation to the caller's loop instead of to a video.

A file is read losslessly (every frame, in order); a camera or stream under the live policy (each queue holds one
frame and the newest wins, so a slow loop gets fresh frames, not a backlog). Breaking out of the loop, `close()`,
leaving a `with` block or dropping the object stops every pipeline thread and releases the source.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from seg_video.core.runner import END, POLL_SECONDS, Policy, Runner, RunStats, StageQueue, Stopped
from seg_video.core.types import Frame, Item, Segmentation
from seg_video.io.streams import open_input, source_kind
from seg_video.io.video import VideoSource
from seg_video.jobs.frame_path import OwnEngine, build_stages
from seg_video.stages.track import tracker_for

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig
    from seg_video.engines.base import Engine

STOP_SECONDS = 1.0
"""How long `close` waits for a stage busy in one call (an inference) before leaving its thread to end by itself."""


class _Handoff:
    """The frame path's last stage's sink: finished items into a bounded queue the caller's loop reads."""

    def __init__(self, handed: StageQueue) -> None:
        self._handed = handed

    def write(self, item: Item) -> None:
        self._handed.put(item)

    def close(self) -> None:
        with contextlib.suppress(Stopped):  # stopped: the loop is told by the stop event instead
            self._handed.put(END)


class _Run:
    """The pipeline of one `Segments`, kept apart from it so that its threads never keep the `Segments` alive (an
    abandoned iterator is collected, and its finalizer stops the run)."""

    def __init__(self, frames: Iterable[Frame], config: RunConfig, engine: Engine, *, owned: bool, policy: Policy,
                 stop: threading.Event, release: list[Callable[[], None]]) -> None:
        live = policy is Policy.LIVE
        size = 1 if live else config.pipeline.queue_size
        self.handed = StageQueue(size, policy, stop)
        batch = 1 if live else config.pipeline.frames_per_call()
        stages = build_stages(OwnEngine(engine, batch=batch, owned=owned), _Handoff(self.handed),
                              tracker=tracker_for(config.track, engine.kind), batch=batch,
                              infer_timeout=config.pipeline.infer_timeout, load_timeout=config.pipeline.load_timeout)
        self.runner = Runner(frames, stages, queue_size=size, policy=policy, join_timeout=STOP_SECONDS,
                             stop_event=stop)
        self.failure: BaseException | None = None
        self.finished = threading.Event()
        self._release = release
        self._thread = threading.Thread(target=self._run, name="segment", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread by `next_item`
            self.failure = error
        finally:
            self.finished.set()

    def next_item(self) -> Item | None:
        """The next finished item; None once the run has ended (then stopped: its threads are done); raises what
        ended it early, after the items finished before."""
        while True:
            try:
                handed = self.handed.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not self.finished.is_set() or self.handed.qsize():
                    continue
                handed = END  # ended without its marker: stopped
            except Stopped:
                handed = END
            if isinstance(handed, Item):
                return handed
            self.stop()
            if self.failure is not None:
                raise self.failure
            return None

    def stop(self) -> None:
        """Stop every stage, wait for their teardowns (at most `STOP_SECONDS` for one still busy), release the
        source; idempotent, from any thread."""
        self.runner.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        while self._release:
            self._release.pop()()


class Segments(Iterator[tuple[Frame, Segmentation]]):
    """`(Frame, Segmentation)` pairs in frame order from a running pipeline; see the module docstring.

    Raises what stopped the run: `StageFailed` (its `error` is the cause) or, for a file that fails to decode part-way,
    the `StageFailed` of the capture stage after the frames decoded before it. `stats` has each stage's counters.
    """

    def __init__(self, frames: Iterable[Frame], config: RunConfig, engine: Engine, *, owned: bool, policy: Policy,
                 stop: threading.Event, release: list[Callable[[], None]]) -> None:
        self._run = _Run(frames, config, engine, owned=owned, policy=policy, stop=stop, release=release)
        self._closer = weakref.finalize(self, self._run.stop)

    @property
    def stats(self) -> RunStats:
        """Counters of the run (items and busy seconds per stage, queue drops), readable while it goes."""
        return self._run.runner.stats

    def __iter__(self) -> Segments:
        return self

    def __next__(self) -> tuple[Frame, Segmentation]:
        try:
            item = self._run.next_item()
        except BaseException:
            self.close()
            raise
        if item is None:
            self.close()
            raise StopIteration
        return item.frame, item.result()

    def close(self) -> None:
        """Stop the pipeline now and release the source (its threads end within about a second)."""
        self._closer()

    def __enter__(self) -> Segments:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def segments(source: str | Path | int, config: RunConfig, engine: Engine, *, owned: bool,
             max_frames: int | None = None) -> Segments:
    """Open `source` (a video file, a camera index or `/dev/videoN`, a stream URL; `MediaError` if it cannot be) and
    start the pipeline on it."""
    spec = str(source)
    kind = source_kind(spec)
    policy = Policy(config.pipeline.policy) if config.pipeline.policy != "auto" else \
        (Policy.LOSSLESS if kind == "file" else Policy.LIVE)
    stop = threading.Event()
    if kind == "file":
        return Segments(VideoSource(spec, max_frames=max_frames), config, engine, owned=owned, policy=policy,
                        stop=stop, release=[])
    opened = open_input(spec, config.live, policy=policy.value, stop=stop, max_frames=max_frames)
    return Segments(opened.frames, config, engine, owned=owned, policy=policy, stop=stop,
                    release=[opened.close])
