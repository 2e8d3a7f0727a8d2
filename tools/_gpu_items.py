"""The measuring items of tools/gpu_check.py, each run in a process of its own, on seg-video's public engine API and
bench_gpu's timing. Random-initialised, seeded weights throughout (the GPU machines are offline)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _agreement import instance_agreement, label_agreement, threshold_keeping
from _gpu_report import write_json
from bench_gpu import end_to_end, engine_only, warmed

from seg_video.api import segment
from seg_video.core.types import Frame, Segmentation
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.choice import missing
from seg_video.io.sample import write_sample_clip
from seg_video.io.video import VideoSource

Config = tuple[str, str, int]
"""A measured configuration: backend, precision, batch."""


class NotAvailable(Exception):
    """An item that cannot run here; the message says why."""


class CheckFailed(Exception):
    """A check that ran and found a fault (its data is recorded)."""


@dataclass(frozen=True)
class Plan:
    """What the items run: the real run on a CUDA GPU, or the quick dry run on the CPU at tiny sizes."""

    device: str
    label: str
    speed_side: int
    """FCN engine-only: square frames of this side, model input of the same (min_size)."""
    speed_frames: int
    speed_configs: tuple[Config, ...]
    clip_size: tuple[int, int]
    """Width and height of the frames of agreement, end to end and the shared engine."""
    agreement_frames: int
    agreement_configs: tuple[Config, ...]
    """The variants compared with eager torch FP32 (`torch fp16` is autocast)."""
    e2e_frames: int
    e2e_configs: tuple[Config, ...]
    shared: tuple[str, str]
    """Backend and precision of the engine two threads share."""
    shared_frames: int
    kept_detections: int
    """Mask R-CNN detections kept on the first frame (random weights score low): the threshold lies midway between
    the scores of that many and one more, eager FP32."""
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    """Model input sizes by engine (default: the engine's own)."""


GPU = Plan(device="cuda", label="CUDA", speed_side=520, speed_frames=128,
           speed_configs=(("torch", "fp32", 1), ("torch-compiled", "fp16", 1), ("torch", "fp32", 8),
                          ("torch-compiled", "fp16", 8), ("torch", "fp16", 1), ("torch", "fp16", 8), ("trt", "fp16", 1),
                          ("trt", "fp16", 8), ("onnx", "fp16", 1), ("onnx", "fp16", 8)),
           clip_size=(1280, 720), agreement_frames=3,
           agreement_configs=tuple((backend, "fp16", 1) for backend in ("torch", "torch-compiled", "onnx", "trt")),
           e2e_frames=120,
           e2e_configs=(("torch-compiled", "fp16", 1), ("torch", "fp16", 1), ("torch-compiled", "fp16", 4),
                        ("torch", "fp16", 4), ("trt", "fp16", 1)),
           shared=("torch-compiled", "fp16"), shared_frames=24, kept_detections=20)
DRY_RUN = Plan(device="cpu", label="CPU dry run (tiny sizes: the numbers mean nothing)", speed_side=64, speed_frames=4,
               speed_configs=(("torch", "fp32", 2),), clip_size=(96, 64), agreement_frames=1,
               agreement_configs=(("torch", "fp32", 1),), e2e_frames=3,
               e2e_configs=(("torch", "fp32", 1),), shared=("torch", "fp32"), shared_frames=3, kept_detections=3,
               sizes={"fcn": {"min_size": 64}, "maskrcnn": {"min_size": 64, "max_size": 96}})


@dataclass
class Context:
    """One item's run: its plan, deadline (epoch seconds), temporary folder, optional real clip, and the results file
    that `put` rewrites after every result (so a run killed at its timeout keeps what it measured)."""

    plan: Plan
    deadline: float
    temp: Path
    clip: Path | None
    results: Path
    data: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any) -> None:
        """Record one result, on disk at once."""
        self.data[key] = value
        write_json(self.results, {"data": self.data})

    def left(self) -> float:
        """Seconds left before the item is stopped."""
        return self.deadline - time.time()

    def params(self, name: str, backend: str = "torch", precision: str = "fp32", **extra: Any) -> dict[str, Any]:
        """Engine settings: random seeded weights on the plan's device, its sizes, this backend and precision."""
        providers = {"providers": ("cuda",)} if backend == "onnx" and self.plan.device == "cuda" else {}
        return {"weights": "none", "device": self.plan.device, "backend": backend, "precision": precision,
                **self.plan.sizes.get(name, {}), **providers, **extra}

    def why_not(self, backend: str, margin: float) -> str | None:
        """Why a configuration is not run: the backend cannot run here, or fewer than `margin` seconds are left."""
        device = torch.device(self.plan.device)
        reason = missing(backend, device)
        if reason is None and backend == "onnx" and device.type == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                reason = "this onnxruntime has no CUDA execution provider (a CPU build)"
        if reason is not None:
            return f"not available here: {reason}"
        return "not run: time budget" if self.left() < margin else None

    def clip_frames(self, count: int) -> tuple[Path, list[Frame]]:
        """The real clip (`--clip`) or the sample scene written at the plan's clip size, and its first `count`
        frames."""
        width, height = self.plan.clip_size
        return self.sample(width, height, count) if self.clip is None else \
            (self.clip, list(VideoSource(self.clip, max_frames=count)))

    def sample(self, width: int, height: int, count: int) -> tuple[Path, list[Frame]]:
        """The sample scene as a clip of `count` frames at this size (written once per run), and its frames."""
        path = self.temp / f"sample-{width}x{height}-{count}.mp4"
        if not path.exists():
            partial = write_sample_clip(self.temp / f"partial-{path.name}", seconds=count / 30, width=width,
                                        height=height)
            partial.rename(path)
        return path, list(VideoSource(path, max_frames=count))


def each_config(ctx: Context, prefix: str, configs: tuple[Config, ...], margin: float,
                measure: Callable[[str, str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Measure every configuration that can run here while at least `margin` seconds are left, each recorded at once
    with its peak GPU memory, or with why it was not run or how it failed (the others still run); the measured ones."""
    measured = []
    for backend, precision, batch in configs:
        key = f"{prefix}{backend} {precision} batch {batch}"
        reason = ctx.why_not(backend, margin)
        if reason is None:
            try:
                fresh_peak(ctx.plan.device)
                row = {"backend": backend, "precision": precision, "batch": batch, **measure(backend, precision, batch),
                       "peak_memory_mib": peak_mib(ctx.plan.device), "on": ctx.plan.label}
            except Exception as error:  # noqa: BLE001 - one configuration's fault is its own result
                reason = f"failed: {type(error).__name__}: {error}"
        ctx.put(key, row if reason is None else reason)
        measured += [row] if reason is None else []
    return measured


def run(engine: TorchEngine, frames: list[Frame]) -> list[Segmentation]:
    """prepare + infer, one frame at a time."""
    return [engine.infer([frame], [engine.prepare(frame)])[0] for frame in frames]


def fresh_peak(device: str) -> None:
    """Free what earlier configurations left and start a new peak-memory count."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    """The most GPU memory allocated since `fresh_peak`, MiB (None on the CPU)."""
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def need_cuda(ctx: Context) -> None:
    """Raise `NotAvailable` when the plan wants CUDA and there is none."""
    if ctx.plan.device == "cuda" and not torch.cuda.is_available():
        raise NotAvailable("no CUDA")


def calibrated(ctx: Context, frames: list[Frame]) -> tuple[float, list[Segmentation]]:
    """Eager FP32 Mask R-CNN on `frames` with every detection, the score threshold that keeps the plan's
    `kept_detections` on the first frame, and the results above it (the reference)."""
    engine = create_engine("maskrcnn", ctx.params("maskrcnn", score_threshold=0.0))
    assert isinstance(engine, TorchEngine)
    engine.load()
    everything = run(engine, frames)
    engine.close()
    threshold = threshold_keeping(everything[0].scores, ctx.plan.kept_detections)
    return threshold, [result.select(result.scores > threshold) for result in everything]


def compare(name: str, results: list[Segmentation], reference: list[Segmentation]) -> dict[str, Any]:
    """One variant against the reference over all frames: FCN identical pixels; Mask R-CNN matched instances."""
    if name == "fcn":
        shares = [label_agreement(ours, theirs) for ours, theirs in zip(results, reference, strict=True)]
        return {"identical_pixels_pct": round(100 * float(np.mean(shares)), 3),
                "worst_frame_pct": round(100 * min(shares), 3), "meets_test_threshold_99pct": min(shares) >= 0.99}
    found = [instance_agreement(ours, theirs) for ours, theirs in zip(results, reference, strict=True)]
    reference_count, matched = sum(a.reference for a in found), sum(a.matched for a in found)
    mask_iou = min(a.mask_iou for a in found)
    return {"reference_instances": reference_count, "compared_instances": sum(a.compared for a in found),
            "matched": matched, "worst_frame_mask_iou": round(mask_iou, 4),
            "meets_test_thresholds": matched >= 0.9 * reference_count and mask_iou >= 0.95}


def agreement(ctx: Context) -> str:
    """FP16 variants against eager torch FP32 on a few frames: FCN label maps, Mask R-CNN boxes and masks (the dry
    run compares eager FP32 with itself: FP16 runs on a GPU only)."""
    need_cuda(ctx)
    _, frames = ctx.clip_frames(ctx.plan.agreement_frames)
    ctx.put("frames", f"{len(frames)} frames {frames[0].size[1]}x{frames[0].size[0]}")
    measured = agree(ctx, "fcn", frames) + agree(ctx, "maskrcnn", frames)
    return f"{measured} variants compared with eager FP32 on {len(frames)} frames (fcn and maskrcnn)"


def agree(ctx: Context, name: str, frames: list[Frame]) -> int:
    """Engine `name`'s FP16 variants against its eager FP32 results (Mask R-CNN's at a calibrated threshold), each
    recorded; how many were measured."""
    extra: dict[str, Any] = {}
    if name == "maskrcnn":
        extra["score_threshold"], reference = calibrated(ctx, frames)
        ctx.put("maskrcnn_score_threshold", round(extra["score_threshold"], 4))
    else:
        engine, _ = warmed(name, ctx.params(name), frames, 1)
        reference = run(engine, frames)
        engine.close()

    def against_fp32(backend: str, precision: str, batch: int) -> dict[str, Any]:
        engine, _ = warmed(name, ctx.params(name, backend, precision, **extra), frames, batch)
        results = run(engine, frames)
        engine.close()
        return compare(name, results, reference)

    return len(each_config(ctx, f"{name} vs torch fp32: ", ctx.plan.agreement_configs, 20, against_fp32))


def fcn_speed(ctx: Context) -> str:
    """FCN-ResNet50 engine-only frames per second (prepare + infer, synchronised, warm-up excluded) per
    configuration."""
    need_cuda(ctx)
    side = ctx.plan.speed_side
    _, frames = ctx.sample(side, side, ctx.plan.speed_frames)

    def speed(backend: str, precision: str, batch: int) -> dict[str, Any]:
        engine, warm_seconds = warmed("fcn", ctx.params("fcn", backend, precision, min_size=side), frames, batch)
        milliseconds = engine_only(engine, frames, batch)
        engine.close()
        return {"frames_timed": len(frames), "fps": round(1000 / milliseconds, 1),
                "ms_per_frame": round(milliseconds, 3), "load_and_warm_up_s": round(warm_seconds, 1)}

    rows = each_config(ctx, "", ctx.plan.speed_configs, 25, speed)
    best = max((row["fps"] for row in rows), default=0.0)
    return f"best {best:.1f} fps at {side}x{side} on {ctx.plan.label} (target ≥ 300 on a GPU)"


def maskrcnn_e2e(ctx: Context) -> str:
    """Mask R-CNN frames per second through the threaded pipeline (decode → preprocess → infer → render → encode),
    per configuration."""
    need_cuda(ctx)
    clip, frames = ctx.clip_frames(ctx.plan.e2e_frames)
    threshold, reference = calibrated(ctx, frames[:1])
    ctx.put("score_threshold", {"value": round(threshold, 4), "detections_on_first_frame": len(reference[0])})

    def speed(backend: str, precision: str, batch: int) -> dict[str, Any]:
        params = ctx.params("maskrcnn", backend, precision, score_threshold=threshold)
        engine, warm_seconds = warmed("maskrcnn", params, frames, batch)
        fps = end_to_end(engine, "maskrcnn", params, clip, batch, ctx.temp / "maskrcnn.mp4", len(frames))
        engine.close()
        return {"frames": len(frames), "fps": round(fps, 1), "load_and_warm_up_s": round(warm_seconds, 1)}

    rows = each_config(ctx, "", ctx.plan.e2e_configs, 30, speed)
    best = max((row["fps"] for row in rows), default=0.0)
    height, width = frames[0].size
    return f"best {best:.1f} fps end to end at {width}x{height} on {ctx.plan.label} (target ≥ 60 on a GPU)"


def label_maps(clip: Path, engine: TorchEngine, count: int) -> list[np.ndarray]:
    """The label maps of one `seg_video.api.segment` run over the clip's first `count` frames with the loaded
    engine."""
    return [seg.label_map for _, seg in segment(clip, engine, max_frames=count) if seg.label_map is not None]


def shared_engine(ctx: Context) -> str:
    """Two pipelines in two threads at once on ONE loaded engine (the plan's: torch-compiled FP16 on a GPU): no
    error, and each frame's label map the same as a single run's."""
    need_cuda(ctx)
    backend, precision = ctx.plan.shared
    clip, frames = ctx.clip_frames(ctx.plan.shared_frames)
    engine, _ = warmed("fcn", ctx.params("fcn", backend, precision), frames, 1)
    single = label_maps(clip, engine, len(frames))
    with ThreadPoolExecutor(2, thread_name_prefix="source") as pool:
        runs = list(pool.map(lambda _: label_maps(clip, engine, len(frames)), range(2)))
    engine.close()
    shares = [float((ours == theirs).mean()) for maps in runs for ours, theirs in zip(maps, single, strict=True)]
    identical = sum(share == 1.0 for share in shares)
    ctx.put("result", {"engine": f"fcn {backend} {precision}", "frames_per_source": len(single),
                       "identical_frames": f"{identical}/{len(shares)}", "worst_frame_pixels_pct": 100 * min(shares),
                       "on": ctx.plan.label})
    summary = f"fcn {backend} {precision}, 2 sources × {len(single)} frames: {identical}/{len(shares)} identical"
    if identical < len(shares):
        raise CheckFailed(summary)
    return summary


ITEMS: dict[str, Callable[[Context], str]] = {"agreement": agreement, "fcn_speed": fcn_speed,
                                              "maskrcnn_e2e": maskrcnn_e2e, "shared_engine": shared_engine}
"""The items that measure with seg-video's engines, by name."""
