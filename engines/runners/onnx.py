"""The `onnx` backend: each exported part on ONNX Runtime, with the execution providers asked for.

On a GPU the default is ONNX Runtime's CUDA provider (then the CPU): its TensorRT provider only when asked
(`providers: [tensorrt, ...]`), and then with explicit profiles (`trt_profile_*_shapes`) from the same rule as the
`trt` backend's plans (`seg_video.engines.runners.plans.Profiles`), so the heads' changing row counts never make it
build another engine. Those profiles need the run's batch and picture size, so such a session starts on the part's
first call (at warm-up).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seg_video.engines.runners.base import PartRunner
from seg_video.engines.runners.graphs import PartInfo
from seg_video.engines.runners.plans import Profile, Profiles

log = logging.getLogger(__name__)

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
"""ONNX Runtime execution providers by the names the `providers` setting takes."""


Providers = list[tuple[str, dict[str, str]]]
"""ONNX Runtime execution providers with their options, in order of preference."""


class OrtRunner(PartRunner):
    """A part on ONNX Runtime, bound to the engine's tensors in place: no host copy when it runs on the GPU (a
    session that fell back to the CPU gets host copies). With `profiles` (the TensorRT provider asked for), the
    session starts on the first call, its TensorRT profile made for the shapes then seen."""

    def __init__(self, path: Path, info: PartInfo, providers: Providers, device: torch.device,
                 profiles: Profiles | None = None) -> None:
        super().__init__(info)
        self._path = path
        self._providers = providers
        self._device = device
        self._profiles = profiles
        self._bound = torch.device("cpu")
        self.session: Any = None if profiles is not None else self._start(providers)

    def _start(self, providers: Providers) -> Any:
        """An ONNX Runtime session on `providers` (said when the first of them did not start)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        # idle intra-op threads sleep instead of spinning: decode, render and encode share the cores (on 2 CPU cores
        # spinning took ~35 % more CPU per frame end to end and cost a quarter of LR-ASPP's frame rate)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(self._path), options, providers=providers)
        active = session.get_providers()[0]
        if active != providers[0][0]:
            log.warning("onnx: %s did not start for %s (see ONNX Runtime's message); running on %s", providers[0][0],
                        self.info.name, active)
        on_gpu = self._device.type == "cuda" and active != PROVIDERS["cpu"]
        self._bound = torch.device("cuda", self._device.index or 0) if on_gpu else torch.device("cpu")
        return session

    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if self._profiles is not None:
            shapes = [tuple(x.shape) for x in inputs]
            self._profiles.observe(self.info, shapes)
            if self.session is None:
                self.session = self._start(with_profile(self._providers, self._profiles.wanted(self.info, shapes)))
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
                  cache: Path) -> Providers:
    """ONNX Runtime providers with options, in the requested order (default: cuda then cpu on a GPU, cpu on the CPU),
    those this build lacks left out (said); the TensorRT provider's profile is added by `with_profile`."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(requested) or (["cuda", "cpu"] if device.type == "cuda" else ["cpu"])
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


def with_profile(providers: Providers, profile: Profile) -> Providers:
    """`providers` with the TensorRT provider (if there) given `profile` as its one explicit optimisation profile."""
    shapes = {f"trt_profile_{end}_shapes": ",".join(f"{name}:{'x'.join(map(str, limits[index]))}"
                                                   for name, limits in profile.items())
              for index, end in enumerate(("min", "opt", "max"))}
    return [(name, {**options, **shapes} if name == PROVIDERS["tensorrt"] else options) for name, options in providers]
