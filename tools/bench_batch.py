"""Benchmark: `seg-video batch` throughput over generated clips with 1 and N local workers and on local Ray.

    python tools/bench_batch.py                      # 8 clips of 320×240, 4 s; motion engine; 3 repeats
    python tools/bench_batch.py --clips 16 --workers 4 --no-ray --json result.json

Each run is a whole batch into an empty folder, as a user would time it: worker start-up and engine loading
included (a Ray instance is started once beforehand, as `ray start` would have). Prints videos/s and frames/s of
each repeat, the median of each variant with the cores it kept busy (CPU seconds / wall seconds; local variants),
and the ratio N workers / 1 worker of the medians. One worker already runs its stages on threads, so its cores busy
bounds what more workers can add: at most cores / (one worker's cores busy).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _machine import machine_line

from seg_video.cli import batch
from seg_video.io.sample import write_sample_clip


def timed_batch(inputs: Path, out: Path, options: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one quiet batch of `inputs` into the new folder `out`, which must succeed; CPU counts
    this process and its finished children (local workers; Ray actors are not children, and not counted)."""
    before, started = os.times(), time.perf_counter()
    code = batch.main([str(inputs), "--out", str(out), "-q", *options])
    seconds, after = time.perf_counter() - started, os.times()
    if code != 0:
        raise SystemExit(f"the batch into {out} failed (exit {code})")
    return seconds, sum(after[:4]) - sum(before[:4])


def main(argv: list[str] | None = None) -> int:
    """Make the clips, run each variant `--repeat` times (interleaved, so load changes hit all), print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="motion")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--workers", type=int, default=2, help="the many-workers variant's count")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    variants: dict[str, list[str]] = {"local, 1 worker": ["--workers", "1"],
                                      f"local, {args.workers} workers": ["--workers", str(args.workers)]}
    ray: ModuleType | None = None
    if not args.no_ray:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local instance on loopback only
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = importlib.import_module("ray")
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        variants[f"Ray local, {args.workers} actors"] = ["--ray", "auto", "--workers", str(args.workers)]
    options = ["--engine", args.engine]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    try:
        with tempfile.TemporaryDirectory(prefix="seg-video-bench-batch-") as tmp:
            inputs = Path(tmp) / "clips"
            inputs.mkdir()
            for k in range(args.clips):
                write_sample_clip(inputs / f"clip{k:02d}.mp4", seconds=args.seconds, width=args.width,
                                  height=args.height)
            frames = args.clips * round(args.seconds * 30)
            for repeat in range(args.repeat):
                for name, extra in variants.items():
                    out = Path(tmp) / f"out-{len(seconds[name])}-{extra[-1]}-{extra[0]}"
                    wall, used = timed_batch(inputs, out, options + extra)
                    seconds[name].append(wall)
                    cpu[name].append(used)
                    print(f"repeat {repeat + 1}: {name:<24} {wall:6.2f} s, CPU {used:6.2f} s", file=sys.stderr)
    finally:
        if ray is not None:
            ray.shutdown()

    rows: list[dict[str, Any]] = []
    for name, times in seconds.items():
        median = statistics.median(times)
        busy = None if name.startswith("Ray") else round(statistics.median(
            used / wall for used, wall in zip(cpu[name], times, strict=True)), 2)
        rows.append({"variant": name, "seconds": [round(t, 2) for t in times], "median_s": round(median, 2),
                     "videos_per_s": round(args.clips / median, 2), "frames_per_s": round(frames / median, 1),
                     "cores_busy": busy})
    one, many = rows[0]["median_s"], rows[1]["median_s"]
    result = {"engine": args.engine, "clips": args.clips, "frames": frames,
              "clip": f"{args.width}x{args.height}, {args.seconds} s at 30 fps", "variants": rows,
              "ratio_many_to_one": round(one / many, 2),
              "machine": machine_line()}
    print(f"engine {args.engine}: {args.clips} clips ({result['clip']}), {frames} frames; {result['machine']}")
    print(f"{'variant':<26}{'median s':>9}{'videos/s':>10}{'frames/s':>10}{'cores busy':>11}   runs (s)")
    for row in rows:
        shown = "-" if row["cores_busy"] is None else f"{row['cores_busy']:.2f}"
        print(f"{row['variant']:<26}{row['median_s']:>9.2f}{row['videos_per_s']:>10.2f}{row['frames_per_s']:>10.1f}"
              f"{shown:>11}   {', '.join(f'{t:.2f}' for t in row['seconds'])}")
    print(f"ratio {args.workers} workers / 1 worker (medians): {result['ratio_many_to_one']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
