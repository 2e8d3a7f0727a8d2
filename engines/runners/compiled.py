"""The `torch-compiled` backend: each part under `torch.compile`, entered only from the process's compiler thread.

On CUDA a part runs as CUDA graphs (`mode="reduce-overhead"`) with dim 0 padded to one fixed row count (the run's
batch times the part's most rows per image), so each part has one static shape per frame size, compiled and
captured by `warm_up`. On the CPU (inductor's C++ backend, FP32, no graphs) the image parts are padded the same way,
while the heads' dim 0 is dynamic: padding the mask head to 100 detections per image would cost seconds a frame.

Before the fix of pytorch issue 123177, inductor's CUDA-graph trees keep their state in thread-locals that exist only
in the thread that imported them (any other thread asserts), so every compiled model of a process is compiled,
captured and replayed in one long-lived thread (`owner`), whichever thread asks: the same code on the CPU, so CI
runs it. Calls from several threads (live sources sharing an engine, several engines) take turns there; GPU work is
only queued there, so replays barely wait, but a compile (a new frame size) holds up the other models' calls while
it lasts.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import torch
from torch import Tensor

from seg_video.engines.runners.graphs import Part, Precision, with_precision

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_DYNAMIC_ROWS = 2
"""Dynamo specialises a dim of size 0 or 1 whatever it is marked, so a dynamic dim 0 is padded to at least this."""
RECOMPILE_LIMIT = 64
"""Dynamo's compiled entries per code object (its default, 8, then runs the code eagerly): every part of every
compiled model in the process shares its class's forward (FP16 parts all share `HalfIO.forward`), with one entry per
frame size and batch (two for a head on the CPU)."""


def cpp_compiler() -> str | None:
    """The C++ compiler inductor's CPU backend calls (`$CXX`, else g++; clang++ on macOS), if installed here."""
    return shutil.which(os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++"))


class OwnerThread:
    """A daemon thread that runs the calls handed to it, one at a time, for the life of the process."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def run(self, call: Callable[[], T]) -> T:
        """`call()` run in the owning thread; its result, or its exception raised here."""
        future: Future[T] = Future()

        def task() -> None:
            try:
                future.set_result(call())
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                future.set_exception(error)

        self._calls.put(task)
        return future.result()

    def _serve(self) -> None:
        while True:
            self._calls.get()()


_owner: OwnerThread | None = None
_owner_made = threading.Lock()


def owner() -> OwnerThread:
    """The process's one thread for compiled models, started on first use."""
    global _owner
    with _owner_made:
        if _owner is None:
            _owner = OwnerThread("seg-video-compiled")
        return _owner


class CompiledRunner:
    """A part under `torch.compile`, channels-last, FP16 when asked (CUDA), run in the `owner` thread on the
    caller's CUDA stream. `fit_batch` fixes dim 0 for a run's batch; a call with more rows than that raises it
    (one more compile, logged)."""

    def __init__(self, part: Part, precision: Precision, device: torch.device) -> None:
        self.name = part.name
        self._device = device
        self._graphs = device.type == "cuda"
        self._rows_per_image = part.rows[1]
        self._dynamic = not self._graphs and part.rows != (1, 1)
        """Dim 0 left dynamic (the heads on the CPU) rather than padded to the fixed row count."""
        self._images: int | None = None
        module = with_precision(part.module, precision).to(device).eval().to(memory_format=torch.channels_last)
        self._compiled = torch.compile(module, mode="reduce-overhead" if self._graphs else None, dynamic=False)
        self._seen: set[tuple[tuple[int | str, ...], ...]] = set()

    def fit_batch(self, batch: int) -> None:
        """Pad dim 0 for runs of `batch` images from now on (`TorchEngine.warm_up` then compiles that shape)."""
        self._images = batch

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        rows = int(inputs[0].shape[0])
        size = self._padded_rows(rows)
        padded = [torch.cat([x, x.new_zeros((size - rows, *x.shape[1:]))]) if size > rows else x for x in inputs]
        padded = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in padded]
        if self._dynamic:
            for x in padded:
                torch._dynamo.mark_dynamic(x, 0)
        shapes = tuple(("rows" if self._dynamic else size, *x.shape[1:]) for x in padded)
        if shapes not in self._seen:
            self._seen.add(shapes)
            log.info("torch-compiled: compiling %s for %s (once per frame size)", self.name,
                     [list(shape) for shape in shapes])
        stream = torch.cuda.current_stream(self._device) if self._graphs else None
        return owner().run(lambda: self._enter(padded, rows, stream))

    def _padded_rows(self, rows: int) -> int:
        """Dim 0 to run `rows` at: the fixed row count, or (dynamic) `rows` itself, at least MIN_DYNAMIC_ROWS."""
        if self._dynamic:
            return max(rows, MIN_DYNAMIC_ROWS)
        images = -(-rows // self._rows_per_image)
        if self._images is None or images > self._images:
            self._images = max(images, 1)
        return self._images * self._rows_per_image

    def _enter(self, padded: list[Tensor], rows: int, stream: torch.cuda.Stream | None) -> tuple[Tensor, ...]:
        """The compiled call, in the owning thread, on the caller's stream: the first `rows` rows of each output
        (copied out of the CUDA graph's memory, which its next replay overwrites)."""
        with torch.inference_mode(), torch.cuda.stream(stream), \
                torch._dynamo.config.patch(cache_size_limit=RECOMPILE_LIMIT):  # recompile_limit's name before 2.6
            if self._graphs:
                torch.compiler.cudagraph_mark_step_begin()
            outputs = self._compiled(*padded)
            return tuple(output[:rows].clone() if self._graphs else output[:rows] for output in outputs)
