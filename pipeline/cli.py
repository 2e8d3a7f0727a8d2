"""`seg-video`: the command line. Turns a video into an annotated one, lists engines, makes a sample clip.

Exit codes: 0 done, 1 the run failed part-way (what was written is finalized), 2 bad input or usage (nothing
written), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); a second Ctrl-C or SIGTERM while a run finalizes
exits at once with the same codes. docs/RELIABILITY.md lists every fault and what happens.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from engines.base import ENGINES, EngineError, create_engine
from pipeline import __version__
from pipeline.settings import ConfigError, parse_scalar

if TYPE_CHECKING:
    from pipeline.config import RunConfig
    from pipeline.live_app import LiveJob

PROG = "seg-video"
EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143

ENGINE_FLAGS = {
    "device": "device", "precision": "precision", "weights": "weights", "score_threshold": "score_threshold",
    "mask_threshold": "mask_threshold", "classes": "classes", "min_size": "min_size", "backend": "backend",
    "dnn_target": "dnn_target", "model_file": "model_file", "model_config": "model_config",
}
"""Command-line options that set a field of the chosen engine's settings (dest → field)."""


class UsageError(Exception):
    """Bad input the user can fix; printed as one line, exit 2."""


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so the run stops and finalizes like on Ctrl-C."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is the single line `seg-video: error: …` and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    """All options, grouped as a newcomer reads them."""
    parser = OneLineParser(
        prog=PROG,
        description="Segment every frame of a video and write an annotated copy (masks, boxes, labels), "
                    "keeping the audio and the timing of the input.",
        epilog=f"examples:\n  {PROG} --make-sample sample.mp4\n  {PROG} sample.mp4 annotated.mp4\n"
               f"  {PROG} street.mp4 out.mp4 --engine maskrcnn --classes person,car\n"
               f"  {PROG} cam.mp4 out.mp4 --config cpu-classical --param history=300\n  {PROG} --list-engines",
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
    run.add_argument("-e", "--engine", help=f"segmentation engine: {', '.join(ENGINES)} (default: motion)")
    run.add_argument("-c", "--config", metavar="FILE|PRESET", help="TOML config file or preset name")
    run.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")

    engine = parser.add_argument_group("engine settings (for engines that have them)")
    engine.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting of the chosen engine, e.g. --param history=300 (repeatable)")
    engine.add_argument("--device", help="auto, cpu, cuda or cuda:N (neural engines)")
    engine.add_argument("--precision", help="fp32 or fp16 (fp16 needs CUDA)")
    engine.add_argument("--backend", metavar="auto|torch|torch-compiled|onnx|trt|opencv",
                        help="neural engines: how the network runs: torch (default), torch-compiled (CUDA), onnx "
                             "(ONNX Runtime), trt (TensorRT, CUDA), opencv (OpenCV DNN), or auto: the fastest "
                             "present (see docs/GPU.md)")
    engine.add_argument("--dnn-target", metavar="cpu|cuda|cuda-fp16",
                        help="--backend opencv: where OpenCV DNN runs the network (default cpu; cuda needs an OpenCV "
                             "built with CUDA)")
    engine.add_argument("--model-file", metavar="GRAPH.pb",
                        help="--engine maskrcnn_tf: the TensorFlow graph, e.g. frozen_inference_graph.pb")
    engine.add_argument("--model-config", metavar="GRAPH.pbtxt",
                        help="--engine maskrcnn_tf: OpenCV's text graph for it, e.g. "
                             "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt")
    engine.add_argument("--weights", metavar="default|none|PATH", help="model weights (neural engines)")
    engine.add_argument("--score-threshold", type=float, metavar="S", help="drop instances scored below S")
    engine.add_argument("--mask-threshold", type=float, metavar="M", help="mask probability cut-off")
    engine.add_argument("--classes", metavar="A,B", help="keep only these class names, e.g. person,car")
    engine.add_argument("--min-size", type=int, metavar="PX", help="model input's shorter side")
    engine.add_argument("--semantic", choices=("overlay", "labels", "instances"),
                        help="semantic engines: label map blended over the frame (default), the colour map alone, "
                             "or one masked instance per class with boxes")

    other = parser.add_argument_group("pipeline, rendering and output")
    other.add_argument("--batch", type=int, metavar="N", help="frames per inference call (default 1)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `seg-video` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    batch = args[:1] == ["batch"]  # `seg-video batch …`: many videos, its own parser (pipeline.batch)
    with _stop_signals(second_exits=not batch):  # a batch stops its worker processes itself, however often told
        try:
            if batch:
                from pipeline.batch import main as batch_main

                return batch_main(args[1:])
            return _dispatch(build_parser().parse_args(args))
        except (UsageError, ConfigError, EngineError) as error:
            return _fail(str(error), EXIT_USAGE)
        except KeyboardInterrupt:
            return _fail("interrupted", EXIT_SIGINT)
        except Terminated:
            return _fail("terminated", EXIT_SIGTERM)
        except Exception as error:
            if os.environ.get("SEG_VIDEO_DEBUG"):
                raise
            return _fail(f"{type(error).__name__}: {error} (set SEG_VIDEO_DEBUG=1 for a traceback)", EXIT_FAILED)


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.video_io import MediaError

    if args.list_engines:
        print(engines_table())
        return 0
    if args.make_sample:
        return _make_sample(Path(args.make_sample), args.overwrite)
    from pipeline.live_app import plan_live

    positionals = [p for p in (args.input, args.output, *args.more) if p]
    plan = plan_live(positionals, viewer=args.display or args.serve is not None, output=args.record)
    if plan is None and args.record is not None:
        if args.output is not None:
            raise UsageError("give the output once: as OUTPUT or as --output FILE")
        args.output = args.record
    if plan is None and (not args.input or not (args.output or args.no_video)):
        raise UsageError("give an INPUT and an OUTPUT video (or --list-engines, --make-sample PATH)")
    if plan is not None and (args.coco or args.masks_dir or args.no_video):
        raise UsageError("--coco, --masks-dir and --no-video work on video files: INPUT [OUTPUT]")
    try:
        return _annotate(args) if plan is None else _live(args, plan.sources, plan.output)
    except MediaError as error:
        raise UsageError(str(error)) from None


def _annotate(args: argparse.Namespace) -> int:
    from pipeline.app import AnnotateJob, annotation_exports
    from pipeline.progress import Progress
    from pipeline.runner import StageFailed
    from pipeline.video_io import VideoSource

    input_path = Path(args.input)
    output_path = check_annotation_outputs(args, input_path)
    config = _config(args)
    source = VideoSource(input_path, max_frames=args.max_frames)
    total = source.info.frame_count
    if total is not None and args.max_frames is not None:
        total = min(total, args.max_frames)
    progress = Progress(total, enabled=False if args.quiet else None)
    exports = annotation_exports(config, source, coco=Path(args.coco) if args.coco else None,
                                 masks_dir=Path(args.masks_dir) if args.masks_dir else None)
    job = AnnotateJob(config, source, output_path, on_frame=progress.update, exports=exports)
    written_to = output_path or Path(args.coco or args.masks_dir)
    try:
        with _messages_to_stderr("engines", "pipeline", quiet=args.quiet):
            summary = job.run()
    except StageFailed as failure:
        progress.close()
        if isinstance(failure.error, EngineError) and job.frames_written == 0:
            raise UsageError(str(failure.error)) from None
        return _fail(f"{failure}; {_written(job.frames_written, written_to)}", EXIT_FAILED)
    except KeyboardInterrupt:
        progress.close()
        return _fail(f"interrupted; {_written(job.frames_written, written_to)}", EXIT_SIGINT)
    except Terminated:
        progress.close()
        return _fail(f"terminated; {_written(job.frames_written, written_to)}", EXIT_SIGTERM)
    progress.close()
    if not args.quiet:
        dropped = f", {summary.stats.dropped} dropped" if summary.stats.dropped else ""
        outputs = ", ".join(str(path) for path in (output_path, args.coco, args.masks_dir) if path)
        print(f"{PROG}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps{dropped}) "
              f"→ {outputs}", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace) -> RunConfig:
    """The run's settings: the config file or preset, then the command line's overrides, all checked."""
    from pipeline.config import build_config, read_config_file

    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; got {args.max_frames}")
    data = read_config_file(args.config) if args.config else {}
    config = build_config(data, engine=args.engine, engine_params=engine_overrides(args),
                          sections=section_overrides(args))
    create_engine(config.engine, config.engine_params)  # settings checked before any output exists
    return config


def _live(args: argparse.Namespace, sources: list[str], output: str | None) -> int:
    """Cameras, streams or several sources, segmented live into a window, a browser view and/or recordings."""
    from pipeline.display import DisplayError, check_display
    from pipeline.live import open_inputs, source_kind
    from pipeline.live_app import LiveJob, LiveOptions, output_paths
    from pipeline.runner import StageFailed
    from pipeline.video_io import one_line
    from pipeline.web import parse_address

    if not sources:
        raise UsageError("give a SOURCE: a camera (0, /dev/video0), a stream URL or a video file")
    if not (args.display or args.serve is not None or output):
        raise UsageError("a live run needs somewhere to show or keep its pictures: --display, "
                         "--serve [HOST:]PORT or --output FILE")
    config = _config(args)
    outputs = output_paths(Path(output), len(sources)) if output else []
    files = [Path(s).resolve() for s in sources if source_kind(s) == "file"]
    for path in outputs:
        check_output(path, overwrite=args.overwrite)
        if path.resolve() in files:
            raise UsageError(f"output {path} is an input file; choose another output path")
    try:
        serve = None if args.serve is None else parse_address(args.serve)
        if args.token == "":
            raise ValueError("--token must not be empty (it would admit anyone)")
        if args.display:
            check_display()
    except (ValueError, DisplayError) as error:
        raise UsageError(str(error)) from None
    stop = threading.Event()
    inputs = open_inputs(sources, config.live, policy=config.pipeline.policy, stop=stop, max_frames=args.max_frames)
    job: LiveJob | None = None
    try:
        with _messages_to_stderr("pipeline", quiet=False):  # a live source's outages and reconnects, always
            try:
                job = LiveJob(config, inputs, LiveOptions(display=args.display, serve=serve, token=args.token,
                                                          outputs=outputs), stop=stop)
            except OSError as error:
                raise UsageError(f"cannot serve on {args.serve}: {one_line(error)}") from None
            with _messages_to_stderr("engines", quiet=args.quiet):
                summary = job.run()
    except StageFailed as failure:
        if isinstance(failure.error, EngineError) and (job is None or job.frames_recorded == 0):
            raise UsageError(str(failure.error)) from None
        return _fail(f"{failure}{_recorded(job, output)}", EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail(f"interrupted{_recorded(job, output)}", EXIT_SIGINT)
    except Terminated:
        return _fail(f"terminated{_recorded(job, output)}", EXIT_SIGTERM)
    finally:
        for opened in inputs:
            opened.close()
    if not args.quiet:
        for feed, recording in zip(summary.feeds, summary.recordings, strict=True):
            kept = f" → {recording[0]} ({recording[1]} frames)" if recording is not None else ""
            print(f"{PROG}: {feed.name}: {feed.frames} frames in {summary.seconds:.1f} s, {feed.line()}{kept}",
                  file=sys.stderr)
    return 0


def check_paths(input_path: Path, output_path: Path, *, overwrite: bool) -> None:
    """Refuse every output choice that would lose data or cannot work, before anything is written."""
    if not input_path.exists():
        raise UsageError(f"input not found: {input_path}")
    if input_path.is_dir():
        raise UsageError(f"input is a folder, not a video: {input_path}")
    if output_path.resolve() == input_path.resolve() or (
        output_path.exists() and os.path.samefile(output_path, input_path)
    ):
        raise UsageError(f"output {output_path} is the input file; choose another output path")
    check_output(output_path, overwrite=overwrite)


def check_annotation_outputs(args: argparse.Namespace, input_path: Path) -> Path | None:
    """Check the video, COCO and label-map outputs a file run asks for; returns the video's path (None: no video)."""
    if args.no_video and args.output:
        raise UsageError(f"--no-video writes no video: drop OUTPUT ({args.output}) or --no-video")
    if args.no_video and not (args.coco or args.masks_dir):
        raise UsageError("--no-video needs --coco FILE.json and/or --masks-dir DIR (else nothing is written)")
    files = [Path(p) for p in (args.output, args.coco) if p]
    if len({path.resolve() for path in files}) < len(files):
        raise UsageError(f"OUTPUT and --coco are the same file: {args.coco}")
    for path in files:
        check_paths(input_path, path, overwrite=args.overwrite)
    if args.masks_dir:
        check_folder(Path(args.masks_dir), overwrite=args.overwrite)
    return Path(args.output) if args.output else None


def check_folder(folder: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that is a file, holds files (unless `overwrite`) or cannot be made."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--masks-dir is a file, not a folder: {folder}")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"--masks-dir is not empty: {folder} (use --overwrite to write into it)")
    if not folder.resolve().parent.is_dir():
        raise UsageError(f"--masks-dir's parent folder does not exist: {folder.resolve().parent}")


def check_output(output_path: Path, *, overwrite: bool) -> None:
    """Refuse an output that is a folder, would replace a file unasked, or cannot be written."""
    if output_path.is_dir():
        raise UsageError(f"output is a folder: {output_path}; give a file name such as {output_path}/out.mp4")
    if output_path.exists() and not overwrite:
        raise UsageError(f"output exists: {output_path} (use --overwrite to replace it)")
    folder = output_path.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder does not exist: {folder}")
    try:  # a real write, not os.access: root passes permission checks but not a read-only file system
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seg-video-probe-"):
            pass
    except OSError:
        raise UsageError(f"output folder is not writable: {folder}") from None


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
    tables: dict[str, dict[str, Any]] = {"pipeline": {}, "render": {}, "output": {}, "live": {}, "track": {}}
    for item in args.set:
        key, value = _key_value(item, "--set")
        table, _, field_name = key.partition(".")
        if table not in tables or not field_name:
            raise UsageError(f"--set {item}: the key must be pipeline.X, render.X, output.X, live.X or track.X")
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
    if args.semantic in ("overlay", "labels"):
        tables["render"]["semantic"] = args.semantic
    return tables


def engines_table() -> str:
    """The `--list-engines` text: one block per engine."""
    blocks = []
    for info in ENGINES.values():
        engine = create_engine(info.name)
        names = [n for n in engine.classes.names if n is not None]
        shown = ", ".join(names[:8]) + (f", … ({len(names)} classes)" if len(names) > 8 else "")
        blocks.append(f"{info.name:<12} {engine.kind:<9} {info.summary}\n"
                      f"{'':<12} needs: {info.needs}\n{'':<12} here:  {engine.availability()}\n"
                      f"{'':<12} classes: {shown}")
    return "\n".join(blocks)


def _make_sample(path: Path, overwrite: bool) -> int:
    from pipeline.sample import write_sample_clip

    if path.exists() and not overwrite:
        raise UsageError(f"output exists: {path} (use --overwrite to replace it)")
    if not path.resolve().parent.is_dir():
        raise UsageError(f"output folder does not exist: {path.resolve().parent}")
    write_sample_clip(path)
    print(f"{PROG}: wrote sample clip {path}", file=sys.stderr)
    return 0


def _key_value(item: str, flag: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{flag} {item}: expected KEY=VALUE")
    return key.strip(), parse_scalar(value.strip())


def _recorded(job: LiveJob | None, output: str | None) -> str:
    """`; N frames written to FILE` after a live run that records, else nothing."""
    return "" if job is None or output is None else f"; {_written(job.frames_recorded, Path(output))}"


def _written(frames: int, output: Path) -> str:
    return f"{frames} frames written to {output}" if frames else "no output written"


@contextmanager
def _messages_to_stderr(*names: str, quiet: bool) -> Iterator[None]:
    """While a run lasts, the messages of the loggers `names` names (engines: backend chosen, exports, engine
    builds; pipeline: picture-size changes, a live source's reconnects) go to stderr as one `seg-video: …` line
    each; with `quiet` only their warnings."""
    report = logging.StreamHandler(sys.stderr)
    report.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(report)
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous, strict=True):
            logger.removeHandler(report)
            logger.setLevel(level)


@contextmanager
def _stop_signals(*, second_exits: bool) -> Iterator[None]:
    """While a command runs: the first Ctrl-C or SIGTERM raises `KeyboardInterrupt` or `Terminated`, so the run
    stops and finalizes its outputs; with `second_exits`, a second one (a finalize taking too long) exits at once,
    130 or 143, without waiting for it. A file-size limit (SIGXFSZ) becomes a write error instead of killing the
    process. The handlers found are put back at the end (a signal after the command's end then acts as usual)."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        if received and second_exits:
            os.write(2, f"{PROG}: error: {word} again while finishing: exiting at once; the outputs may not "
                        "be finalized\n".encode())
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        received.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _fail(message: str, code: int) -> int:
    """Print the one error line: whatever raised, a URL's password is masked, and control characters a name or key
    may hold (newlines, terminal escapes) are shown escaped."""
    from pipeline.live import mask_credentials

    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in mask_credentials(message))
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":  # `python -m pipeline.cli`: run the imported module, whose errors pipeline.batch raises
    from pipeline.cli import main as imported_main

    sys.exit(imported_main())
