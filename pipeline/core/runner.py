"""Threaded stage runner: one thread per stage, bounded queues between them, one stop event for all.

The source yields `Frame`s; the capture thread wraps each in an `Item`, the record the stages fill in and hand on
(each stage's time per frame is noted in `Item.timings`). Items flow source → stage 1 → … → stage N in order (one
thread per stage keeps FIFO order). Every blocking
`put`/`get` waits in short slices and checks the stop event, so nothing hangs on a full or empty queue. The first
stage to raise sets the stop event; every thread then leaves its loop and runs its teardown (sinks finalize
there), and `run` re-raises the failure in the caller as `StageFailed` naming the stage (and the frame). A source
that raises (a decode error mid-file) ends the stream instead: the frames it already produced are processed and
written, then the failure is raised.

A watchdog in the calling thread fails a stage whose `setup` or `process` call outlasts the stage's limit (a hung
engine): the run stops as after an error, without waiting for that thread. After a stop, `run` waits for every
teardown however long it takes (a sink finalizing), but gives up on a thread still stuck in `setup` or `process`
`join_timeout` seconds later; such a daemon thread dies with the process.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from seg_video.core.errors import StageFailed, StageTimeout
from seg_video.core.stage import Stage
from seg_video.core.types import Frame, Item

POLL_SECONDS = 0.05
"""How often a blocked put/get looks at the stop event."""


class Policy(enum.Enum):
    """How a full queue treats a new item."""

    LOSSLESS = "lossless"  # the producer waits: every item is processed (files, image folders)
    LIVE = "live"  # the oldest waiting item is dropped: latency stays bounded (cameras, streams)


class _End:
    """Marks the end of the stream; passed down from stage to stage, never dropped."""

    def __repr__(self) -> str:
        return "END"


END = _End()


class Stopped(Exception):
    """Raised inside a stage thread when the run's stop event is set while it waits."""


class StageQueue:
    """A bounded FIFO between two stages that honours the run's stop event and its drop policy."""

    def __init__(self, maxsize: int, policy: Policy, stop: threading.Event) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self.maxsize = maxsize
        self.policy = policy
        self._queue: queue.Queue[Item | _End] = queue.Queue(maxsize)
        self._stop = stop
        self._lock = threading.Lock()
        self._demand = threading.Condition()
        self._waiting = 0  # consumers blocked in `get` on an empty queue
        self.dropped = 0
        self.high_water = 0

    def put(self, item: Item | _End) -> None:
        """Enqueue; a lossless queue waits for room, a live queue drops its oldest item. Raises `Stopped`.

        The end marker always waits for room, so it never evicts the newest frame.
        """
        while True:
            if self._stop.is_set():
                raise Stopped
            if self.policy is Policy.LIVE and item is not END:
                with self._lock:
                    if self._queue.full():
                        self._drop_oldest()
                    self._queue.put_nowait(item)
                    self._note_size()
                return
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
            except queue.Full:
                continue
            self._note_size()
            return

    def get(self, timeout: float | None = None) -> Item | _End:
        """Dequeue, waiting at most `timeout` seconds (forever if None). Raises `Stopped` or `queue.Empty`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        with self._demand:
            self._waiting += 1
            self._demand.notify_all()
        try:
            while True:
                if self._stop.is_set():
                    raise Stopped
                wait = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
                if wait <= 0:
                    raise queue.Empty
                try:
                    return self._queue.get(timeout=wait)
                except queue.Empty:
                    continue
        finally:
            with self._demand:
                self._waiting -= 1

    def wait_for_demand(self) -> None:
        """Wait until the consumer is waiting for an item on this (empty) queue. Raises `Stopped`."""
        with self._demand:
            while not (self._waiting and self._queue.empty()):
                if self._stop.is_set():
                    raise Stopped
                self._demand.wait(POLL_SECONDS)

    def qsize(self) -> int:
        """Items waiting now."""
        return self._queue.qsize()

    def _drop_oldest(self) -> None:
        try:
            self._queue.get_nowait()
        except queue.Empty:
            return
        self.dropped += 1

    def _note_size(self) -> None:
        self.high_water = max(self.high_water, self._queue.qsize())


@dataclass(frozen=True)
class _Busy:
    """What a stage thread is doing now, for the watchdog and the final wait."""

    phase: str  # "setup", "process" or "teardown"
    since: float
    limit: float | None
    frame: int | None = None


@dataclass
class StageStats:
    """What one stage did: items in, seconds spent in `process`."""

    items: int = 0
    busy_seconds: float = 0.0


@dataclass
class RunStats:
    """Counters of a run, readable while it goes (progress) and after it (benchmarks)."""

    stages: dict[str, StageStats] = field(default_factory=dict)
    queues: dict[str, StageQueue] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        """Items dropped by live queues, all stages together."""
        return sum(q.dropped for q in self.queues.values())


class Runner:
    """Runs `source` → `stages` on one thread each; see the module docstring for the guarantees."""

    def __init__(
        self,
        source: Iterable[Frame],
        stages: list[Stage],
        *,
        queue_size: int = 8,
        policy: Policy = Policy.LOSSLESS,
        source_name: str = "capture",
        join_timeout: float = 5.0,
        stop_event: threading.Event | None = None,
        stats: RunStats | None = None,
    ) -> None:
        """`stop_event`, when given, is shared with other runs (and the source) so one stop ends them all; `stats`,
        when given, is filled in (for whoever reads it while the run goes)."""
        if not stages:
            raise ValueError("a run needs at least one stage after the source")
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.stats = stats if stats is not None else RunStats()
        self._source = source
        self._source_name = source_name
        self._stages = stages
        self._join_timeout = join_timeout
        self._failure: StageFailed | None = None
        self._failure_lock = threading.Lock()
        self._busy: dict[str, _Busy] = {}  # by thread (stage) name; absent while a thread waits on its queue
        self._hung: set[str] = set()
        self._done: dict[str, threading.Event] = {}  # by thread name: set when the thread has finished
        self._inputs = [StageQueue(queue_size, policy, self.stop_event) for _ in stages]
        for stage, stage_queue in zip(stages, self._inputs, strict=True):
            self.stats.queues[stage.name] = stage_queue
            self.stats.stages[stage.name] = StageStats()
        self.stats.stages[source_name] = StageStats()

    def run(self) -> RunStats:
        """Run to the end of the source; re-raises the first stage failure, or `KeyboardInterrupt` after a stop."""
        threads = [self._thread(self._source_name, self._capture_loop)]
        for i, stage in enumerate(self._stages):
            output = self._inputs[i + 1] if i + 1 < len(self._stages) else None
            threads.append(self._thread(stage.name, self._stage_loop, stage, self._inputs[i], output))
        for thread in threads:
            thread.start()
        try:
            self._wait()
        except BaseException:  # Ctrl-C, SIGTERM: stop the stages, let them finalize, then pass it on
            self.stop_event.set()
            self._wait()
            raise
        if self._failure is not None:
            raise self._failure from self._failure.error
        return self.stats

    @property
    def thread_count(self) -> int:
        """Threads the run starts: the capture thread and one per stage."""
        return 1 + len(self._stages)

    def stop(self) -> None:
        """Ask every stage to finish now (teardowns still run)."""
        self.stop_event.set()

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        """A daemon thread running `target(*args)` that marks its end in `_done`. (Not `is_alive`: Python 3.11 calls
        a thread finished when Ctrl-C interrupts a `join` on it, even while it still finalizes.)"""
        done = self._done[name] = threading.Event()

        def run() -> None:
            try:
                target(*args)
            finally:
                done.set()

        return threading.Thread(target=run, name=name, daemon=True)

    def _wait(self) -> None:
        """Wait for the threads, watching their time limits. Those the watchdog found stuck are not waited for;
        after a stop, neither are those still in `setup` or `process` `join_timeout` seconds later, but one in its
        teardown always is."""
        stopped_at: float | None = None
        while running := [name for name, done in self._done.items() if not done.is_set() and name not in self._hung]:
            self._done[running[0]].wait(POLL_SECONDS)
            self._watch()
            if self.stop_event.is_set():
                stopped_at = stopped_at or time.monotonic()
                finalizing = any(getattr(self._busy.get(name), "phase", None) == "teardown" for name in running)
                if time.monotonic() - stopped_at > self._join_timeout and not finalizing:
                    return

    def _watch(self) -> None:
        """Fail the run for each stage whose current call has outlasted its limit (once per stage)."""
        now = time.monotonic()
        for name, busy in list(self._busy.items()):
            if busy.limit is not None and now - busy.since > busy.limit and name not in self._hung:
                self._hung.add(name)
                what = "no result" if busy.phase == "process" else f"{busy.phase} not done"
                self._fail(name, StageTimeout(f"{what} within {busy.limit:g} s (stopped by the watchdog)"),
                           busy.frame)

    def _record(self, stage: str, error: BaseException, frame: int | None = None) -> None:
        """Keep the first failure, to re-raise once every thread has finished."""
        with self._failure_lock:
            if self._failure is None:
                self._failure = StageFailed(stage, error, frame)

    def _fail(self, stage: str, error: BaseException, frame: int | None = None) -> None:
        self._record(stage, error, frame)
        self.stop_event.set()

    def _capture_loop(self) -> None:
        stats = self.stats.stages[self._source_name]
        output = self._inputs[0]
        iterator: Iterator[Frame] = iter(self._source)
        try:
            while not self.stop_event.is_set():
                started = time.perf_counter()
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                except Exception as error:  # noqa: BLE001 - a broken source ends the stream; see below
                    self._record(self._source_name, error)
                    break
                spent = time.perf_counter() - started
                stats.busy_seconds += spent
                stats.items += 1
                output.put(Item(frame, timings={self._source_name: spent}))
            else:
                return
            output.put(END)  # after a source error too: frames already captured still reach the sink
        except Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - any failure must stop the run and reach the caller
            self._fail(self._source_name, error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _stage_loop(self, stage: Stage, inbox: StageQueue, outbox: StageQueue | None) -> None:
        stats = self.stats.stages[stage.name]
        frame: int | None = None
        try:
            if stage.setup is not None:
                self._busy[stage.name] = _Busy("setup", time.monotonic(), stage.setup_timeout)
                stage.setup()
                self._busy.pop(stage.name, None)
            limit = stage.setup_timeout if stage.setup is not None else stage.timeout  # the first call warms up
            finished = False
            on_demand = stage.on_demand and outbox is not None and outbox.policy is Policy.LIVE
            while not finished:
                if on_demand:
                    assert outbox is not None
                    outbox.wait_for_demand()
                first = inbox.get()
                if isinstance(first, _End):
                    break
                batch = [first]
                while len(batch) < stage.batch_size:
                    following = inbox.get()
                    if isinstance(following, _End):
                        finished = True
                        break
                    batch.append(following)
                frame = batch[0].index
                self._busy[stage.name] = _Busy("process", time.monotonic(), limit, frame)
                started = time.perf_counter()
                results = stage.process(batch)
                spent = time.perf_counter() - started
                stats.busy_seconds += spent
                for item in batch:
                    item.timings[stage.name] = spent / len(batch)
                self._busy.pop(stage.name, None)
                limit = stage.timeout
                stats.items += len(batch)
                frame = None
                if outbox is not None:
                    for result in results:
                        outbox.put(result)
            if outbox is not None:
                outbox.put(END)
        except Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - any failure must stop the run and reach the caller
            self._fail(stage.name, error, frame)
        finally:
            if stage.teardown is not None:
                self._busy[stage.name] = _Busy("teardown", time.monotonic(), None)
                try:
                    stage.teardown()
                except BaseException as error:  # noqa: BLE001
                    self._fail(stage.name, error)
            self._busy.pop(stage.name, None)
