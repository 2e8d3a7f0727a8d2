"""What every runner shares. A *runner* runs one exportable part of a model (`seg_video.engines.runners.graphs`):
tensors in, a tuple of tensors out, on the engine's device; `RunnerModule` puts a runner where the torchvision module
it replaces was, so the rest of the model (for Mask R-CNN: anchors, NMS, RoIAlign, mask pasting) runs unchanged in
torch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from seg_video.engines.runners.graphs import PartInfo



class Runner(Protocol):
    """Runs one part: its inputs in, its outputs out (float32, on the engine's device)."""

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]: ...


class RunnerModule(nn.Module):
    """A runner in the place of the module it replaces: list arguments are flattened, `pack` shapes the result."""

    def __init__(self, runner: Runner, pack: Callable[[tuple[Tensor, ...]], Any]) -> None:
        super().__init__()
        self.runner = runner
        self.pack = pack

    def forward(self, *inputs: Tensor | list[Tensor]) -> Any:
        flat = [x for item in inputs for x in (item if isinstance(item, list) else [item])]
        return self.pack(self.runner(*flat))


class PartRunner(ABC):
    """A runner of an exported part; an input with no rows gets empty outputs without running anything."""

    def __init__(self, info: PartInfo) -> None:
        self.info = info

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if inputs[0].shape[0] == 0:
            return tuple(torch.empty((0, *(int(d) for d in output.shape[1:])), device=inputs[0].device)
                         for output in self.info.outputs)
        return self.run(*inputs)

    @abstractmethod
    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Run the part on inputs with at least one row."""


def bucket(rows: int) -> int:
    """The power of two at or above `rows` (at least 1): the dim-0 sizes compiled graphs and profiles cover."""
    return 1 << max(0, rows - 1).bit_length()


def first(outputs: tuple[Tensor, ...]) -> Tensor:
    """The only output of a one-output part."""
    return outputs[0]


class Waits(Protocol):
    """What `ordered` needs of a stream: to make its later work wait for the work queued so far on another."""

    def wait_stream(self, stream: Any) -> None: ...


@contextmanager
def ordered(caller: Waits, engine: Waits) -> Iterator[None]:
    """The block's work on `engine` after what `caller` queued before it (its inputs), and `caller`'s later work (the
    reads of the block's outputs) after the block's, even when the block raises."""
    engine.wait_stream(caller)
    try:
        yield
    finally:
        caller.wait_stream(engine)


@contextmanager
def on_stream(stream: torch.cuda.Stream | None, tensors: Sequence[Tensor]) -> Iterator[None]:
    """Run the block on `stream`, `ordered` with the caller's current stream both ways; no-op without a stream.

    The caller's stream (the infer thread's current one: the default stream, where `prepare` also queued the
    uploads in the preprocess thread) and the engine's stream meet only here. `tensors` (the inputs, made on the
    caller's stream) are marked as used on `stream`, so that their memory is not handed out again while `stream`
    may still read it, whichever stream frees them; outputs made on `stream` are safe to read and free on the
    caller's stream after the block, since the engine's stream waits for it again on the next entry."""
    if stream is None:
        yield
        return
    for tensor in tensors:
        tensor.record_stream(stream)
    with ordered(torch.cuda.current_stream(stream.device), stream), torch.cuda.stream(stream):
        yield
