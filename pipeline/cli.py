"""`seg-video`: the command line. Turns a video into an annotated one, lists engines, makes a sample clip.

Exit codes: 0 done, 1 the run failed part-way (what was written is finalized), 2 bad input or usage (nothing
written), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from engines.base import ENGINES, EngineError, create_engine
from pipeline import __version__
from pipeline.settings import ConfigError, parse_scalar

PROG = "seg-video"
EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143

ENGINE_FLAGS = {
    "device": "device", "precision": "precision", "weights": "weights", "score_threshold": "score_threshold",
    "mask_threshold": "mask_threshold", "classes": "classes", "min_size": "min_size",
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
    parser.add_argument("input", nargs="?", help="video file to read (anything FFmpeg decodes)")
    parser.add_argument("output", nargs="?", help="annotated video to write (.mp4 → H.264 + input's audio)")
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
    engine.add_argument("--weights", metavar="default|none|PATH", help="model weights (neural engines)")
    engine.add_argument("--score-threshold", type=float, metavar="S", help="drop instances scored below S")
    engine.add_argument("--mask-threshold", type=float, metavar="M", help="mask probability cut-off")
    engine.add_argument("--classes", metavar="A,B", help="keep only these class names, e.g. person,car")
    engine.add_argument("--min-size", type=int, metavar="PX", help="model input's shorter side")

    other = parser.add_argument_group("pipeline, rendering and output")
    other.add_argument("--batch", type=int, metavar="N", help="frames per inference call (default 1)")
    other.add_argument("--queue-size", type=int, metavar="N", help="bound of each queue between stages")
    other.add_argument("--alpha", type=float, help="mask opacity 0..1")
    other.add_argument("--no-boxes", action="store_true", help="don't draw boxes")
    other.add_argument("--no-labels", action="store_true", help="don't draw labels")
    other.add_argument("--fps-overlay", action="store_true", help="draw the pipeline's fps on each frame")
    other.add_argument("--crf", type=int, help="H.264 quality, 0 (lossless) .. 51 (worst); default 23")
    other.add_argument("--preset", help="x264 speed preset, e.g. ultrafast, veryfast, medium")
    other.add_argument("--no-audio", action="store_true", help="don't carry the input's audio")
    other.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                       help="any pipeline/render/output setting, e.g. --set render.legend=false")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `seg-video` console script; returns the exit code."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _dispatch(build_parser().parse_args(argv))
    except (UsageError, ConfigError, EngineError) as error:
        return _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_SIGINT)
    except Terminated:
        return _fail("terminated", EXIT_SIGTERM)
    except Exception as error:  # noqa: BLE001 - a bug still gets one line; SEG_VIDEO_DEBUG=1 shows the traceback
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
    if not args.input or not args.output:
        raise UsageError("give an INPUT and an OUTPUT video (or --list-engines, --make-sample PATH)")
    try:
        return _annotate(args)
    except MediaError as error:
        raise UsageError(str(error)) from None


def _annotate(args: argparse.Namespace) -> int:
    from pipeline.app import AnnotateJob
    from pipeline.config import build_config, read_config_file
    from pipeline.progress import Progress
    from pipeline.runner import StageFailed
    from pipeline.video_io import VideoSource

    input_path, output_path = Path(args.input), Path(args.output)
    check_paths(input_path, output_path, overwrite=args.overwrite)
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; got {args.max_frames}")
    data = read_config_file(args.config) if args.config else {}
    config = build_config(data, engine=args.engine, engine_params=engine_overrides(args),
                          sections=section_overrides(args))
    create_engine(config.engine, config.engine_params)  # settings checked before any output exists
    source = VideoSource(input_path, max_frames=args.max_frames)
    total = source.info.frame_count
    if total is not None and args.max_frames is not None:
        total = min(total, args.max_frames)
    progress = Progress(total, enabled=False if args.quiet else None)
    job = AnnotateJob(config, source, output_path, on_frame=progress.update)
    try:
        summary = job.run()
    except StageFailed as failure:
        progress.close()
        if isinstance(failure.error, EngineError) and job.frames_written == 0:
            raise UsageError(str(failure.error)) from None
        return _fail(f"{failure}; {_written(job.frames_written, output_path)}", EXIT_FAILED)
    except KeyboardInterrupt:
        progress.close()
        return _fail(f"interrupted; {_written(job.frames_written, output_path)}", EXIT_SIGINT)
    except Terminated:
        progress.close()
        return _fail(f"terminated; {_written(job.frames_written, output_path)}", EXIT_SIGTERM)
    progress.close()
    if not args.quiet:
        dropped = f", {summary.stats.dropped} dropped" if summary.stats.dropped else ""
        print(f"{PROG}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps{dropped}) "
              f"→ {summary.output}", file=sys.stderr)
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
    if output_path.is_dir():
        raise UsageError(f"output is a folder: {output_path}; give a file name such as {output_path}/out.mp4")
    if output_path.exists() and not overwrite:
        raise UsageError(f"output exists: {output_path} (use --overwrite to replace it)")
    folder = output_path.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder is not writable: {folder}")


def engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Engine settings given on the command line: `--param k=v` and the dedicated flags."""
    params = dict(_key_value(item, "--param") for item in args.param)
    for dest, field_name in ENGINE_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            params[field_name] = tuple(v.strip() for v in value.split(",") if v.strip()) \
                if dest == "classes" else value
    return params


def section_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Pipeline/render/output settings given on the command line, by table."""
    tables: dict[str, dict[str, Any]] = {"pipeline": {}, "render": {}, "output": {}}
    for item in args.set:
        key, value = _key_value(item, "--set")
        table, _, field_name = key.partition(".")
        if table not in tables or not field_name:
            raise UsageError(f"--set {item}: the key must be pipeline.X, render.X or output.X")
        tables[table][field_name] = value
    flags = {("pipeline", "batch"): args.batch, ("pipeline", "queue_size"): args.queue_size,
             ("render", "alpha"): args.alpha, ("output", "crf"): args.crf, ("output", "preset"): args.preset}
    for (table, field_name), value in flags.items():
        if value is not None:
            tables[table][field_name] = value
    for flag, (table, field_name) in {"no_boxes": ("render", "boxes"), "no_labels": ("render", "labels"),
                                      "no_audio": ("output", "audio")}.items():
        if getattr(args, flag):
            tables[table][field_name] = False
    if args.fps_overlay:
        tables["render"]["fps_overlay"] = True
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


def _written(frames: int, output: Path) -> str:
    return f"{frames} frames written to {output}" if frames else "no output written"


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
