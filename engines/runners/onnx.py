"""The `onnx` backend: each exported part on ONNX Runtime, with the execution providers asked for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seg_video.engines.runners.base import PartRunner
from seg_video.engines.runners.graphs import PartInfo

log = logging.getLogger(__name__)

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
"""ONNX Runtime execution providers by the names the `providers` setting takes."""


class OrtRunner(PartRunner):
    """A part on ONNX Runtime, bound to the engine's tensors in place: no host copy when it runs on the GPU (a
    session that fell back to the CPU gets host copies)."""

    def __init__(self, path: Path, info: PartInfo, providers: list[tuple[str, dict[str, str]]],
                 device: torch.device) -> None:
        import onnxruntime as ort

        super().__init__(info)
        self.session = ort.InferenceSession(str(path), providers=providers)
        on_gpu = device.type == "cuda" and self.session.get_providers()[0] != PROVIDERS["cpu"]
        self._device = device
        self._bound = torch.device("cuda", device.index or 0) if on_gpu else torch.device("cpu")

    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        binding = self.session.io_binding()
        where = (self._bound.type, self._bound.index or 0)
        kept = [x.to(self._bound, torch.float32).contiguous() for x in inputs]  # alive until the run ends
        for spec, x in zip(self.info.inputs, kept, strict=True):
            binding.bind_input(spec.name, *where, np.float32, tuple(x.shape), x.data_ptr())
        for spec in self.info.outputs:
            binding.bind_output(spec.name, *where)
        self.session.run_with_iobinding(binding)
        return tuple(torch.from_dlpack(value).to(self._device) for value in binding.get_outputs())


def ort_providers(requested: Sequence[str], device: torch.device, stream: torch.cuda.Stream | None,
                  cache: Path) -> list[tuple[str, dict[str, str]]]:
    """ONNX Runtime providers with options, in the requested order, those this build lacks left out (said)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(requested) or (["tensorrt", "cuda", "cpu"] if device.type == "cuda" else ["cpu"])
    lacking = [name for name in wanted if PROVIDERS[name] not in available]
    if lacking:
        log.warning("onnx: this onnxruntime has no %s execution provider (it has %s); falling back to %s",
                    ", ".join(lacking), ", ".join(available),
                    ", ".join(name for name in wanted if name not in lacking) or "cpu")
    gpu = {"device_id": str(device.index or 0)}
    if stream is not None:
        gpu["user_compute_stream"] = str(stream.cuda_stream)
    options = {"cpu": {}, "cuda": gpu,
               "tensorrt": {**gpu, "trt_engine_cache_enable": "True", "trt_timing_cache_enable": "True",
                            "trt_engine_cache_path": str(cache / "ort-trt")}}
    chosen = [(PROVIDERS[name], options[name]) for name in wanted if name not in lacking]
    return chosen or [(PROVIDERS["cpu"], {})]
