"""`seg-video`: the command line. Turns a video into an annotated one, shows cameras and streams live, lists
engines, makes a sample clip; `seg-video batch` annotates many videos (`seg_video.cli.batch`).

Everything here is a thin layer over the library: it parses the arguments, runs the job, and turns what happened
into one line on stderr and an exit code (`seg_video.cli.report`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from seg_video.cli.options import build_parser, run_config
from seg_video.cli.report import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    LOGGER,
    PROG,
    SignalStop,
    Terminated,
    fail,
    messages_to_stderr,
    stop_signals,
    written,
)
from seg_video.cli.watching import watch_plan, watch_summary
from seg_video.core.config import RunConfig
from seg_video.core.errors import ConfigError, EngineError, MediaError, StageFailed, UsageError
from seg_video.core.memory import reuse_large_buffers
from seg_video.engines.base import Engine, create_engine, engines
from seg_video.io.paths import OutputGuard
from seg_video.jobs.annotate import annotation_job
from seg_video.jobs.watching import WatchPlan


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `seg-video` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    reuse_large_buffers()
    batch = args[:1] == ["batch"]  # `seg-video batch …`: many videos, its own parser (seg_video.cli.batch)
    with stop_signals(second_exits=not batch) as signals:  # a batch stops its worker processes itself
        try:
            if batch:
                from seg_video.cli.batch import main as batch_main

                code = batch_main(args[1:])
            else:
                code = _dispatch(build_parser().parse_args(args), signals)
        except (UsageError, ConfigError, EngineError, MediaError) as error:
            code = fail(str(error), EXIT_USAGE)
        except KeyboardInterrupt:
            code = fail("interrupted", EXIT_SIGINT)
        except Terminated:
            code = fail("terminated", EXIT_SIGTERM)
        except Exception as error:
            if os.environ.get("SEG_VIDEO_DEBUG"):
                raise
            code = fail(f"{type(error).__name__}: {error} (set SEG_VIDEO_DEBUG=1 for a traceback)", EXIT_FAILED)
        signals.ended()
        return code


def _dispatch(args: argparse.Namespace, signals: SignalStop) -> int:
    if args.list_engines:
        print(engines_table())
        return 0
    if args.make_sample:
        return _make_sample(Path(args.make_sample), args.overwrite)
    from seg_video.cli.live import run_live
    from seg_video.live.job import plan_live

    positionals = [p for p in (args.input, args.output, *args.more) if p]
    viewer = args.display or args.serve is not None or args.rtsp_out is not None or args.hls is not None
    plan = plan_live(positionals, viewer=viewer, output=args.record)
    if plan is None and args.record is not None:
        if args.output is not None:
            raise UsageError("give the output once: as OUTPUT or as --output FILE")
        args.output = args.record
    if plan is None and (not args.input or not (args.output or args.no_video)):
        raise UsageError("give an INPUT and an OUTPUT video (or --list-engines, --make-sample PATH)")
    if plan is not None and (args.coco or args.masks_dir or args.no_video):
        raise UsageError("--coco, --masks-dir and --no-video work on video files: INPUT [OUTPUT]")
    return _annotate(args, signals) if plan is None else run_live(args, plan.sources, plan.output)


def _annotate(args: argparse.Namespace, signals: SignalStop) -> int:
    """The file run: `seg_video.annotate` with a progress bar, and its outcome as one line."""
    if args.no_video and args.output:
        raise UsageError(f"--no-video writes no video: drop OUTPUT ({args.output}) or --no-video")
    if args.no_video and not (args.coco or args.masks_dir):
        raise UsageError("--no-video needs --coco FILE.json and/or --masks-dir DIR (else nothing is written)")
    if args.clips is not None:
        raise UsageError("--clips works on live sources (cameras, streams, files played with --serve/--display)")
    config = run_config(args)
    engine = create_engine(config.engine, config.engine_params)  # settings checked before any output exists
    output = Path(args.output) if args.output else None
    watching = watch_plan(args, config, engine.classes, OutputGuard([Path(args.input)]), sources=1)
    try:
        return _annotate_watched(args, config, engine, output, watching, signals)
    finally:
        watching.close()


def _annotate_watched(args: argparse.Namespace, config: RunConfig, engine: Engine, output: Path | None,
                      watching: WatchPlan, signals: SignalStop) -> int:
    """The file run once its watching is set up (its sinks started). Once the run and its sinks have finished,
    `signals` are ended here: a signal after that (while the job is freed on return, its codecs and maybe a garbage
    collection: milliseconds) would otherwise end a finished run as "terminated", without the frames written."""
    from seg_video.cli.progress import Progress

    job = annotation_job(Path(args.input), output, config, engine, owned=True,
                         coco=Path(args.coco) if args.coco else None,
                         masks_dir=Path(args.masks_dir) if args.masks_dir else None, overwrite=args.overwrite,
                         max_frames=args.max_frames, watch=watching)
    progress = Progress(job.total_frames, enabled=False if args.quiet else None)
    job.watch(progress.update)
    written_to = output or Path(args.coco or args.masks_dir)
    try:
        with messages_to_stderr(quiet=args.quiet, quieted=LOGGER):
            summary = job.run()
        watching.close()  # the sinks deliver what is queued before the summary counts it
        signals.ended()
    except StageFailed as failure:
        progress.close()
        if isinstance(failure.error, EngineError) and job.frames_written == 0:
            raise UsageError(str(failure.error)) from None
        return fail(f"{failure}; {written(job.frames_written, written_to)}", EXIT_FAILED)
    except KeyboardInterrupt:
        progress.close()
        return fail(f"interrupted; {written(job.frames_written, written_to)}", EXIT_SIGINT)
    except Terminated:
        progress.close()
        return fail(f"terminated; {written(job.frames_written, written_to)}", EXIT_SIGTERM)
    progress.close()
    if not args.quiet:
        dropped = f", {summary.stats.dropped} dropped" if summary.stats.dropped else ""
        outputs = ", ".join(str(path) for path in (output, args.coco, args.masks_dir) if path)
        print(f"{PROG}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps{dropped}) "
              f"→ {outputs}", file=sys.stderr)
        for line in watch_summary(watching, [job.watching]):
            print(line, file=sys.stderr)
    return 0


def engines_table() -> str:
    """The `--list-engines` text: one block per engine, with where it comes from; a plugin that cannot be loaded
    gets one line saying why."""
    blocks = []
    known = engines()
    width = max(12, *(len(name) for name in known))
    for name, info in known.items():
        try:
            cls = info.engine_class()
            engine = cls.from_params({}, name=name)
        except (EngineError, ConfigError) as error:
            blocks.append(f"{name:<{width}} unusable  ({info.origin}) {error}")
            continue
        names = [n for n in engine.classes.names if n is not None]
        shown = ", ".join(names[:8]) + (f", … ({len(names)} classes)" if len(names) > 8 else "")
        pad = " " * width
        blocks.append(f"{name:<{width}} {engine.kind:<9} {cls.description()}\n"
                      f"{pad} needs: {cls.needs}\n{pad} here:  {cls.availability()}\n"
                      f"{pad} classes: {shown}\n{pad} from:  {info.origin}")
    return "\n".join(blocks)


def _make_sample(path: Path, overwrite: bool) -> int:
    from seg_video.io.sample import write_sample_clip

    if path.exists() and not overwrite:
        raise UsageError(f"output exists: {path} (use --overwrite to replace it)")
    if not path.resolve().parent.is_dir():
        raise UsageError(f"output folder does not exist: {path.resolve().parent}")
    write_sample_clip(path)
    print(f"{PROG}: wrote sample clip {path}", file=sys.stderr)
    return 0
