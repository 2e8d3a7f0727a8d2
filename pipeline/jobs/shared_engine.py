"""One engine serving many sources' pipelines: the infer stage the live job's sources share.

Each source keeps its own pipeline (capture, preprocess, finish, track, render, publish), its own queues and its
own drop policy; only its infer stage is a `SourceLink`, which hands the frames to the `SharedEngine` and waits
for their results. The shared engine's thread gathers what the sources have handed in: once the first request is
in, it waits until every attached source has one in, the batch is full, or `gather` seconds have passed, so a
slow or silent source never holds up the others. It serves the oldest requests first (when the batch is smaller
than the number of sources, that is round-robin), groups them by engine and frame size, and makes one `observe`
call per group. The thread owns the engine for its whole life (load, warm-up, every call, close), as compiled
models and CUDA contexts need.

An engine that keeps state between frames (a background model) serves each source through a twin of its own
(`Engine.for_source`), so scenes never share state.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seg_video.core.runner import POLL_SECONDS, Stopped
from seg_video.jobs.frame_path import observe_warm

if TYPE_CHECKING:
    from seg_video.core.types import Frame
    from seg_video.engines.base import Engine
    from seg_video.jobs.frame_path import EngineRestarts

JOIN_SECONDS = 5.0
"""How long `close` waits for the engine's thread to finish a call and close the engine before leaving it."""


@dataclass(eq=False)
class _Request:
    """One source's frames waiting for the shared engine, and then their results (or the error)."""

    link: SourceLink
    frames: Sequence[Frame]
    prepared: Sequence[Any]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Any] | None = None
    error: BaseException | None = None

    def answer(self, results: list[Any] | None = None, error: BaseException | None = None) -> None:
        """Hand the results (None: dropped by an engine restart) or the error to the waiting source."""
        self.results, self.error = results, error
        self.done.set()


@dataclass
class SharedStats:
    """What the shared engine did: inference calls, the frames they took, and frames dropped by restarts."""

    calls: int = 0
    frames: int = 0
    dropped: int = 0

    @property
    def mean_batch(self) -> float:
        """Frames per inference call."""
        return self.frames / self.calls if self.calls else 0.0


class SharedEngine:
    """`engine` serving the pipelines linked to it (`link`), up to `batch` frames per call.

    `owned`: the shared thread loads the engine and closes it at the end; otherwise the caller loaded it and keeps
    it, so it is only reset. `restarts`: an engine that raises is replaced (with every source's twin) and the
    frames of that call are dropped, instead of failing every source."""

    def __init__(self, engine: Engine, *, batch: int, gather: float, owned: bool = True,
                 restarts: EngineRestarts | None = None) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1; got {batch}")
        self.engine = engine
        self.batch = batch
        self.stats = SharedStats()
        self._gather = gather
        self._owned = owned
        self._restarts = restarts
        self._changed = threading.Condition()
        self._pending: list[_Request] = []
        self._attached: set[SourceLink] = set()
        self._closing = False
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loaded: dict[int, Engine] = {}
        """Twins loaded in the shared thread (by id), closed there at the end."""
        self._warm: dict[int, set[tuple[int, int]]] = {}
        """Per engine (by id): the frame sizes it has warmed up for."""
        self._thread = threading.Thread(target=self._serve, name="infer-shared", daemon=True)

    def link(self, name: str, stop: threading.Event) -> SourceLink:
        """A new source's share: its infer stage's `Inference` (see `frame_path`); `stop` ends its waits."""
        return SourceLink(self, self.engine.for_source(), name, stop)

    def start(self) -> None:
        """Start the shared thread: it loads the engine, then serves requests until `close`."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving, and wait (up to JOIN_SECONDS after its current call) for the thread to close the engine."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread.ident is not None:
            self._thread.join(JOIN_SECONDS)

    def wait_ready(self, link: SourceLink) -> None:
        """Block until the engine is loaded; raises what its load raised, or `Stopped` when `link`'s run stops."""
        while not self._ready.wait(POLL_SECONDS):
            if link.stop_event.is_set():
                raise Stopped
        if self._failure is not None:
            raise self._failure

    def detach(self, link: SourceLink) -> None:
        """`link`'s source has finished: stop waiting for its frames."""
        with self._changed:
            self._attached.discard(link)
            self._changed.notify_all()

    def submit(self, link: SourceLink, frames: Sequence[Frame], prepared: Sequence[Any]) -> _Request:
        """Queue `link`'s frames for the next batch; raises the engine's failure once it has failed."""
        request = _Request(link, frames, prepared)
        with self._changed:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise Stopped
            self._pending.append(request)
            self._attached.add(link)  # from its first frames on: a source still connecting is not waited for
            self._changed.notify_all()
        return request

    def _serve(self) -> None:
        """The shared thread: load, then run batches until closed; the engines are closed here, however it ends."""
        try:
            if self._owned:
                self.engine.load()
            else:
                self.engine.reset()
        except BaseException as error:  # noqa: BLE001 - every source's start raises it
            self._failure = error
            self._ready.set()
            return
        self._ready.set()
        try:
            while (requests := self._next_batch()) is not None:
                self._run(requests)
        except BaseException as error:  # noqa: BLE001 - handed to every waiting source
            self._fail(error)
        finally:
            self._fail(Stopped())
            self._close_engines()

    def _next_batch(self) -> list[_Request] | None:
        """The requests of the next call, oldest first, once enough have come (see the module's docstring); None
        once closed."""
        with self._changed:
            while not self._pending:
                if self._closing:
                    return None
                self._changed.wait()
            deadline = time.monotonic() + self._gather
            while not self._closing and self._frames_pending() < self.batch and self._waiting_for_others():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            taken: list[_Request] = []
            frames = 0
            for request in self._pending:
                if taken and frames + len(request.frames) > self.batch:
                    break
                taken.append(request)
                frames += len(request.frames)
            del self._pending[:len(taken)]
            return taken

    def _frames_pending(self) -> int:
        return sum(len(request.frames) for request in self._pending)

    def _waiting_for_others(self) -> bool:
        """Whether an attached source has no request in yet."""
        return bool(self._attached - {request.link for request in self._pending})

    def _run(self, requests: list[_Request]) -> None:
        """One `observe` per (engine, frame size) among `requests`; each request gets its part of the results."""
        groups: dict[tuple[int, tuple[int, int]], list[_Request]] = {}
        for request in requests:
            groups.setdefault((id(request.link.engine), request.frames[0].size), []).append(request)
        for group in groups.values():
            engine = group[0].link.engine
            frames = [frame for request in group for frame in request.frames]
            try:
                self._load(engine)
                results = observe_warm(engine, frames, [ready for request in group for ready in request.prepared],
                                       self._warm.setdefault(id(engine), set()), self.batch)
            except Exception as error:  # noqa: BLE001 - every waiting source is answered, then it is raised
                unanswered = [request for request in requests if not request.done.is_set()]
                try:
                    if self._restarts is None:
                        raise
                    self._restart(error, frames[0].index)  # raises once the restarts are used up
                except Exception as final:
                    for request in unanswered:
                        request.answer(error=final)
                    raise
                self.stats.dropped += sum(len(request.frames) for request in unanswered)
                for request in unanswered:
                    request.answer()
                return
            self.stats.calls += 1
            self.stats.frames += len(frames)
            start = 0
            for request in group:
                request.answer(results[start:start + len(request.frames)])
                start += len(request.frames)

    def _load(self, engine: Engine) -> None:
        """Load a source's twin the first time it is used (the shared engine itself is loaded at start)."""
        if engine is not self.engine and id(engine) not in self._loaded:
            engine.load()
            self._loaded[id(engine)] = engine

    def _restart(self, error: Exception, frame: int) -> None:
        """Replace the failed engine by a new one, and every source's twin by one of the new engine's."""
        assert self._restarts is not None
        self._close_twins()
        self.engine = self._restarts.replace(self.engine, error, frame)
        self._owned = True  # the replacement is the shared thread's to close
        self._warm.clear()
        with self._changed:
            links = {request.link for request in self._pending} | self._attached
        for link in links:
            link.engine = self.engine.for_source()

    def _fail(self, error: BaseException) -> None:
        """Answer every waiting request with `error`, and every later one (`submit` raises it)."""
        with self._changed:
            if self._failure is None:
                self._failure = error
            pending, self._pending = self._pending, []
        for request in pending:
            request.answer(error=error)

    def _close_twins(self) -> None:
        for twin in self._loaded.values():
            with contextlib.suppress(Exception):  # closing is best effort: each is closed even if one fails
                twin.close()
        self._loaded.clear()

    def _close_engines(self) -> None:
        self._close_twins()
        if self._owned:
            self.engine.close()


class SourceLink:
    """One source pipeline's share of a `SharedEngine`: the `Inference` its infer stage runs."""

    def __init__(self, shared: SharedEngine, engine: Engine, name: str, stop: threading.Event) -> None:
        self.engine = engine
        """This source's engine: the shared one, or its twin with state of its own (`Engine.for_source`)."""
        self.name = name
        self.stop_event = stop
        self._shared = shared

    def start(self) -> None:
        """Wait for the shared engine to be loaded."""
        self._shared.wait_ready(self)

    def observe(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Any] | None:
        """The frames' results from the shared engine's next batch (None: dropped by an engine restart)."""
        request = self._shared.submit(self, frames, prepared)
        while not request.done.wait(POLL_SECONDS):
            if self.stop_event.is_set():
                raise Stopped
        if request.error is not None:
            raise request.error
        return request.results

    def stop(self) -> None:
        """The source has finished: the shared engine no longer waits for it."""
        self._shared.detach(self)
