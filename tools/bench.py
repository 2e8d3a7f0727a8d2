"""Benchmark: seg-video's threaded pipeline against sequential loops, same frames, one run.

    python tools/bench.py                       # motion engine, generated 1280×720 30 fps clip, 330 frames
    python tools/bench.py --input bigbuckbunny --repeat 3   # a real 1280×720 clip (fetched), played 3 times
    python tools/bench.py --engine kmeans --input my.mp4 --json result.json

Three variants decode, segment, draw and encode the same frames: seg-video's threaded pipeline; a sequential loop
of the same stage code (only the threading differs); and, for `motion`, the plain loop a user writes first
(`plain_loop`: decode → MOG2 → open → tint through a lookup table → x264, PyAV and OpenCV defaults, about 25
lines). Prints each one's end-to-end fps and the cores it kept busy (process CPU time / wall time: a loop is one
Python thread, but decoder, encoder and OpenCV use their own thread pools), the ratios, and the threaded run's
per-stage milliseconds per frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from _machine import machine_line
from footage import CLIPS, fetch

from seg_video.api import run_config
from seg_video.core.config import RunConfig
from seg_video.core.memory import reuse_large_buffers
from seg_video.core.settings import parse_scalar
from seg_video.core.types import Item
from seg_video.engines.base import create_engine
from seg_video.io.sample import write_sample_clip
from seg_video.io.video import VideoSource, VideoWriter
from seg_video.jobs.annotate import AnnotateJob, FileOutput
from seg_video.jobs.frame_path import OwnEngine, build_stages
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
    stages = build_stages(OwnEngine(engine, owned=False), sink, tracker=tracker_for(config.track, engine.kind),
                          renderer=Renderer(config.render))
    try:
        for frame in source:
            items = [Item(frame)]
            for stage in stages:
                items = stage.process(items)
    finally:
        sink.close()
        engine.close()
    return sink.frames_written, time.perf_counter() - started


def plain_loop(clip: Path, output: Path, preset: str) -> tuple[int, float]:
    """The loop a user writes first, in one thread with the libraries' defaults: every moving pixel (MOG2 at full
    size, opened) tinted through a lookup table, encoded with x264 at `preset`; returns (frames, seconds)."""
    started = time.perf_counter()
    model = cv2.createBackgroundSubtractorMOG2()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    tint = np.clip(np.arange(256)[:, None] * 0.5 + np.array([40, 200, 255]) * 0.5, 0, 255).astype(np.uint8)
    frames = 0
    with av.open(str(clip)) as source, av.open(str(output), "w") as sink:
        video = source.streams.video[0]
        stream = sink.add_stream("libx264", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.options = {"preset": preset, "crf": "23"}
        for frame in source.decode(video):
            image = frame.to_ndarray(format="bgr24")
            moving = cv2.morphologyEx(model.apply(image), cv2.MORPH_OPEN, kernel) == 255
            image[moving] = cv2.LUT(image, tint.reshape(1, 256, 3))[moving]
            sink.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
            frames += 1
        sink.mux(stream.encode(None))
    return frames, time.perf_counter() - started


def played_over(clip: Path, out: Path, times: int) -> Path:
    """`clip` played forwards and backwards in turn, `times` times in all, as one H.264 clip (no audio): a longer
    run of the same real frames, without a jump where it turns."""
    with av.open(str(clip)) as source:
        video = source.streams.video[0]
        rate = video.average_rate
        pictures = [frame.to_ndarray(format="bgr24") for frame in source.decode(video)]
    with av.open(str(out), "w") as sink:
        stream = sink.add_stream("libx264", rate=rate)
        stream.height, stream.width = pictures[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "18", "preset": "veryfast"}
        for turn in range(times):
            for picture in pictures if turn % 2 == 0 else pictures[::-1]:
                sink.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="bgr24")))
        sink.mux(stream.encode(None))
    return out


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
    parser.add_argument("--input", help=f"clip to use instead of the generated one, or a real one: {', '.join(CLIPS)}")
    parser.add_argument("--repeat", type=int, default=1, help="play the input this many times (forwards, backwards…)")
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
        clip = (fetch(args.input) if args.input in CLIPS and not Path(args.input).exists()
                else Path(args.input) if args.input
                else write_sample_clip(folder / "bench.mp4", seconds=args.frames / 30.0, width=args.width,
                                       height=args.height, fps=30.0))
        if args.repeat > 1:
            clip = played_over(clip, folder / "repeated.mp4", args.repeat)
        cpu = time.process_time()
        threaded = threaded_run(config, VideoSource(clip), folder / "threaded.mp4")
        threaded_cores = (time.process_time() - cpu) / threaded[1]
        cpu = time.process_time()
        sequential = sequential_run(config, VideoSource(clip), folder / "sequential.mp4")
        sequential_cores = (time.process_time() - cpu) / sequential[1]
        plain = plain_cores = None
        if args.engine == "motion":
            cpu = time.process_time()
            plain = plain_loop(clip, folder / "plain.mp4", args.preset)
            plain_cores = (time.process_time() - cpu) / plain[1]
        info = VideoSource(clip).info

    threaded_fps = threaded[0] / threaded[1]
    sequential_fps = sequential[0] / sequential[1]
    result = {
        "engine": args.engine, "params": params, "input": f"{info.width}x{info.height} {info.codec}",
        "frames": threaded[0], "threaded_fps": round(threaded_fps, 1), "sequential_fps": round(sequential_fps, 1),
        "ratio": round(threaded_fps / sequential_fps, 2),
        "cores_busy": {"threaded": round(threaded_cores, 2), "sequential": round(sequential_cores, 2)},
        "input_path": str(args.input or "generated"), "repeat": args.repeat,
        "stage_ms_per_frame": {k: round(v, 2) for k, v in threaded[2].items()},
        "machine": machine_line(f"OpenCV {cv2.__version__}"),
    }
    print(f"engine {args.engine} on {result['input']}, {threaded[0]} frames ({result['machine']})")
    print(f"{'variant':<12} {'frames':>6} {'seconds':>8} {'fps':>7} {'cores busy':>11}")
    print(f"{'threaded':<12} {threaded[0]:>6} {threaded[1]:>8.2f} {threaded_fps:>7.1f} {threaded_cores:>11.2f}")
    print(f"{'sequential':<12} {sequential[0]:>6} {sequential[1]:>8.2f} {sequential_fps:>7.1f} "
          f"{sequential_cores:>11.2f}")
    if plain is not None and plain_cores is not None:
        plain_fps = plain[0] / plain[1]
        result |= {"plain_fps": round(plain_fps, 1), "ratio_to_plain": round(threaded_fps / plain_fps, 2)}
        result["cores_busy"]["plain"] = round(plain_cores, 2)
        print(f"{'plain loop':<12} {plain[0]:>6} {plain[1]:>8.2f} {plain_fps:>7.1f} {plain_cores:>11.2f}")
    print(f"ratio threaded/sequential: {result['ratio']:.2f}x"
          + (f", threaded/plain loop: {result['ratio_to_plain']:.2f}x" if "ratio_to_plain" in result else ""))
    print("threaded per-stage busy ms/frame: "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["stage_ms_per_frame"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
