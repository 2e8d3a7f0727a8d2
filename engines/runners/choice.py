"""How a torchvision engine runs its network: eager PyTorch (`torch`), or its parts
(`seg_video.engines.runners.graphs`) compiled by `torch.compile` (`torch-compiled`), exported to ONNX and run by ONNX
Runtime (`onnx`) or OpenCV DNN (`opencv`), or built into TensorRT engines (`trt`). This module chooses the backend and
makes a runner per part for it (`seg_video.engines.runners.base`).

Everything here happens in the infer thread, at `load()` or later: no CUDA stream, session, engine or context
exists before.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from seg_video.core.errors import EngineError
from seg_video.engines.cache import cache_dir, cache_key, made_once, model_sha256, replace_folder, weights_sha256
from seg_video.engines.runners.base import Runner
from seg_video.engines.runners.compiled import CompiledRunner, cpp_compiler
from seg_video.engines.runners.graphs import OPSET, Part, Sidecar, is_intact, versions
from seg_video.engines.runners.onnx import PROVIDERS, OrtRunner, ort_providers
from seg_video.engines.runners.plans import Profiles, SizeRange

if TYPE_CHECKING:
    from seg_video.engines.models.torch_common import TorchEngine

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "torch-compiled", "onnx", "trt", "opencv"]


AUTO_ORDER = {"cuda": ("trt", "torch-compiled", "torch"), "cpu": ("onnx", "torch")}
"""What `auto` picks from, fastest first, by device type (the CPU order is measured in docs/GPU.md; the CUDA order is
what TensorRT and compiled graphs are built for, not yet measured here); never opencv,
which is for models only it can read (README: Engines) or when asked for; nor torch-compiled on the CPU, which
compiles for a minute or more per model and frame size before the first frame."""


ONE_EXPORT = threading.Lock()
"""torch.onnx.export keeps its state in process globals (two at once in one process fail), so a process exports one
model at a time, whichever models its engines load."""


def installed(*modules: str) -> bool:
    """Whether all these top-level modules can be imported here (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in modules)


def missing(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device` here, or None when it can."""
    if backend == "trt" and device.type != "cuda":
        return "needs a CUDA GPU"
    if backend == "torch-compiled" and device.type != "cuda" and cpp_compiler() is None:
        return "needs a C++ compiler on the CPU for inductor (g++, or the one $CXX names)"
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


def export_cached(engine: TorchEngine, model: nn.Module, parts: list[Part]) -> tuple[Path, Sidecar]:
    """The model's ONNX export in the cache, made now if missing or damaged (written whole, then renamed; made once
    however many threads and processes ask at the same time)."""
    weights = weights_sha256(model)
    key = cache_key({"model": model_sha256([part.module for part in parts], weights),
                     "precision": engine.params.precision, "opset": OPSET, "versions": versions()})
    folder = cache_dir() / "onnx" / f"{engine.name}-{engine.params.precision}-{key}"

    def export() -> Sidecar:
        log.info("%s: exporting to ONNX (%s, once) into %s", engine.name, engine.params.precision, folder)
        with ONE_EXPORT:
            return replace_folder(folder, lambda partial: engine.export_onnx(model, partial, weights=weights,
                                                                             precision=engine.params.precision))

    return folder, made_once(folder, lambda: is_intact(folder), export)


def make_runners(engine: TorchEngine, model: nn.Module, parts: list[Part],
                 stream: torch.cuda.Stream | None) -> dict[str, Runner]:
    """A runner per part for the engine's backend (the ONNX export cached first for onnx, opencv and trt)."""
    backend, precision, device = engine.backend, engine.params.precision, engine.device
    if backend == "torch-compiled":
        return {part.name: CompiledRunner(part, precision, device) for part in parts}
    folder, sidecar = export_cached(engine, model, parts)
    profiles = Profiles(SizeRange.of(engine.preprocessing()["resize"]), sidecar.parts[0].name)
    if backend == "onnx":
        providers = ort_providers(engine.params.providers, device, stream, cache_dir())
        profiled = profiles if any(name == PROVIDERS["tensorrt"] for name, _ in providers) else None
        runners = {info.name: OrtRunner(folder / info.file, info, providers, device, profiled)
                   for info in sidecar.parts}
        log.info("%s: ONNX Runtime runs on %s", engine.name, providers[0][0] if profiled else
                 next(iter(runners.values())).session.get_providers()[0])
        return dict(runners)
    if backend == "opencv":
        from seg_video.engines.runners.opencv import dnn_runners

        return dict(dnn_runners(folder, parts, sidecar.parts, engine.params.dnn_target, device))
    from seg_video.engines.runners.trt import TrtRunner

    assert stream is not None  # trt needs CUDA, checked when the engine was created
    return {info.name: TrtRunner(folder / info.file, info, sidecar, device, stream, profiles)
            for info in sidecar.parts}
