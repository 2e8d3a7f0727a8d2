"""The `torch-compiled` backend: each part under `torch.compile` with CUDA graphs."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from seg_video.engines.runners.base import bucket
from seg_video.engines.runners.graphs import Part, Precision, with_precision

log = logging.getLogger(__name__)

class CompiledRunner:
    """A part under `torch.compile` (CUDA graphs), channels-last, FP16 when asked; dim 0 padded to a bucket so
    graphs are compiled once per bucket, not per frame."""

    def __init__(self, part: Part, precision: Precision, device: torch.device) -> None:
        self.name = part.name
        self._module = with_precision(part.module, precision).to(device).eval().to(memory_format=torch.channels_last)
        self._compiled = torch.compile(self._module, mode="reduce-overhead", dynamic=False)
        self._seen: set[tuple[tuple[int, ...], ...]] = set()

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        rows = int(inputs[0].shape[0])
        if rows == 0:
            return tuple(self._module(*inputs))
        size = bucket(rows)
        padded = [torch.cat([x, x.new_zeros((size - rows, *x.shape[1:]))]) if size > rows else x for x in inputs]
        padded = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in padded]
        shapes = tuple(tuple(x.shape) for x in padded)
        if shapes not in self._seen:
            self._seen.add(shapes)
            log.info("torch-compiled: compiling %s for %s (once per shape bucket)", self.name, list(shapes))
        torch.compiler.cudagraph_mark_step_begin()
        return tuple(output[:rows].clone() for output in self._compiled(*padded))
