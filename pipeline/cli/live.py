"""`seg-video SOURCE… --display | --serve | --output | --rtsp-out | --hls`: the live run's command line (the live job:
`seg_video.live.job`)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from seg_video.cli.options import run_config
from seg_video.cli.report import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    PROG,
    Terminated,
    fail,
    messages_to_stderr,
    written,
)
from seg_video.cli.watching import clip_plan, watch_plan, watch_summary
from seg_video.core.config import RunConfig
from seg_video.core.errors import EngineError, StageFailed, UsageError
from seg_video.core.memory import share_heaps
from seg_video.core.text import mask_credentials, one_line
from seg_video.engines.base import Engine, create_engine
from seg_video.io.paths import OutputGuard, check_folder, check_output
from seg_video.io.restream import RTSP_SCHEMES, hls_dirs, rtsp_targets
from seg_video.io.streams import LiveInput, open_inputs, source_kind
from seg_video.io.video import output_plan
from seg_video.live.feed import FeedStats
from seg_video.live.job import LiveJob, LiveOptions, output_paths
from seg_video.live.web import parse_address
from seg_video.live.window import DisplayError, check_display


def run_live(args: argparse.Namespace, sources: list[str], output: str | None) -> int:
    """Cameras, streams or several sources, segmented live into a window, a browser view, recordings and/or
    restreams (RTSP, HLS)."""
    if not sources:
        raise UsageError("give a SOURCE: a camera (0, /dev/video0), a stream URL or a video file")
    if not (args.display or args.serve is not None or output or args.rtsp_out or args.hls):
        raise UsageError("a live run needs somewhere to show or keep its pictures: --display, "
                         "--serve [HOST:]PORT, --output FILE, --rtsp-out URL or --hls DIR")
    config = run_config(args)
    engine = create_engine(config.engine, config.engine_params)  # settings checked before any output exists
    share_heaps()  # before any of the run's threads
    outputs = output_paths(Path(output), len(sources)) if output else []
    guard = OutputGuard(Path(s) for s in sources if source_kind(s) == "file")
    for path in outputs:
        check_output(path, guard, overwrite=args.overwrite)
        output_plan(path, config.output)  # a container seg-video can write, checked before anything loads
    rtsp_out = _rtsp_targets(args.rtsp_out, len(sources))
    hls = [] if args.hls is None else hls_dirs(Path(args.hls), len(sources))
    if args.hls is not None:
        check_folder(Path(args.hls), guard, overwrite=args.overwrite, flag="--hls")
    clips = clip_plan(args, guard)
    watching = watch_plan(args, config, engine.classes, guard, sources=len(sources))  # starts the event sinks
    try:
        return _run_live(args, sources, output, config, engine,
                         LiveOptions(display=args.display, outputs=outputs, rtsp_out=rtsp_out, hls_dirs=hls,
                                     watch=watching, clips=clips, guard=guard))
    finally:
        watching.close()


def _run_live(args: argparse.Namespace, sources: list[str], output: str | None, config: RunConfig, engine: Engine,
              options: LiveOptions) -> int:
    """The live run once its outputs are checked and its event sinks started."""
    try:
        options.serve = None if args.serve is None else parse_address(args.serve)
        if args.token == "":
            raise ValueError("--token must not be empty (it would admit anyone)")
        if args.display:
            check_display()
    except (ValueError, DisplayError) as error:
        raise UsageError(str(error)) from None
    stop = threading.Event()
    inputs: list[LiveInput] = []
    job: LiveJob | None = None
    try:  # a live source's outages and reconnects are always told; the engines' messages unless --quiet
        with messages_to_stderr(quiet=args.quiet, quieted="seg_video.engines"):
            inputs = open_inputs(sources, config.live, policy=config.pipeline.policy, stop=stop,
                                 max_frames=args.max_frames)
            try:
                options.token = args.token
                job = LiveJob(config, inputs, options, stop=stop, engine=engine)
            except OSError as error:
                raise UsageError(f"cannot serve on {args.serve}: {one_line(error)}") from None
            summary = job.run()
    except StageFailed as failure:
        if isinstance(failure.error, EngineError) and (job is None or job.frames_recorded == 0):
            raise UsageError(str(failure.error)) from None
        return fail(f"{failure}{_recorded(job, output)}", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail(f"interrupted{_recorded(job, output)}", EXIT_SIGINT)
    except Terminated:
        return fail(f"terminated{_recorded(job, output)}", EXIT_SIGTERM)
    finally:
        for opened in inputs:
            opened.close()
    if not args.quiet:
        for feed, recording, restreams in zip(summary.feeds, summary.recordings, summary.restreams, strict=True):
            print(f"{PROG}: {feed.name}: {_summary(feed, recording, summary.seconds)}", file=sys.stderr)
            for restream in restreams:
                print(f"{PROG}: {restream.name}: {restream.sent} frames sent, {restream.dropped} dropped, "
                      f"{restream.reconnects} reconnects", file=sys.stderr)
        assert options.watch is not None and job is not None
        for line in watch_summary(options.watch, job.watching):
            print(line, file=sys.stderr)
    return 0


def _rtsp_targets(url: str | None, count: int) -> list[str]:
    """The RTSP URL of each source's restream (none without `--rtsp-out`); a URL that is not rtsp:// is refused."""
    if url is None:
        return []
    if url.partition("://")[0].lower() not in RTSP_SCHEMES:
        raise UsageError(f"--rtsp-out takes an rtsp:// or rtsps:// URL; got {mask_credentials(url)}")
    return rtsp_targets(url, count)


def _summary(feed: FeedStats, recording: tuple[Path, int] | None, seconds: float) -> str:
    """What one source gave in a finished run: its frames and numbers, and where its recording went (if anywhere).
    A source that never gave a frame (never connected) says so, and that no recording was written."""
    if feed.frames == 0:
        return f"got no frames in {seconds:.1f} s" + ("" if recording is None else f"; {recording[0]} not written")
    kept = "" if recording is None else f" → {recording[0]} ({recording[1]} frames)"
    return f"{feed.frames} frames in {seconds:.1f} s, {feed.line()}{kept}"


def _recorded(job: LiveJob | None, output: str | None) -> str:
    """`; N frames written to FILE` after a live run that records, else nothing."""
    return "" if job is None or output is None else f"; {written(job.frames_recorded, Path(output))}"
