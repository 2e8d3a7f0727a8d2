"""TensorRT (≥ 10 API): plans built from our ONNX parts, cached, and run on the engine's CUDA stream.

Precision is the graph's: TensorRT 11 builds strongly typed networks only (the FP16 builder flag is gone), so an
fp16 engine comes from the fp16 export (FP16 weights and math, FP32 inputs and outputs); the network is created
STRONGLY_TYPED, which TensorRT 10 needs and 11 ignores. Tensors are bound by name (`set_tensor_address`,
`set_input_shape`) and run with `execute_async_v3`; buffers are torch CUDA tensors, so the preprocessed frames feed
the engine with no host copy. Plans are built on first use, in the infer thread, for the shapes seen: one
optimisation profile per plan, dim 0 from 1 to a bucket of rows, the other dims as seen (a video keeps its size).

Importing this module needs `tensorrt` and creates nothing: no logger, builder, runtime, context or stream.
Verified here: type-checked (mypy) and name-checked against the real TensorRT 11.4 Python bindings; never
executed (no TensorRT libraries or GPU where it was written) — docs/GPU.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import SupportsInt, cast

import tensorrt as trt
import torch
from torch import Tensor
from typing_extensions import Buffer

from seg_video.core.errors import EngineError
from seg_video.engines.runners.base import PartRunner
from seg_video.engines.runners.graphs import PartInfo, Sidecar
from seg_video.engines.runners.plans import (
    Profile,
    cached_plan,
    covers,
    plan_path,
    profile_for,
    read_profile,
    timing_cache_path,
)

log = logging.getLogger(__name__)

TORCH_DTYPES = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
                trt.DataType.INT8: torch.int8, trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
FAST_FP16 = {(5, 3), (6, 0), (6, 2)}
"""Compute capabilities below 7.0 with full-rate FP16 (7.0 and later all have it)."""
WORKSPACE_BYTES = 4 << 30


class LogRecords(trt.ILogger):
    """TensorRT's warnings and errors as records of this module's logger (the CLI shows them; a program embedding
    seg-video decides), instead of TensorRT printing them itself."""

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.levels = {trt.ILogger.INTERNAL_ERROR: logging.CRITICAL, trt.ILogger.ERROR: logging.ERROR,
                       trt.ILogger.WARNING: logging.WARNING}

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        level = self.levels.get(severity)
        if level is not None:
            log.log(level, "trt: %s", msg)


@cache
def trt_logger() -> LogRecords:
    """One TensorRT logger for the process, made on first use (it must outlive every builder and runtime)."""
    return LogRecords()


def check_fast_fp16(device: torch.device) -> None:
    """Warn when the GPU computes FP16 at a fraction of its FP32 rate (an fp16 plan may then be slower)."""
    capability = torch.cuda.get_device_capability(device)
    if capability < (7, 0) and capability not in FAST_FP16:
        log.warning("trt: %s (compute capability %d.%d) lacks fast FP16; an fp16 engine may run slower than "
                    "fp32 here (use --precision fp32)", torch.cuda.get_device_name(device), *capability)


class BuildProgress(trt.IProgressMonitor):
    """Logs the builder's top-level phases, so a build of minutes shows it is alive."""

    def __init__(self, label: str) -> None:
        trt.IProgressMonitor.__init__(self)
        self.label = label

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: SupportsInt) -> None:
        """A phase began; only top-level phases are logged."""
        if parent_phase is None:
            log.info("trt: %s: %s (%d steps)", self.label, phase_name, int(num_steps))

    def step_complete(self, phase_name: str, step: SupportsInt) -> bool:
        """Keep building."""
        return True

    def phase_finish(self, phase_name: str) -> None:
        """Nothing to do at a phase's end."""


def build_plan(onnx_path: Path, profile: Profile, timing_cache: Path, label: str) -> bytes:
    """A serialized TensorRT plan for the ONNX graph with one optimisation profile; the timing cache is read and
    updated. Precision is the graph's (strongly typed network)."""
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimisation.set_shape(name, trt.Dims(low), trt.Dims(opt), trt.Dims(high))
    config.add_optimization_profile(optimisation)
    known = timing_cache.read_bytes() if timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(known), ignore_mismatch=False)
    monitor = BuildProgress(label)  # must outlive the build
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build {onnx_path} for {profile} (see its messages above)")
    write_atomically(timing_cache, bytes(cast(Buffer, config.get_timing_cache().serialize())))
    return bytes(cast(Buffer, serialized))


def write_atomically(path: Path, data: bytes) -> None:
    """Write a whole file or nothing (a temporary sibling renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)


class Plan:
    """A deserialized plan and its execution context, run on a given stream."""

    def __init__(self, data: bytes, part: PartInfo, profile: Profile) -> None:
        self.profile = profile
        self.part = part
        self.runtime = trt.Runtime(trt_logger())
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError(f"TensorRT cannot load the plan for {part.name} (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()

    def execute(self, inputs: Sequence[Tensor], stream: torch.cuda.Stream) -> tuple[Tensor, ...]:
        """Bind inputs and fresh outputs by name, enqueue on `stream`; outputs are float32."""
        bound = []
        for spec, x in zip(self.part.inputs, inputs, strict=True):
            x = x.to(TORCH_DTYPES[self.engine.get_tensor_dtype(spec.name)]).contiguous()
            bound.append(x)
            self.context.set_input_shape(spec.name, tuple(x.shape))
            self.context.set_tensor_address(spec.name, x.data_ptr())
        outputs = []
        for spec in self.part.outputs:
            dims = self.context.get_tensor_shape(spec.name)
            output = torch.empty([dims[i] for i in range(len(dims))],
                                 dtype=TORCH_DTYPES[self.engine.get_tensor_dtype(spec.name)], device=inputs[0].device)
            self.context.set_tensor_address(spec.name, output.data_ptr())
            outputs.append(output)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"TensorRT failed to enqueue {self.part.name} for {[tuple(x.shape) for x in bound]}")
        return tuple(output.float() for output in outputs)


def load_plan(onnx_path: Path, part: PartInfo, sidecar: Sidecar, shapes: Sequence[tuple[int, ...]],
              device: torch.device) -> Plan:
    """A cached plan whose profile covers `shapes`; if there is none, one built (and cached) for them."""
    gpu = torch.cuda.get_device_name(device)
    found = cached_plan(sidecar, part, trt.__version__, gpu, shapes)
    if found is not None:
        return Plan(found.read_bytes(), part, read_profile(found.with_suffix(".json")))
    profile = profile_for([spec.name for spec in part.inputs], shapes, part.rows)
    if sidecar.precision == "fp16":
        check_fast_fp16(device)
    log.info("trt: building %s/%s (%s) for %s on %s; once, may take minutes", sidecar.model, part.name,
             sidecar.precision, {name: limits[2] for name, limits in profile.items()}, gpu)
    data = build_plan(onnx_path, profile, timing_cache_path(trt.__version__, gpu), f"{sidecar.model}/{part.name}")
    path = plan_path(sidecar, part, profile, trt.__version__, gpu)
    write_atomically(path, data)
    write_atomically(path.with_suffix(".json"), json.dumps(profile).encode())
    return Plan(data, part, profile)


class TrtRunner(PartRunner):
    """A part run by TensorRT plans, one per profile its inputs have needed so far."""

    def __init__(self, onnx_path: Path, part: PartInfo, sidecar: Sidecar, device: torch.device,
                 stream: torch.cuda.Stream) -> None:
        super().__init__(part)
        self._onnx_path = onnx_path
        self._sidecar = sidecar
        self._device = device
        self._stream = stream
        self._plans: list[Plan] = []

    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Run on the plan whose profile covers these shapes (loading or building it first if needed)."""
        names = [spec.name for spec in self.info.inputs]
        shapes = [tuple(x.shape) for x in inputs]
        plan = next((plan for plan in self._plans if covers(plan.profile, names, shapes)), None)
        if plan is None:
            plan = load_plan(self._onnx_path, self.info, self._sidecar, shapes, self._device)
            self._plans.append(plan)
        return plan.execute(inputs, self._stream)
