"""Latency benchmark: a 30 fps live source into an engine that takes ~100 ms, live policy against lossless, one run.

    python tools/bench_latency.py                          # 60 s per policy, 640×360, motion engine padded to 100 ms
    python tools/bench_latency.py --seconds 20 --cost 0.2 --json result.json

The source is the sample clip played in real time, each frame stamped as captured when it was due (a camera's
buffer hands late frames over the same way), through `seg-video`'s live job. The engine is the motion engine,
padded with a sleep to `--cost` seconds per call (a GPU-bound model leaves the CPU free the same way). For each
policy it reports capture-to-render latency p50/p95 over the whole run and over its first and last quarter, and
the drop rate; then checks the target: under the live policy, p95 ≤ cost + 2 frame intervals, flat over the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from _machine import machine_line

from seg_video.api import run_config
from seg_video.core.runner import Policy
from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.base import Engine, create_engine
from seg_video.io.sample import write_sample_clip
from seg_video.io.streams import LiveInput, paced
from seg_video.io.video import VideoSource
from seg_video.live.job import LiveJob, LiveOptions


class PaddedEngine(Engine):
    """Another engine made to take `cost` seconds per call: it runs, then sleeps the rest of the time."""

    name = "padded"
    kind: ClassVar[Literal["instance", "semantic"]] = "instance"

    def __init__(self, inner: Engine, cost: float) -> None:
        self.inner, self.cost = inner, cost

    @property
    def classes(self) -> ClassTable:
        return self.inner.classes

    def load(self) -> None:
        self.inner.load()

    def prepare(self, frame: Frame) -> Any:
        return self.inner.prepare(frame)

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        started = time.perf_counter()
        result = self.inner.infer(frames, prepared)
        time.sleep(max(0.0, self.cost - (time.perf_counter() - started)))
        return result

    def close(self) -> None:
        self.inner.close()


def run_policy(policy: Policy, clip: Path, seconds: float, engine: str, cost: float) -> dict[str, Any]:
    """Play `clip` live into the padded engine under `policy` for `seconds`; the latency and drop figures."""
    published: list[tuple[float, float]] = []  # (captured at, rendered at)

    def note(frame: Frame) -> None:
        published.append((frame.captured_at, time.monotonic()))

    source = LiveInput(name=policy.value, frames=paced(VideoSource(clip)), policy=policy, fps=30.0)
    job = LiveJob(run_config(engine), [source], LiveOptions(), stop=threading.Event(),
                  engine_factory=lambda: PaddedEngine(create_engine(engine), cost), on_frame=note)
    timer = threading.Timer(seconds, job.stop)
    timer.start()
    try:
        summary = job.run()
    finally:
        timer.cancel()
    latencies = np.array([done - captured for captured, done in published]) * 1000
    quarter = max(1, len(latencies) // 4)
    dropped = summary.feeds[0].dropped_total
    return {
        "policy": policy.value, "frames_rendered": len(latencies), "dropped": dropped,
        "drop_rate": round(dropped / max(1, dropped + len(latencies)), 3),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "first_quarter_p50_ms": round(float(np.median(latencies[:quarter])), 1),
        "last_quarter_p50_ms": round(float(np.median(latencies[-quarter:])), 1),
        "last_quarter_p95_ms": round(float(np.percentile(latencies[-quarter:], 95)), 1),
        "dropped_by_stage": summary.feeds[0].dropped,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both policies and print the comparison; exit 1 if the live policy misses its target."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each policy's run")
    parser.add_argument("--cost", type=float, default=0.1, help="seconds per inference call")
    parser.add_argument("--engine", default="motion", help="engine to pad to --cost")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    fps = 30.0
    with tempfile.TemporaryDirectory(prefix="seg-video-latency-") as tmp:
        clip = write_sample_clip(Path(tmp) / "live.mp4", seconds=args.seconds + 2, width=args.width,
                                 height=args.height, fps=fps, audio=False)
        runs = [run_policy(policy, clip, args.seconds, args.engine, args.cost)
                for policy in (Policy.LIVE, Policy.LOSSLESS)]
    target = 1000 * (args.cost + 2 / fps)
    live = runs[0]
    met = live["p95_ms"] <= target and live["last_quarter_p95_ms"] <= target
    result = {
        "source": f"{args.width}x{args.height} at {fps:.0f} fps, live for {args.seconds:.0f} s per policy",
        "engine": f"{args.engine} padded to {1000 * args.cost:.0f} ms per call", "runs": runs,
        "target_p95_ms": round(target, 1), "target_met": met,
        "machine": machine_line(),
    }
    print(f"{result['source']}; {result['engine']} ({result['machine']})")
    print(f"{'policy':<9} {'frames':>6} {'dropped':>7} {'drop%':>6} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'1st¼ p50':>9} {'last¼ p50':>10}")
    for run in runs:
        print(f"{run['policy']:<9} {run['frames_rendered']:>6} {run['dropped']:>7} {100 * run['drop_rate']:>5.1f}% "
              f"{run['p50_ms']:>8.0f} {run['p95_ms']:>8.0f} {run['first_quarter_p50_ms']:>9.0f} "
              f"{run['last_quarter_p50_ms']:>10.0f}")
    print(f"target (live): p95 ≤ {target:.0f} ms (inference + 2 frame intervals), over the run and its last quarter: "
          f"{'met' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
