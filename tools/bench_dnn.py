"""Benchmark FCN on the CPU runtimes: OpenCV DNN vs ONNX Runtime vs eager PyTorch, same frames, one run.

    python tools/bench_dnn.py                                  # 640×360 frames, 20 timed frames each
    python tools/bench_dnn.py --width 520 --height 520 --frames 30 --json dnn.json

The three `fcn` engines (`--backend opencv`, `onnx`, `torch`, device cpu, FP32, the same random weights unless
`--weights`) are loaded and warmed up first (the ONNX export happens there, outside every timing). Then each frame of
a generated clip goes through all three in turn, rotating which goes first, so a busy machine slows them alike:
engine-only milliseconds (prepare + infer, pre- and post-processing included, the same torch code for all three) per
frame; median and 90th percentile; and how many label-map pixels each backend shares with torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from seg_video.core.types import Frame, Segmentation
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.io.sample import write_sample_clip
from seg_video.io.video import VideoSource

BACKENDS = ("opencv", "onnx", "torch")
RUNTIMES = {"opencv": f"OpenCV DNN {cv2.__version__}", "onnx": "ONNX Runtime", "torch": f"PyTorch {torch.__version__}"}


def timed(engine: TorchEngine, frame: Frame) -> tuple[float, Segmentation]:
    """Milliseconds for prepare + infer of one frame, and its result."""
    started = time.perf_counter()
    (result,) = engine.infer([frame], [engine.prepare(frame)])
    return 1000 * (time.perf_counter() - started), result


def machine() -> dict[str, Any]:
    """Processor, cores, threads and library versions, for the record."""
    import onnxruntime

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
            "python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    """Load the three engines, time them frame by frame, print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--min-size", type=int, help="the model input's shorter side (default: the frame's)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per backend")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames per backend first")
    parser.add_argument("--weights", default="none", metavar="default|none|PATH")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    min_size = args.min_size or min(args.width, args.height)
    params = {"device": "cpu", "weights": args.weights, "min_size": min_size}
    engines: dict[str, TorchEngine] = {}
    for backend in BACKENDS:
        engine = create_engine("fcn", {**params, "backend": backend})
        assert isinstance(engine, TorchEngine)
        engines[backend] = engine
    with tempfile.TemporaryDirectory(prefix="seg-video-bench-dnn-") as tmp:
        clip = write_sample_clip(Path(tmp) / "clip.mp4", seconds=(args.warmup + args.frames) / 30.0,
                                 width=args.width, height=args.height, fps=30.0)
        frames = list(VideoSource(clip))
    times: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    labels: dict[str, list[np.ndarray]] = {backend: [] for backend in BACKENDS}
    for engine in engines.values():
        engine.load()
        for frame in frames[:args.warmup]:
            timed(engine, frame)
    for i, frame in enumerate(frames[args.warmup:]):
        for backend in BACKENDS[i % 3:] + BACKENDS[:i % 3]:
            milliseconds, result = timed(engines[backend], frame)
            times[backend].append(milliseconds)
            assert result.label_map is not None
            labels[backend].append(result.label_map)
    rows: list[dict[str, Any]] = []
    for backend in BACKENDS:
        same = np.mean([(ours == theirs).mean() for ours, theirs in zip(labels[backend], labels["torch"],
                                                                          strict=True)])
        ordered = sorted(times[backend])
        rows.append({"backend": backend, "runtime": RUNTIMES[backend], "frames": len(ordered),
                     "ms_per_frame": round(statistics.median(ordered), 1),
                     "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
                     "agreement_with_torch": round(float(same), 5)})
    report = {"engine": "fcn", "frame": f"{args.width}x{args.height}", "model_input_shorter_side": min_size,
              "machine": machine(), "rows": rows}
    print(f"FCN ResNet-50 on the CPU, {args.width}×{args.height} frames (model input shorter side {min_size}), "
          f"{args.frames} timed frames each, engine-only (prepare + infer)\n")
    print("| backend | runtime | ms/frame (median) | p90 ms | label maps = torch |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['backend']} | {row['runtime']} | {row['ms_per_frame']:.1f} | {row['p90_ms']:.1f} | "
              f"{100 * row['agreement_with_torch']:.2f} % |")
    print("\n" + ", ".join(f"{key} {value}" for key, value in machine().items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
