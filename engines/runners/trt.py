"""TensorRT (≥ 10 API): plans built from our ONNX parts, cached, and run on the engine's CUDA stream.

Precision is the graph's: TensorRT 11 builds strongly typed networks only (the FP16 builder flag is gone), so an
fp16 engine comes from the fp16 export (FP16 weights and math, FP32 inputs and outputs); the network is created
STRONGLY_TYPED, which TensorRT 10 needs and 11 ignores. Tensors are bound by name (`set_tensor_address`,
`set_input_shape`) and run with `execute_async_v3`; buffers are torch CUDA tensors, so the preprocessed frames feed
the engine with no host copy. Plans are built on first use (at warm-up), in the infer thread, with one optimisation
profile spanning the configured maxima (`seg_video.engines.runners.plans`), once per part however many threads and
processes start on an empty cache. TensorRT's builder, runtime and contexts use the thread's current CUDA device, so
every build, load and run happens under `torch.cuda.device(the engine's device)`: cuda:N means GPU N.

Importing this module needs `tensorrt` and creates nothing: no logger, builder, runtime, context or stream.
Verified here: type-checked (mypy) and name-checked against the real TensorRT 11.4 Python bindings; never
executed (no TensorRT libraries or GPU where it was written) — docs/GPU.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import SupportsInt, cast

import tensorrt as trt
import torch
from torch import Tensor
from typing_extensions import Buffer

from seg_video.core.errors import EngineError
from seg_video.engines.cache import made_once
from seg_video.engines.runners.base import PartRunner
from seg_video.engines.runners.graphs import PartInfo, Sidecar
from seg_video.engines.runners.plans import (
    Profile,
    Profiles,
    cached_plan,
    covers,
    keep_timing_cache,
    offer_timing_cache,
    plan_path,
    plans_of,
    remove_plan,
    save_plan,
    timing_cache_path,
    widened,
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
    """A serialized TensorRT plan for the ONNX graph with one optimisation profile, built on the current CUDA device;
    the timing cache is read and updated unless TensorRT refuses it (then the build runs without it). Precision is
    the graph's (strongly typed network)."""
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

    def attach(known: bytes) -> bool:
        created = config.create_timing_cache(known)
        return created is not None and config.set_timing_cache(created, ignore_mismatch=False)

    with_timing_cache = offer_timing_cache(timing_cache, attach)
    monitor = BuildProgress(label)  # must outlive the build
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build {onnx_path} for {profile} (see its messages above)")
    if with_timing_cache:
        keep_timing_cache(timing_cache, config.get_timing_cache())
    return bytes(cast(Buffer, serialized))


class Plan:
    """A deserialized plan (the cache's `path`) and its execution context, made on the current CUDA device and run
    on a stream of it."""

    def __init__(self, data: bytes, part: PartInfo, profile: Profile, path: Path) -> None:
        self.profile = profile
        self.part = part
        self.path = path
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


def load_plan(onnx_path: Path, part: PartInfo, sidecar: Sidecar, profile: Profile, device: torch.device) -> Plan:
    """A cached plan whose profile contains `profile`; if there is none, one built (and cached) for it, once however
    many threads and processes ask at the same time. Call under `torch.cuda.device(device)`."""
    gpu = torch.cuda.get_device_name(device)

    def find() -> Plan | None:
        found = cached_plan(sidecar, part, trt.__version__, gpu, profile)
        try:
            return None if found is None else Plan(found[0].read_bytes(), part, found[1], found[0])
        except FileNotFoundError:  # another run replaced it just now: look again under the lock
            return None

    def build() -> Plan:
        if sidecar.precision == "fp16":
            check_fast_fp16(device)
        log.info("trt: building %s/%s (%s) for %s on %s; once, may take minutes", sidecar.model, part.name,
                 sidecar.precision, {name: limits[2] for name, limits in profile.items()}, gpu)
        data = build_plan(onnx_path, profile, timing_cache_path(trt.__version__, gpu), f"{sidecar.model}/{part.name}")
        path = plan_path(sidecar, part, profile, trt.__version__, gpu)
        save_plan(path, data, profile)
        return Plan(data, part, profile, path)

    return made_once(plans_of(sidecar, part, trt.__version__, gpu), find, build)


class TrtRunner(PartRunner):
    """A part run by one TensorRT plan on the engine's device and stream; shapes its profile does not cover (a
    bigger batch, or for FCN a wider picture, than warm-up saw) get a plan spanning both, which replaces the old one
    in memory and in the cache."""

    def __init__(self, onnx_path: Path, part: PartInfo, sidecar: Sidecar, device: torch.device,
                 stream: torch.cuda.Stream, profiles: Profiles) -> None:
        super().__init__(part)
        self._onnx_path = onnx_path
        self._sidecar = sidecar
        self._device = device
        self._stream = stream
        self._profiles = profiles
        self._plan: Plan | None = None

    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Run on the plan, loading or building it first if these shapes need it."""
        names = [spec.name for spec in self.info.inputs]
        shapes = [tuple(x.shape) for x in inputs]
        self._profiles.observe(self.info, shapes)
        with torch.cuda.device(self._device):
            if self._plan is None or not covers(self._plan.profile, names, shapes):
                self._plan = self._replace(self._profiles.wanted(self.info, shapes))
            return self._plan.execute(inputs, self._stream)

    def _replace(self, wanted: Profile) -> Plan:
        """The plan for `wanted` (widened to the current plan's profile); the current one evicted."""
        if self._plan is None:
            return load_plan(self._onnx_path, self.info, self._sidecar, wanted, self._device)
        old_profile, old_path = self._plan.profile, self._plan.path
        self._plan = None  # its engine and context freed before the new plan's are made
        log.warning("trt: %s/%s: shapes beyond its plan's profile (a bigger batch or picture than warm-up saw); "
                    "replacing the plan (a build may take minutes: warm up at the run's batch and size)",
                    self._sidecar.model, self.info.name)
        plan = load_plan(self._onnx_path, self.info, self._sidecar, widened(old_profile, wanted), self._device)
        if plan.path != old_path:
            remove_plan(old_path)
        return plan
