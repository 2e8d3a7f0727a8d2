"""Benchmark: what each CPU engine costs per frame on real footage, with the tracking and drawing it brings.

    python tools/bench_engines.py                          # bigbuckbunny (1280×720, fetched), every classical engine
    python tools/bench_engines.py --input my.mp4 --engine motion --frames 200 --json costs.json

Decodes the clip once, then runs each engine over the same frames in one thread, in order: prepare + infer
(+ finish), the tracker, the renderer, each timed per frame; prints the median milliseconds of each and the
instances (or regions) per frame, as a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from _machine import machine_line
from footage import CLIPS, fetch

from seg_video.core.config import RenderSettings, TrackSettings
from seg_video.core.memory import reuse_large_buffers
from seg_video.core.types import Frame
from seg_video.engines.base import create_engine
from seg_video.io.video import VideoSource
from seg_video.stages.render import Renderer
from seg_video.stages.track import tracker_for

ENGINES = ("motion", "threshold", "kmeans", "edges", "region")


def engine_costs(name: str, frames: list[Frame]) -> dict[str, float]:
    """Median ms per frame of `name`'s prepare + infer, tracking and drawing over `frames`, and the mean number of
    instances or regions it reports."""
    engine = create_engine(name, {})
    engine.load()
    tracker = tracker_for(TrackSettings(), engine.kind)
    renderer = Renderer(RenderSettings())
    infer, track, render, found = [], [], [], []
    for frame in frames:
        started = time.perf_counter()
        seg = engine.infer([frame], [engine.prepare(frame)])[0]
        segmented = time.perf_counter()
        if tracker is not None:
            seg = tracker.update(seg, frame.index, frame.seconds)
        tracked = time.perf_counter()
        renderer.render(frame.image, seg)
        drawn = time.perf_counter()
        infer.append(segmented - started)
        track.append(tracked - segmented)
        render.append(drawn - tracked)
        found.append(len(seg))
    engine.close()
    return {"infer_ms": round(1000 * float(np.median(infer)), 1), "track_ms": round(1000 * float(np.median(track)), 1),
            "render_ms": round(1000 * float(np.median(render)), 1), "per_frame": round(float(np.mean(found)), 1)}


def main(argv: list[str] | None = None) -> int:
    """Time each engine and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="bigbuckbunny", help=f"a clip, or a real one: {', '.join(CLIPS)}")
    parser.add_argument("--engine", action="append", choices=ENGINES, help="engines to time (default: all)")
    parser.add_argument("--frames", type=int, default=132, help="frames to time (from the start)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    reuse_large_buffers()
    clip = fetch(args.input) if args.input in CLIPS and not Path(args.input).exists() else Path(args.input)
    source = VideoSource(clip)
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == args.frames:
            break
    info = source.info
    results = {name: engine_costs(name, frames) for name in args.engine or ENGINES}
    machine = machine_line(f"OpenCV {cv2.__version__}")
    print(f"{clip.name}: {info.width}x{info.height}, {len(frames)} frames ({machine})")
    print("| engine | prepare + infer | tracking | drawing | instances or regions per frame |")
    print("| --- | --- | --- | --- | --- |")
    for name, cost in results.items():
        print(f"| `{name}` | {cost['infer_ms']} ms | {cost['track_ms']} ms | {cost['render_ms']} ms | "
              f"{cost['per_frame']} |")
    if args.json:
        args.json.write_text(json.dumps({"input": clip.name, "frames": len(frames), "machine": machine,
                                         "engines": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
