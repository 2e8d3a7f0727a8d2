"""The options of `seg-video`: the parser, and the run settings the command line asks for (a config file or preset,
then the flags on top), checked."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from seg_video.cli.report import PROG
from seg_video.core.config import RunConfig, build_config, read_config_file
from seg_video.core.errors import UsageError
from seg_video.core.settings import parse_scalar
from seg_video.core.version import __version__
from seg_video.engines.base import engine_names

ENGINE_FLAGS = {
    "device": "device", "precision": "precision", "weights": "weights", "score_threshold": "score_threshold",
    "mask_threshold": "mask_threshold", "classes": "classes", "min_size": "min_size", "backend": "backend",
    "dnn_target": "dnn_target", "model_file": "model_file", "model_config": "model_config",
}
"""Command-line options that set a field of the chosen engine's settings (dest → field)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is the single line `seg-video: error: …` and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    """All options, grouped as a newcomer reads them."""
    parser = OneLineParser(
        prog=PROG,
        description="Segment every frame of a video and write an annotated copy (masks, boxes, labels), "
                    "keeping the audio and the timing of the input; or show cameras and streams live. Many videos at "
                    f"once: {PROG} batch (see {PROG} batch --help).",
        epilog=f"examples:\n  {PROG} --make-sample sample.mp4\n  {PROG} sample.mp4 annotated.mp4\n"
               f"  {PROG} street.mp4 out.mp4 --engine maskrcnn --classes person,car\n"
               f"  {PROG} cam.mp4 out.mp4 --config cpu-classical --param history=300\n  {PROG} --list-engines\n"
               f"  {PROG} batch footage/ --out annotated/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", help="video file to read (anything FFmpeg decodes), or a live source: "
                                                 "a camera (0, /dev/video0) or a stream URL (rtsp://, http://, udp://, srt://)")
    parser.add_argument("output", nargs="?", help="annotated video to write (.mp4 → H.264 + input's audio)")
    parser.add_argument("more", nargs="*", metavar="SOURCE",
                        help="live runs: more sources (cameras, URLs, files), tiled in the window and the browser")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--list-engines", action="store_true", help="show the engines, what each needs, and exit")
    parser.add_argument("--make-sample", metavar="PATH", help="write a short sample clip (moving shapes, sound)")

    run = parser.add_argument_group("run")
    run.add_argument("-e", "--engine", help=f"segmentation engine: {', '.join(engine_names())} (default: motion)")
    run.add_argument("-c", "--config", metavar="FILE|PRESET", help="TOML config file or preset name")
    run.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")

    add_engine_options(parser, "engine settings (for engines that have them)")

    other = parser.add_argument_group("pipeline, rendering and output")
    other.add_argument("--batch", type=int, metavar="N",
                       help="frames per inference call (default: 1; for live sources sharing a network on a GPU, "
                            "one per source, up to 16)")
    other.add_argument("--queue-size", type=int, metavar="N", help="bound of each queue between stages")
    other.add_argument("--infer-timeout", type=float, metavar="S",
                       help="stop the run as hung when one inference call takes longer (default 120; 0: never; "
                            "the engine's load and first call get pipeline.load_timeout, default 1800)")
    other.add_argument("--alpha", type=float, help="mask opacity 0..1")
    other.add_argument("--no-boxes", action="store_true", help="don't draw boxes")
    other.add_argument("--no-labels", action="store_true", help="don't draw labels")
    other.add_argument("--fps-overlay", action="store_true", help="draw the pipeline's fps on each frame")
    other.add_argument("--crf", type=int, help="H.264 quality, 0 (lossless) .. 51 (worst); default 23")
    other.add_argument("--preset", help="x264 speed preset, e.g. ultrafast, veryfast, medium")
    other.add_argument("--no-audio", action="store_true", help="don't carry the input's audio")
    other.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                       help="any pipeline/render/output/live/track setting, e.g. --set render.legend=false")

    notes = parser.add_argument_group("annotations (file runs): machine-readable results, instance tracking")
    notes.add_argument("--coco", metavar="FILE.json",
                       help="write COCO-style results: an image per frame, masks as compressed RLE, track ids")
    notes.add_argument("--masks-dir", metavar="DIR",
                       help="write a palette PNG label map per frame (class ids, or track ids) and legend.json")
    notes.add_argument("--no-video", action="store_true",
                       help="write only the annotations (no OUTPUT video: no render or encode work)")
    notes.add_argument("--no-track", action="store_true",
                       help="don't track instances across frames (ids and colours then follow detection order)")

    live = parser.add_argument_group(
        "live (cameras, streams, several sources; chosen by such a SOURCE, --display or --serve)")
    live.add_argument("--display", action="store_true",
                      help="show the result in a window: q/Esc quit, space pause, s snapshot")
    live.add_argument("--serve", metavar="[HOST:]PORT",
                      help="browser view (MJPEG streams + live stats page) on 127.0.0.1:PORT, or HOST:PORT")
    live.add_argument("--token", help="token the browser view requires (generated and printed when HOST is not "
                                      "loopback)")
    live.add_argument("--output", dest="record", metavar="FILE",
                      help="record the annotated result too (several sources: FILE-0.mp4, FILE-1.mp4, …)")
    live.add_argument("--policy", choices=("auto", "live", "lossless"),
                      help="live: newest frame wins, stale ones dropped (default for cameras and streams); "
                           "lossless: every frame (default for files)")
    live.add_argument("--camera-size", metavar="WxH", help="picture size to ask cameras for, e.g. 1280x720")
    live.add_argument("--camera-fps", type=float, metavar="N", help="frame rate to ask cameras for")
    live.add_argument("--restart-engine", type=int, metavar="N",
                      help="replace an engine that fails (raises) by a new one and go on, up to N times (default 0)")
    live.add_argument("--rtsp-out", metavar="URL",
                      help="publish each annotated source to an RTSP server that accepts RECORD (MediaMTX…), e.g. "
                           "rtsp://127.0.0.1:8554/cams (several sources: cams-0, cams-1, …)")
    live.add_argument("--hls", metavar="DIR",
                      help="write a live HLS playlist per source, DIR/N/index.m3u8 (--serve plays it too)")
    live.add_argument("--engine-per-source", action="store_true",
                      help="an engine of its own for each source, instead of one engine serving them all in batches")
    add_watch_options(parser)
    return parser


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    """Lines, zones, their events out, privacy masking, the heatmap and clips on events."""
    watch = parser.add_argument_group("watch: counting lines and zones, events out, privacy, heatmap, clips")
    watch.add_argument("--line", action="append", default=[], metavar="NAME:X1,Y1,X2,Y2",
                       help="count tracks crossing this line (source pixels; in = from its left to its right, "
                            "facing from its start to its end); repeatable")
    watch.add_argument("--zone", action="append", default=[], metavar="NAME:X1,Y1,X2,Y2,X3,Y3,...",
                       help="a polygon: tracks entering and leaving it, and how much of it masks cover; repeatable")
    watch.add_argument("--occupancy-period", type=float, metavar="S",
                       help="seconds between zone_occupancy events (default 1; 0: every frame)")
    watch.add_argument("--events", metavar="FILE.jsonl", help="write every event as a line of JSON")
    watch.add_argument("--webhook", metavar="URL", help="POST every event as JSON to this http(s) URL")
    watch.add_argument("--mqtt", metavar="mqtt://[USER:PASS@]HOST[:PORT]/TOPIC",
                       help="publish every event to an MQTT broker (QoS 1)")
    watch.add_argument("--blur", metavar="CLASSES", help="mask these classes in every output, e.g. person")
    watch.add_argument("--blur-style", choices=("blur", "pixelate", "fill"), help="how to mask (default blur)")
    watch.add_argument("--heatmap", metavar="FILE.png", help="where the chosen classes' masks were over the run")
    watch.add_argument("--heatmap-classes", metavar="CLASSES", help="the heatmap's classes (default: all)")
    watch.add_argument("--clips", metavar="DIR", help="live runs: save an annotated clip around each --clip-on event")
    watch.add_argument("--clip-on", action="append", default=[], metavar="TYPE[:NAME]",
                       help="the events that make clips: line_cross, zone_enter, zone_exit (e.g. line_cross:door)")
    watch.add_argument("--pre-roll", type=float, metavar="S", help="seconds kept before the event (default 5)")
    watch.add_argument("--post-roll", type=float, metavar="S", help="seconds kept after the event (default 5)")


def add_engine_options(parser: argparse.ArgumentParser, title: str) -> None:
    """The options that set the chosen engine's settings, the same for one video and for `seg-video batch`."""
    group = parser.add_argument_group(title)
    group.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="any setting of the chosen engine, e.g. --param history=300 (repeatable)")
    group.add_argument("--device", help="auto, cpu, cuda or cuda:N (neural engines)")
    group.add_argument("--precision", help="fp32 or fp16 (fp16 needs CUDA)")
    group.add_argument("--backend", metavar="auto|torch|torch-compiled|onnx|trt|opencv",
                       help="neural engines: how the network runs: torch (default), torch-compiled (CUDA or CPU), onnx "
                            "(ONNX Runtime), trt (TensorRT, CUDA), opencv (OpenCV DNN), or auto: the fastest "
                            "present (see docs/GPU.md)")
    group.add_argument("--dnn-target", metavar="cpu|cuda|cuda-fp16",
                       help="--backend opencv: where OpenCV DNN runs the network (default cpu; cuda needs an OpenCV "
                            "built with CUDA)")
    group.add_argument("--model-file", metavar="GRAPH.pb",
                       help="--engine maskrcnn_tf: the TensorFlow graph, e.g. frozen_inference_graph.pb")
    group.add_argument("--model-config", metavar="GRAPH.pbtxt",
                       help="--engine maskrcnn_tf: OpenCV's text graph for it, e.g. "
                            "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt")
    group.add_argument("--weights", metavar="default|none|PATH", help="model weights (neural engines)")
    group.add_argument("--score-threshold", type=float, metavar="S", help="drop instances scored below S")
    group.add_argument("--mask-threshold", type=float, metavar="M", help="mask probability cut-off")
    group.add_argument("--classes", metavar="A,B", help="keep only these class names, e.g. person,car")
    group.add_argument("--min-size", type=int, metavar="PX", help="model input's shorter side")
    group.add_argument("--semantic", choices=("overlay", "labels", "instances"),
                       help="semantic engines: label map blended over the frame (default), the colour map alone, "
                            "or one masked instance per class with boxes")


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run's settings: the config file or preset, then the command line's overrides, all checked (the engine's
    settings when the engine is built)."""
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; got {args.max_frames}")
    if args.config is not None and not args.config.strip():
        raise UsageError("--config needs a TOML file or a preset name; got an empty one")
    data = read_config_file(args.config) if args.config else {}
    return build_config(data, engines=engine_names(), engine=args.engine, engine_params=engine_overrides(args),
                        sections=section_overrides(args))


def engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Engine settings given on the command line: `--param k=v` and the dedicated flags."""
    params = dict(_key_value(item, "--param") for item in args.param)
    for dest, field_name in ENGINE_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            params[field_name] = tuple(v.strip() for v in value.split(",") if v.strip()) \
                if dest == "classes" else value
    if args.semantic == "instances":
        params["output"] = "instances"
    return params


def section_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Pipeline/render/output settings given on the command line, by table."""
    tables: dict[str, dict[str, Any]] = {"pipeline": {}, "render": {}, "output": {}, "live": {}, "track": {},
                                         "watch": {}, "privacy": {}, "heatmap": {}}
    for item in args.set:
        key, value = _key_value(item, "--set")
        table, _, field_name = key.partition(".")
        if table not in tables or not field_name:
            raise UsageError(f"--set {item}: the key must be pipeline.X, render.X, output.X, live.X, track.X, "
                             "watch.X, privacy.X or heatmap.X")
        tables[table][field_name] = value
    flags = {("pipeline", "batch"): args.batch, ("pipeline", "queue_size"): args.queue_size,
             ("pipeline", "infer_timeout"): args.infer_timeout, ("live", "engine_restarts"): args.restart_engine,
             ("render", "alpha"): args.alpha, ("output", "crf"): args.crf, ("output", "preset"): args.preset,
             ("pipeline", "policy"): args.policy, ("live", "camera_fps"): args.camera_fps}
    if args.camera_size is not None:
        width, sep, height = args.camera_size.lower().partition("x")
        if not (sep and width.isdecimal() and height.isdecimal()):
            raise UsageError(f"--camera-size takes WIDTHxHEIGHT, e.g. 1280x720; got {args.camera_size!r}")
        tables["live"].update(camera_width=int(width), camera_height=int(height))
    for (table, field_name), value in flags.items():
        if value is not None:
            tables[table][field_name] = value
    for flag, (table, field_name) in {"no_boxes": ("render", "boxes"), "no_labels": ("render", "labels"),
                                      "no_audio": ("output", "audio"), "no_track": ("track", "enabled")}.items():
        if getattr(args, flag):
            tables[table][field_name] = False
    if args.fps_overlay:
        tables["render"]["fps_overlay"] = True
    if args.engine_per_source:
        tables["live"]["engine_per_source"] = True
    for flag, table, key in (("blur", "privacy", "classes"), ("heatmap_classes", "heatmap", "classes")):
        if getattr(args, flag):
            tables[table][key] = tuple(name.strip() for name in getattr(args, flag).split(",") if name.strip())
    if args.blur_style:
        tables["privacy"]["style"] = args.blur_style
    if args.occupancy_period is not None:
        tables["watch"]["occupancy_period"] = args.occupancy_period
    if args.semantic in ("overlay", "labels"):
        tables["render"]["semantic"] = args.semantic
    return tables


def _key_value(item: str, flag: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{flag} {item}: expected KEY=VALUE")
    return key.strip(), parse_scalar(value.strip())
