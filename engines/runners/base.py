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


@contextmanager
def on_stream(stream: torch.cuda.Stream | None, tensors: Sequence[Tensor]) -> Iterator[None]:
    """Run the block on `stream` (after the work already queued for `tensors`); no-op without a stream."""
    if stream is None:
        yield
        return
    stream.wait_stream(torch.cuda.current_stream(stream.device))
    for tensor in tensors:
        tensor.record_stream(stream)
    with torch.cuda.stream(stream):
        yield
