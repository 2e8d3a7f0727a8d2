"""The command line's watching: `--line`, `--zone`, `--events`, `--webhook`, `--mqtt`, `--blur`, `--heatmap`,
`--clips` checked up front (one-line usage errors, outputs never clobbered) and turned into the run's `WatchPlan`
and clip settings; their counts for the summary lines."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from seg_video.cli.report import PROG
from seg_video.core.config import RunConfig
from seg_video.core.errors import ConfigError, UsageError
from seg_video.core.text import one_line
from seg_video.core.types import ClassTable
from seg_video.io.clips import ClipSettings, ClipTrigger, parse_trigger
from seg_video.io.events import open_sinks
from seg_video.io.paths import OutputGuard, check_folder, check_output
from seg_video.jobs.watching import WatchPlan, WatchStep
from seg_video.stages.watch import Line, Zone, parse_line, parse_zone


def watch_plan(args: argparse.Namespace, config: RunConfig, classes: ClassTable, guard: OutputGuard, *,
               sources: int) -> WatchPlan:
    """The run's watching, every part checked against the engine's `classes` and every output path before any
    sink starts (a `UsageError` for what is wrong)."""
    try:
        lines: list[Line] = [parse_line(text) for text in args.line]
        zones: list[Zone] = [parse_zone(text) for text in args.zone]
    except ValueError as error:
        raise UsageError(str(error)) from None
    heatmap = None if args.heatmap is None else Path(args.heatmap)
    if heatmap is not None and heatmap.suffix.lower() != ".png":
        raise UsageError(f"--heatmap writes a PNG: give a name ending in .png; got {heatmap}")
    try:
        plan = WatchPlan.of(config.watch, lines=lines, zones=zones, heatmap=heatmap)
        plan.check(classes)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    for index in range(sources):
        path = plan.heatmap_path(index, sources)
        if path is not None:
            check_output(path, guard, overwrite=args.overwrite)
    events = None if args.events is None else Path(args.events)
    if events is not None:
        check_output(events, guard, overwrite=args.overwrite)
    try:
        plan.sinks = open_sinks(events, args.webhook, args.mqtt)
    except (ValueError, OSError) as error:
        raise UsageError(one_line(error)) from None
    return plan


def clip_plan(args: argparse.Namespace, guard: OutputGuard) -> tuple[Path, list[ClipTrigger], ClipSettings] | None:
    """`--clips DIR` with its triggers and rolls, checked (None without `--clips`)."""
    if args.clips is None:
        if args.clip_on or args.pre_roll is not None or args.post_roll is not None:
            raise UsageError("--clip-on, --pre-roll and --post-roll need --clips DIR")
        return None
    if not args.clip_on:
        raise UsageError("--clips needs --clip-on TYPE[:NAME] (e.g. line_cross:door): the events that make clips")
    folder = Path(args.clips)
    check_folder(folder, guard, overwrite=True, flag="--clips")  # clips are named uniquely: a folder is reused
    try:
        triggers = [parse_trigger(text) for text in args.clip_on]
        settings = ClipSettings(**{name: value for name, value in (("pre_roll", args.pre_roll),
                                                                   ("post_roll", args.post_roll))
                                   if value is not None})
        settings.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    return folder, triggers, settings


def watch_summary(plan: WatchPlan, steps: Sequence[WatchStep | None]) -> list[str]:
    """The summary's lines about watching: each source's line counts and zones, each event sink's events sent and
    dropped."""
    said = []
    for step in steps:
        if step is not None and step.watch is not None:
            parts = [f"{counter.line.name} in {counter.total('in')} out {counter.total('out')}"
                     for counter in step.watch.lines]
            parts += [f"{zone.zone.name} {zone.count} inside" for zone in step.watch.zones]
            said.append(f"{PROG}: {step.watch.source}: {', '.join(parts)}")
    return said + [f"{PROG}: {sink.name}: {sink.sent} events sent, {sink.dropped} dropped" for sink in plan.sinks]
