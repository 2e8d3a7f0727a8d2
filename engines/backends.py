"""How a torchvision engine runs its network: eager PyTorch (`torch`), or its parts (`engines.graphs`) compiled by
`torch.compile` (`torch-compiled`), exported to ONNX and run by ONNX Runtime (`onnx`) or OpenCV DNN (`opencv`,
`engines.opencv_dnn`), or built into TensorRT engines (`trt`). Whatever runs a part is a *runner* (tensors in,
tuple of tensors out, on the engine's device); `RunnerModule` puts a runner where the torchvision module it replaces
was, so the rest of the model (for Mask R-CNN: anchors, NMS, RoIAlign, mask pasting) runs unchanged in torch.

Everything here happens in the infer thread, at `load()` or later: no CUDA stream, session, engine or context
exists before.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from engines.base import EngineError
from engines.cache import cache_dir, cache_key, cached_file, model_sha256, weights_sha256
from engines.graphs import OPSET, Part, PartInfo, Precision, Sidecar, is_intact, versions, with_precision

if TYPE_CHECKING:
    from engines.torch_common import TorchEngine

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "torch-compiled", "onnx", "trt", "opencv"]
AUTO_ORDER = {"cuda": ("trt", "torch-compiled", "torch"), "cpu": ("onnx", "torch")}
"""What `auto` picks from, fastest first, by device type (the CPU order is measured in docs/GPU.md; the CUDA order is
what TensorRT and compiled graphs are built for, not yet measured here); never opencv,
which is for models only it can read (README: Engines) or when asked for."""
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
"""ONNX Runtime execution providers by the names the `providers` setting takes."""


class Runner(Protocol):
    """Runs one part: its inputs in, its outputs out (float32, on the engine's device)."""

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]: ...


def installed(*modules: str) -> bool:
    """Whether all these top-level modules can be imported here (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in modules)


def missing(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device` here, or None when it can."""
    if backend in ("torch-compiled", "trt") and device.type != "cuda":
        return "needs a CUDA GPU"
    if backend == "onnx" and not installed("onnx", "onnxruntime"):
        return "needs onnx and onnxruntime (pip install 'seg-video[onnx]')"
    if backend == "trt" and not installed("onnx", "tensorrt"):
        return "needs onnx and tensorrt (pip install 'seg-video[trt]')"
    if backend == "opencv" and not installed("onnx"):
        return "needs onnx to export the graphs OpenCV DNN runs (pip install 'seg-video[onnx]')"
    return None


def resolve_backend(requested: str, device: torch.device) -> tuple[str, str]:
    """The backend to run and a line saying why; raises `EngineError` when the requested one cannot run here."""
    if requested != "auto":
        reason = missing(requested, device)
        if reason is not None:
            raise EngineError(f"backend {requested} {reason}; choose another with --backend "
                              f"({', '.join(present_backends(device))} can run here)")
        return requested, f"backend {requested}"
    order = AUTO_ORDER["cuda" if device.type == "cuda" else "cpu"]
    chosen = next(name for name in order if missing(name, device) is None)
    why = [f"fastest present on {device.type}", *(f"{name} {missing(name, device)}"
                                                   for name in order[:order.index(chosen)])]
    return chosen, f"backend auto → {chosen} ({'; '.join(why)})"


def present_backends(device: torch.device) -> list[str]:
    """The backends that can run on `device` here."""
    return [name for name in ("torch", "torch-compiled", "onnx", "trt", "opencv") if missing(name, device) is None]


class RunnerModule(nn.Module):
    """A runner in the place of the module it replaces: list arguments are flattened, `pack` shapes the result."""

    def __init__(self, runner: Runner, pack: Callable[[tuple[Tensor, ...]], Any]) -> None:
        super().__init__()
        self.runner = runner
        self.pack = pack

    def forward(self, *inputs: Tensor | list[Tensor]) -> Any:
        flat = [x for item in inputs for x in (item if isinstance(item, list) else [item])]
        return self.pack(self.runner(*flat))


def bucket(rows: int) -> int:
    """The power of two at or above `rows` (at least 1): the dim-0 sizes compiled graphs and profiles cover."""
    return 1 << max(0, rows - 1).bit_length()


Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]
"""Per input name: the (min, opt, max) shapes of one TensorRT optimisation profile."""


def profile_for(names: Sequence[str], shapes: Sequence[Shape], rows: tuple[int, int]) -> Profile:
    """The profile for inputs of these shapes: dim 0 from 1 to the rows of a power-of-two count of images, the
    other dims as they are."""
    images = bucket(math.ceil(shapes[0][0] / rows[1]))
    return {name: ((1, *shape[1:]), (images * rows[0], *shape[1:]), (images * rows[1], *shape[1:]))
            for name, shape in zip(names, shapes, strict=True)}


def covers(profile: Profile, names: Sequence[str], shapes: Sequence[Shape]) -> bool:
    """Whether every input shape lies within the profile."""
    return all(all(low <= size <= high for low, size, high in zip(profile[name][0], shape, profile[name][2],
                                                                    strict=True))
               for name, shape in zip(names, shapes, strict=True))


def plan_identity(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str) -> str:
    """`model-part-hash` naming what a TensorRT plan is built from, all but its shapes: model, weights, graph,
    precision, TensorRT version, GPU."""
    key = cache_key({"model": sidecar.model, "model_sha256": sidecar.model_sha256,
                     "weights_sha256": sidecar.weights_sha256, "part": part.name, "onnx_sha256": part.sha256,
                     "precision": sidecar.precision, "tensorrt": tensorrt, "gpu": gpu})
    return f"{sidecar.model}-{part.name}-{key}"


def plan_path(sidecar: Sidecar, part: PartInfo, profile: Profile, tensorrt: str, gpu: str) -> Path:
    """Where the cache keeps the plan for that profile (the profile beside it as JSON, same name)."""
    return cache_dir() / "trt" / f"{plan_identity(sidecar, part, tensorrt, gpu)}-{cache_key(profile)}.plan"


def read_profile(path: Path) -> Profile:
    """A profile saved as JSON beside its plan."""
    return {name: (tuple(low), tuple(opt), tuple(high)) for name, (low, opt, high) in
            json.loads(path.read_text()).items()}


def cached_plan(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str, shapes: Sequence[Shape]) -> Path | None:
    """A cached plan of this graph (for this TensorRT and GPU) whose profile covers `shapes`, or None: one built by
    an earlier run or by tools/build_engine.py, perhaps for a bigger batch."""
    names = [spec.name for spec in part.inputs]
    for saved in sorted((cache_dir() / "trt").glob(f"{plan_identity(sidecar, part, tensorrt, gpu)}-*.json")):
        plan = cached_file(saved.parent, saved.with_suffix(".plan").name)
        if plan is not None and covers(read_profile(saved), names, shapes):
            return plan
    return None


def timing_cache_path(tensorrt: str, gpu: str) -> Path:
    """The TensorRT timing cache shared by every build for this GPU model and TensorRT version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-")
    return cache_dir() / "trt" / f"timing-{slug}-{tensorrt}.cache"


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


def export_cached(engine: TorchEngine, model: nn.Module, parts: list[Part]) -> tuple[Path, Sidecar]:
    """The model's ONNX export in the cache, made now if missing or damaged (written whole, then renamed)."""
    weights = weights_sha256(model)
    key = cache_key({"model": model_sha256([part.module for part in parts], weights),
                     "precision": engine.params.precision, "opset": OPSET, "versions": versions()})
    folder = cache_dir() / "onnx" / f"{engine.name}-{engine.params.precision}-{key}"
    sidecar = is_intact(folder)
    if sidecar is not None:
        return folder, sidecar
    log.info("%s: exporting to ONNX (%s, once) into %s", engine.name, engine.params.precision, folder)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sidecar = engine.export_onnx(model, partial, weights=weights, precision=engine.params.precision)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder, sidecar


def make_runners(engine: TorchEngine, model: nn.Module, parts: list[Part],
                 stream: torch.cuda.Stream | None) -> dict[str, Runner]:
    """A runner per part for the engine's backend (the ONNX export cached first for onnx, opencv and trt)."""
    backend, precision, device = engine.backend, engine.params.precision, engine.device
    if backend == "torch-compiled":
        return {part.name: CompiledRunner(part, precision, device) for part in parts}
    folder, sidecar = export_cached(engine, model, parts)
    if backend == "onnx":
        providers = ort_providers(engine.params.providers, device, stream, cache_dir())
        runners = {info.name: OrtRunner(folder / info.file, info, providers, device) for info in sidecar.parts}
        active = next(iter(runners.values())).session.get_providers()[0]
        if active != providers[0][0]:
            log.warning("onnx: %s did not start (see ONNX Runtime's message); running on %s", providers[0][0], active)
        log.info("%s: ONNX Runtime runs on %s", engine.name, active)
        return dict(runners)
    if backend == "opencv":
        from engines.opencv_dnn import dnn_runners

        return dict(dnn_runners(folder, parts, sidecar.parts, engine.params.dnn_target, device))
    from engines.trt_backend import TrtRunner

    assert stream is not None  # trt needs CUDA, checked when the engine was created
    return {info.name: TrtRunner(folder / info.file, info, sidecar, device, stream) for info in sidecar.parts}


def first(outputs: tuple[Tensor, ...]) -> Tensor:
    """The only output of a one-output part."""
    return outputs[0]

