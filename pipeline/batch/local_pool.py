"""The local pool of `seg-video batch` (its Ray counterpart: `seg_video.batch.ray_pool`): one spawned process per worker
on this machine, each with its own loaded engine, fed one task at a time over a pipe; a module of its own because it
is all process handling (spawning, pipes, signals, teardown), which nothing else of the batch needs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

import cv2

from seg_video.batch.messages import POLL_SECONDS, MakeWorker, Task, Update
from seg_video.core.errors import EngineError
from seg_video.core.memory import reuse_large_buffers
from seg_video.core.threads import available_cpus

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig

STOP_SECONDS = 10.0
"""How long stopped workers get to finish their teardown before they are killed."""


class LocalPool:
    """Worker processes on this machine, each with its own loaded engine, fed over a pipe one task at a time.

    Each worker's OpenCV and PyTorch thread pools get its share of the cores (the pipeline's stage threads and the
    codecs' own threads come on top); with GPUs, worker k sees only GPU k mod `gpus`.
    """

    def __init__(self, config: RunConfig, size: int, *, make_worker: MakeWorker, gpus: int = 0) -> None:
        self.names = [f"worker {slot + 1}" for slot in range(size)]
        self._config = config
        self._make_worker = make_worker
        self._gpus = gpus
        self._threads = max(1, available_cpus() // size)
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess | None] = [None] * size
        self._pipes: list[Connection | None] = [None] * size

    def start(self) -> None:
        """Start the worker processes, then wait for each to load its engine."""
        for slot in range(len(self.names)):
            self._spawn(slot)
        for slot in range(len(self.names)):
            self._await_ready(slot)

    def submit(self, slot: int, task: Task) -> None:
        """Send the task down the worker's pipe."""
        self._pipe(slot).send(task)

    def poll(self, timeout: float) -> list[Update]:
        """Messages from the workers' pipes, and a lost update for each worker process that died."""
        ends: dict[Any, int] = {}
        for slot, (process, pipe) in enumerate(zip(self._processes, self._pipes, strict=True)):
            if process is not None and pipe is not None:
                ends[pipe] = ends[process.sentinel] = slot
        updates: list[Update] = []
        for slot in sorted({ends[end] for end in wait(list(ends), timeout)}):
            pipe, process = self._pipe(slot), self._process(slot)
            try:
                while pipe.poll():
                    kind, value = pipe.recv()
                    updates.append(Update(slot, result=value) if kind == "result" else Update(slot, frames=value))
            except (EOFError, OSError):
                pass  # the process is gone: said below
            if not process.is_alive():
                process.join()
                updates.append(Update(slot, lost=f"worker process ended ({_exit_reason(process.exitcode)})"))
        return updates

    def restart(self, slot: int) -> None:
        """Replace the dead worker process with a fresh one."""
        self._release(slot)
        self._spawn(slot)
        self._await_ready(slot)

    def close(self) -> None:
        """Tell each worker to exit, and wait for it."""
        for pipe in self._pipes:
            if pipe is not None:
                with contextlib.suppress(OSError):  # a worker already gone
                    pipe.send(None)
        for slot in range(len(self.names)):
            self._stop(slot)

    def abort(self) -> None:
        """SIGTERM every worker (each stops its video and exits), then kill those still running."""
        for process in self._processes:
            if process is not None and process.is_alive():
                process.terminate()
        for slot in range(len(self.names)):
            self._stop(slot)

    def _spawn(self, slot: int) -> None:
        ours, theirs = self._context.Pipe()
        gpu = slot % self._gpus if self._gpus else None
        args = (theirs, self._make_worker, self._config, self.names[slot], self._threads, gpu)
        process = self._context.Process(target=serve, args=args,
                                        name=f"seg-video {self.names[slot]}", daemon=True)
        process.start()
        theirs.close()
        self._processes[slot], self._pipes[slot] = process, ours

    def _await_ready(self, slot: int) -> None:
        try:
            kind, message = self._pipe(slot).recv()
        except (EOFError, OSError):
            kind, message = "fatal", f"{self.names[slot]} exited while loading the engine"
        if kind == "fatal":
            raise EngineError(message)

    def _stop(self, slot: int) -> None:
        """Wait for the worker process to exit (kill it after STOP_SECONDS), then forget it."""
        process = self._processes[slot]
        if process is None:
            return
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
        self._release(slot)

    def _release(self, slot: int) -> None:
        pipe = self._pipes[slot]
        if pipe is not None:
            pipe.close()
        self._processes[slot], self._pipes[slot] = None, None

    def _pipe(self, slot: int) -> Connection:
        pipe = self._pipes[slot]
        assert pipe is not None, f"{self.names[slot]} is not running"
        return pipe

    def _process(self, slot: int) -> BaseProcess:
        process = self._processes[slot]
        assert process is not None, f"{self.names[slot]} is not running"
        return process


def _exit_reason(code: int | None) -> str:
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


def serve(pipe: Connection, make_worker: MakeWorker, config: RunConfig, name: str, threads: int,
          gpu: int | None) -> None:
    """A local worker process: load the engine, then annotate each task received until told to stop.

    Ctrl-C is left to the batch, which stops its workers with SIGTERM; a worker whose batch is gone (the pipe broke)
    exits too. Its messages: ("ready" | "fatal", text), then ("frames", n) while a video runs and ("result", Result).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    reuse_large_buffers()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    cv2.setNumThreads(threads)
    try:
        try:
            worker = make_worker(config, name)
        except Exception as error:  # noqa: BLE001 - told to the batch, which stops with it
            pipe.send(("fatal", f"{name} cannot load the {config.engine} engine: {error}"))
            return
        try:
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(threads)
            pipe.send(("ready", name))
            while (task := pipe.recv()) is not None:
                pipe.send(("result", worker.annotate(task, on_frame=_reporter(pipe))))
        finally:
            worker.close()
    except (KeyboardInterrupt, EOFError, OSError):
        pass  # stopped by the batch, or the batch is gone
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a SIGTERM while the interpreter shuts down just ends it


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _reporter(pipe: Connection) -> Callable[[int], None]:
    """An `on_frame` callback that sends the frame count down `pipe` at most every POLL_SECONDS."""
    last = 0.0

    def report(frames: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= POLL_SECONDS:
            last = now
            pipe.send(("frames", frames))

    return report
