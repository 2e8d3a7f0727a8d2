"""Benchmark the neural engines per backend: engine-only milliseconds per frame and end-to-end fps.

    python tools/bench_gpu.py                                   # fcn and maskrcnn, every backend present, fp16
    python tools/bench_gpu.py --engines fcn --width 520 --height 520 --frames 300 --json fcn520.json
    python tools/bench_gpu.py --backends torch,trt --weights model.pt
    python tools/bench_gpu.py --engines lraspp --backends onnx,opencv,torch --input clip360.mp4 --min-size 256

For each engine and each backend that can run here, on a generated clip (1280×720 by default) or a real one
(`--input`, its first `--frames` frames engine-only, all of it end to end): the engine is loaded
and warmed up first (compilation and TensorRT builds happen there, outside every timing); then *engine-only* is
prepare + infer over the decoded frames held in memory, synchronised, per frame; *end to end* is the threaded
pipeline (decode → preprocess → infer → render → H.264 encode) with that same loaded engine, frames per second.
torch runs at FP32 (the reference), the other backends at `--precision` (fp16 by default). Without a CUDA GPU it
runs what is present on the CPU at FP32 and says what it skipped. Random weights (`--weights none`, the default:
the GPU machines are offline) time the same as trained ones, except Mask R-CNN's per-detection work.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _gpu_env import environment

from seg_video.api import run_config
from seg_video.core.types import Frame
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.choice import missing
from seg_video.io.sample import write_sample_clip
from seg_video.io.video import VideoSource
from seg_video.jobs.annotate import AnnotateJob

BACKENDS = ("torch", "torch-compiled", "onnx", "trt")


def engine_only(engine: TorchEngine, frames: list[Frame], batch: int) -> float:
    """Milliseconds per frame for prepare + infer over `frames`, in batches, device work included."""
    started = time.perf_counter()
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        engine.infer(chunk, [engine.prepare(frame) for frame in chunk])
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    return 1000 * (time.perf_counter() - started) / len(frames)


def end_to_end(engine: TorchEngine, name: str, params: dict[str, Any], clip: Path, batch: int,
               output: Path, max_frames: int | None = None) -> float:
    """Frames per second of the threaded pipeline with the loaded engine over the clip (its first `max_frames`),
    after its first batch."""
    stamps: list[float] = []
    config = run_config(name, settings=params, sections={"pipeline": {"batch": batch},
                                                         "output": {"preset": "veryfast"}})
    AnnotateJob(config, VideoSource(clip, max_frames=max_frames), output, engine, owned=False,
                on_frame=lambda _: stamps.append(time.perf_counter())).run()
    timed = stamps[batch:]
    return (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else 0.0


def warmed(name: str, params: dict[str, Any], frames: list[Frame], batch: int) -> tuple[TorchEngine, float]:
    """The engine loaded and warmed up for `frames`' size and `batch` (compiles and builds done, CUDA graphs and the
    allocator settled by two untimed batches), and the seconds that took."""
    engine = create_engine(name, params)
    assert isinstance(engine, TorchEngine)
    started = time.perf_counter()
    engine.load()
    height, width = frames[0].size
    engine.warm_up(height, width, batch)
    engine_only(engine, frames[:2 * batch], batch)
    return engine, time.perf_counter() - started


def measure(name: str, backend: str, params: dict[str, Any], clip: Path, frames: list[Frame], batch: int,
            folder: Path) -> dict[str, Any]:
    """Load, warm up, time engine-only and end to end; one result row."""
    engine, warm_seconds = warmed(name, {**params, "backend": backend}, frames, batch)
    milliseconds = engine_only(engine, frames, batch)
    fps = end_to_end(engine, name, {**params, "backend": backend}, clip, batch, folder / f"{name}-{backend}.mp4")
    engine.close()
    return {"engine": name, "backend": backend, "precision": params["precision"], "batch": batch,
            "load_and_warm_up_s": round(warm_seconds, 1), "engine_only_ms": round(milliseconds, 2),
            "engine_only_fps": round(1000 / milliseconds, 1), "end_to_end_fps": round(fps, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark matrix and print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="fcn,maskrcnn")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--weights", default="none", metavar="default|none|PATH")
    parser.add_argument("--input", type=Path, help="a real clip to measure on (default: a generated one)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-size", type=int, help="the model input's shorter side (default: each engine's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        print("bench_gpu: no CUDA GPU here: measuring on the CPU at fp32; GPU numbers need a GPU machine")
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="seg-video-bench-gpu-") as tmp:
        folder = Path(tmp)
        clip = args.input or write_sample_clip(folder / "clip.mp4", seconds=args.frames / 30.0, width=args.width,
                                               height=args.height, fps=30.0)
        frames = list(VideoSource(clip))[:args.frames]
        for name in args.engines.split(","):
            for backend in args.backends.split(","):
                reason = missing(backend, device)
                if reason is not None:
                    skipped.append(f"{name}/{backend}: {reason}")
                    continue
                precision = args.precision if device.type == "cuda" and backend != "torch" else "fp32"
                params: dict[str, Any] = {"device": str(device), "weights": args.weights, "precision": precision}
                if args.min_size is not None:
                    params["min_size"] = args.min_size
                rows.append(measure(name, backend, params, clip, frames, args.batch, folder))
                print(json.dumps(rows[-1]), flush=True)
    versions = environment()
    height, width = frames[0].size
    result = {"machine": versions, "clip": f"{args.input or 'generated'}, {width}x{height}, {len(frames)} frames",
              "rows": rows,
              "skipped": skipped}
    print(f"\n{'engine':<10} {'backend':<15} {'prec':<5} {'engine ms/frame':>15} {'engine fps':>10} "
          f"{'end-to-end fps':>14}")
    for row in rows:
        print(f"{row['engine']:<10} {row['backend']:<15} {row['precision']:<5} {row['engine_only_ms']:>15.2f} "
              f"{row['engine_only_fps']:>10.1f} {row['end_to_end_fps']:>14.1f}")
    for line in skipped:
        print(f"skipped {line}")
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
