"""Benchmark: seg-video's threaded pipeline against a plain sequential loop, same engine and frames, one run.

    python tools/bench.py                       # motion engine, generated 1280×720 30 fps clip, 330 frames
    python tools/bench.py --engine kmeans --input my.mp4 --json result.json

Both runs decode → segment → render → encode the same frames with the same stage code; only the threading
differs. Prints end-to-end fps of each, their ratio, the cores each kept busy (process CPU time / wall time: the
sequential loop is one Python thread, but decoder, encoder and OpenCV use their own thread pools) and the threaded
run's per-stage milliseconds per frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
from _machine import machine_line

from seg_video.api import run_config
from seg_video.core.config import RunConfig
from seg_video.core.memory import reuse_large_buffers
from seg_video.core.settings import parse_scalar
from seg_video.core.types import Item
from seg_video.engines.base import create_engine
from seg_video.io.sample import write_sample_clip
from seg_video.io.video import VideoSource, VideoWriter
from seg_video.jobs.annotate import AnnotateJob, FileOutput
from seg_video.jobs.frame_path import build_stages
from seg_video.stages.render import Renderer
from seg_video.stages.track import tracker_for


def sequential_run(config: RunConfig, source: VideoSource, output: Path) -> tuple[int, float]:
    """Every frame through every stage function in one thread (the codecs and OpenCV still use their own thread
    pools); returns (frames, seconds)."""
    started = time.perf_counter()
    engine = create_engine(config.engine, config.engine_params)
    engine.load()
    info = source.info
    sink = FileOutput(VideoWriter(output, config.output, fps=info.fps, time_base=info.time_base,
                                  audio_from=info.path), None)
    stages = build_stages(engine, sink, tracker=tracker_for(config.track, engine.kind),
                          renderer=Renderer(config.render), owned=False)
    try:
        for frame in source:
            items = [Item(frame)]
            for stage in stages:
                items = stage.process(items)
    finally:
        sink.close()
        engine.close()
    return sink.frames_written, time.perf_counter() - started


def threaded_run(config: RunConfig, source: VideoSource, output: Path) -> tuple[int, float, dict[str, float]]:
    """The real pipeline; returns (frames, seconds, per-stage busy ms per frame)."""
    engine = create_engine(config.engine, config.engine_params)
    summary = AnnotateJob(config, source, output, engine, owned=True).run()
    per_stage = {name: 1000 * s.busy_seconds / max(1, s.items) for name, s in summary.stats.stages.items()}
    return summary.frames, summary.seconds, per_stage


def main(argv: list[str] | None = None) -> int:
    """Run both variants and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="motion")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--input", type=Path, help="clip to use instead of the generated one")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=330)
    parser.add_argument("--preset", default="veryfast", help="x264 preset for both runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    reuse_large_buffers()  # as the seg-video command does (both variants run in this process)

    params = dict((k, parse_scalar(v)) for k, _, v in (p.partition("=") for p in args.param))
    config = run_config(args.engine, settings=params, sections={"output": {"preset": args.preset}})
    with tempfile.TemporaryDirectory(prefix="seg-video-bench-") as tmp:
        folder = Path(tmp)
        clip = args.input or write_sample_clip(folder / "bench.mp4", seconds=args.frames / 30.0,
                                               width=args.width, height=args.height, fps=30.0)
        cpu = time.process_time()
        threaded = threaded_run(config, VideoSource(clip), folder / "threaded.mp4")
        threaded_cores = (time.process_time() - cpu) / threaded[1]
        cpu = time.process_time()
        sequential = sequential_run(config, VideoSource(clip), folder / "sequential.mp4")
        sequential_cores = (time.process_time() - cpu) / sequential[1]
        info = VideoSource(clip).info

    threaded_fps = threaded[0] / threaded[1]
    sequential_fps = sequential[0] / sequential[1]
    result = {
        "engine": args.engine, "params": params, "input": f"{info.width}x{info.height} {info.codec}",
        "frames": threaded[0], "threaded_fps": round(threaded_fps, 1), "sequential_fps": round(sequential_fps, 1),
        "ratio": round(threaded_fps / sequential_fps, 2),
        "cores_busy": {"threaded": round(threaded_cores, 2), "sequential": round(sequential_cores, 2)},
        "stage_ms_per_frame": {k: round(v, 2) for k, v in threaded[2].items()},
        "machine": machine_line(f"OpenCV {cv2.__version__}"),
    }
    print(f"engine {args.engine} on {result['input']}, {threaded[0]} frames ({result['machine']})")
    print(f"{'variant':<12} {'frames':>6} {'seconds':>8} {'fps':>7} {'cores busy':>11}")
    print(f"{'threaded':<12} {threaded[0]:>6} {threaded[1]:>8.2f} {threaded_fps:>7.1f} {threaded_cores:>11.2f}")
    print(f"{'sequential':<12} {sequential[0]:>6} {sequential[1]:>8.2f} {sequential_fps:>7.1f} "
          f"{sequential_cores:>11.2f}")
    print(f"ratio threaded/sequential: {result['ratio']:.2f}x")
    print("threaded per-stage busy ms/frame: "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["stage_ms_per_frame"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
