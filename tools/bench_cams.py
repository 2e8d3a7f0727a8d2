"""Many cameras, one engine: N live sources through one shared engine against an engine per source (issue 16).

    python tools/bench_cams.py                        # fcn and motion, shared and per-source, N = 1, 2, 4, 8, 20 s each
    python tools/bench_cams.py --engines motion --sources 1,2 --seconds 3 --sample --size 160x96
    python tools/bench_cams.py --markdown report.md --json report.json
    python tools/bench_cams.py --device cuda          # a GPU: 1080p streams through FCN FP16, shared, N = 1..16

Each source plays the same clip (real footage, bigbuckbunny, scaled to --size at 30 fps; the sample clip with
--sample or when no footage can be fetched) looped, at its own 30 fps rate, under the live policy (newest frame
wins), through the live job with no window and no recording. Every configuration (engine × shared / per-source × N)
runs in a process of its own (this script with --worker), so its peak RSS is its own (the parent's `wait4`). After
the model has loaded and a warm-up, it counts the rendered frames per source: total fps, per-source fps (min–max:
fairness), p95 capture-to-render latency, and the shared engine's mean batch over the measured window.

Targets (FCN): the memory each added source costs with a shared engine ≤ 0.25× its cost with an engine per source
((RSS(4) − RSS(1)) / 3, also reported for 8), and total fps shared ≥ 1.2× per-source at N = 4. With --device cuda
(FCN, torch-compiled FP16, shared, N up to 16): the most streams that every one renders at ≥ 90 % of 30 fps (goal 8).
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine_line
from footage import FootageUnavailable, cache_folder, fetch

from seg_video.api import run_config
from seg_video.core.memory import reuse_large_buffers, share_heaps
from seg_video.core.runner import Policy, RunStats
from seg_video.core.types import Frame
from seg_video.engines.base import Engine, create_engine
from seg_video.io.sample import write_sample_clip
from seg_video.io.streams import LiveInput, paced
from seg_video.io.video import VideoSource, VideoWriter, fit
from seg_video.live.job import LiveJob, LiveOptions

FPS = 30
"""Every source's frame rate."""
SUSTAINED = 0.9
"""A source keeps up when it renders at least this share of FPS."""
FOOTAGE = "bigbuckbunny"
LOAD_LIMIT = 600.0
"""Seconds a worker waits for every source's first rendered frame (model load, compilation) before giving up."""
MODES = {"shared": False, "per-source": True}
"""Mode → `live.engine_per_source`."""


@dataclass(frozen=True)
class Setup:
    """One configuration, as the parent hands it to its worker process (JSON on the command line)."""

    engine: str
    mode: str
    sources: int
    clip: str
    seconds: float
    warmup: float
    settings: dict[str, Any] = field(default_factory=dict)
    batch: int = 0
    """Frames per inference call (`pipeline.batch`; 0: automatic)."""


class Counted:
    """An engine factory that counts the engines it builds (the per-source mode builds one per source)."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name, self.settings, self.built = name, settings, 0

    def __call__(self) -> Engine:
        self.built += 1
        return create_engine(self.name, self.settings)


def looped(clip: Path, name: str) -> Iterator[Frame]:
    """`clip` played over and over as one endless stream named `name`: frames renumbered, so timestamps keep
    increasing across the loops."""
    video = VideoSource(clip, source_id=name)
    index = 0
    while True:
        for frame in video:
            yield replace(frame, index=index, pts=index, time_base=Fraction(1, FPS))
            index += 1


def run_worker(setup: Setup) -> dict[str, Any]:
    """Run one configuration in this process (its allocator set as the seg-video command sets it for a live run):
    its rendered-frame figures over the measured window."""
    reuse_large_buffers()
    share_heaps()
    names = [f"cam{i}" for i in range(setup.sources)]
    stop = threading.Event()
    rendered: list[tuple[str, float, float]] = []  # (source, rendered at, capture-to-render seconds)
    seen: set[str] = set()
    every_source = threading.Event()

    def note(frame: Frame) -> None:
        now = time.monotonic()
        rendered.append((frame.source_id, now, now - frame.captured_at))
        if frame.source_id not in seen:
            seen.add(frame.source_id)
            if len(seen) == len(names):
                every_source.set()

    factory = Counted(setup.engine, setup.settings)
    config = run_config(setup.engine, settings=setup.settings,
                        sections={"live": {"engine_per_source": MODES[setup.mode]},
                                  "pipeline": {"batch": setup.batch}})
    inputs = [LiveInput(name, paced(looped(Path(setup.clip), name)), Policy.LIVE, float(FPS)) for name in names]
    job = LiveJob(config, inputs, LiveOptions(), stop=stop, engine_factory=factory, on_frame=note)
    window: list[tuple[float, int, int]] = []  # (time, shared calls, shared frames) at the start and the end

    def mark() -> None:
        stats = job.shared.stats if job.shared is not None else None
        window.append((time.monotonic(), stats.calls if stats else 0, stats.frames if stats else 0))

    def keep_time() -> None:
        if every_source.wait(LOAD_LIMIT) and not stop.wait(setup.warmup):
            mark()
            if not stop.wait(setup.seconds):
                mark()
        stop.set()

    threading.Thread(target=keep_time, name="keep-time", daemon=True).start()
    job.run()
    if len(window) < 2:
        raise RuntimeError(f"{len(seen)} of {len(names)} sources rendered within {LOAD_LIMIT:.0f} s")
    (start, calls0, frames0), (end, calls1, frames1) = window
    measured = [(source, latency) for source, at, latency in rendered if start <= at < end]
    seconds = end - start
    counts = Counter(source for source, _ in measured)
    latencies = np.array([latency for _, latency in measured]) * 1000
    return {
        "engine": setup.engine, "mode": setup.mode, "sources": setup.sources, "seconds": round(seconds, 2),
        "frames": len(measured), "total_fps": round(len(measured) / seconds, 2),
        "source_fps": [round(counts[name] / seconds, 2) for name in names],
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(measured) else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if len(measured) else None,
        "mean_batch": round((frames1 - frames0) / (calls1 - calls0), 2) if calls1 > calls0 else None,
        "engines": factory.built,
        "stage_ms": stage_times(job.run_stats),
    }


def stage_times(runs: Sequence[RunStats]) -> dict[str, float]:
    """Milliseconds each stage spent per frame it handled, over the whole run and every source: where the time went
    (infer includes the wait for the shared engine)."""
    totals: dict[str, list[float]] = {}
    for run in runs:
        for name, stage in run.stages.items():
            spent = totals.setdefault(name, [0.0, 0.0])
            spent[0] += stage.busy_seconds
            spent[1] += stage.items
    return {name: round(1000 * seconds / items, 1) for name, (seconds, items) in totals.items() if items}


def measure(setup: Setup) -> dict[str, Any]:
    """Run `setup` in a worker process; its figures plus its peak RSS (MB) and the CPU that other processes used
    meanwhile (cores, on average: how noisy the machine was)."""
    busy, started = busy_seconds(), time.monotonic()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(setup))]
    with tempfile.TemporaryFile() as errors, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as worker:
        limit = threading.Timer(LOAD_LIMIT + setup.warmup + setup.seconds + 60, worker.kill)
        limit.start()
        try:
            assert worker.stdout is not None
            output = worker.stdout.read().decode()
        finally:
            limit.cancel()
        _, status, usage = os.wait4(worker.pid, 0)
        worker.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        if worker.returncode:
            errors.seek(0)
            last = (errors.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"{setup.engine} {setup.mode} N={setup.sources} failed "
                               f"(exit {worker.returncode}): {last}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss * 1024 / 1e6, 1)  # ru_maxrss: KiB on Linux
    others = (busy_seconds() - busy - usage.ru_utime - usage.ru_stime) / (time.monotonic() - started)
    result["others_cores"] = round(max(0.0, others), 2)
    return result


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since it booted (all cores, every process: Linux /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(ticks) for ticks in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def scaled_footage(width: int, height: int) -> Path:
    """The real clip scaled to `width`×`height` at FPS (source frames repeated to fill the rate), made once into
    the footage cache; raises `FootageUnavailable`."""
    clip = cache_folder() / f"{FOOTAGE}-{width}x{height}-{FPS}.mp4"
    if clip.is_file():
        return clip
    original = VideoSource(fetch(FOOTAGE))
    source_fps = original.info.fps or FPS
    partial = clip.with_name(f".{clip.name}.part.mp4")
    writer = VideoWriter(partial, run_config().output, fps=FPS, time_base=Fraction(1, FPS))
    index = 0
    try:
        for number, frame in enumerate(original):
            image = fit(frame.image, width, height)
            while index * source_fps / FPS < number + 1:  # the output frames that show source frame `number`
                writer.write(Frame(index=index, image=image, pts=index, time_base=Fraction(1, FPS)))
                index += 1
    finally:
        writer.close()
    os.replace(partial, clip)
    return clip


def source_clip(args: argparse.Namespace, folder: Path) -> tuple[Path, str]:
    """The clip every source plays and what it is: the real footage, else (--sample, none reachable) the sample."""
    width, height = args.size
    if not args.sample:
        try:
            return scaled_footage(width, height), f"{FOOTAGE} (real footage)"
        except FootageUnavailable as error:
            print(f"bench_cams: {error}; using the sample clip", file=sys.stderr)
    clip = write_sample_clip(folder / "sample.mp4", seconds=10.0, width=width, height=height, fps=FPS, audio=False)
    return clip, "the sample clip (moving shapes)"


def engine_settings(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    """The settings the bench gives `engine`: FCN random weights at the chosen size, device, backend and precision."""
    if engine != "fcn":
        return {}
    return {"weights": "none", "device": args.device, "min_size": args.min_size, "backend": args.backend,
            "precision": args.precision}


def sustained(runs: Sequence[dict[str, Any]], engine: str, mode: str) -> int:
    """The most sources of `engine` in `mode` that each rendered at ≥ SUSTAINED × FPS (0: not even one)."""
    return max((run["sources"] for run in runs if run["engine"] == engine and run["mode"] == mode
                and min(run["source_fps"]) >= SUSTAINED * FPS), default=0)


def targets(runs: Sequence[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """The issue's target lines from `runs`: on the CPU, memory per added source and the N = 4 fps ratio (judged for
    FCN, given for the other engines); on a GPU, the streams FCN sustains. `met` is None where not judged."""
    lines: list[dict[str, Any]] = []
    if device.startswith("cuda"):
        streams = sustained(runs, "fcn", "shared")
        return [{"what": f"FCN streams sustained at ≥ {SUSTAINED * FPS:.0f} fps each, shared engine", "value": streams,
                 "goal": "≥ 8", "met": streams >= 8}]
    rss = {(run["engine"], run["mode"], run["sources"]): run["peak_rss_mb"] for run in runs}
    fps = {(run["engine"], run["mode"], run["sources"]): run["total_fps"] for run in runs}
    for engine in dict.fromkeys(run["engine"] for run in runs):
        judged = engine == "fcn"
        for n in (4, 8):
            keys = [(engine, mode, count) for mode in MODES for count in (1, n)]
            if not all(key in rss for key in keys):
                continue
            shared, own = ((rss[engine, mode, n] - rss[engine, mode, 1]) / (n - 1) for mode in MODES)
            ratio = shared / own if own > 0 else None
            lines.append({"what": f"{engine}: memory per added source, (RSS({n}) − RSS(1))/{n - 1}: shared "
                                  f"{shared:.0f} MB, per-source {own:.0f} MB; shared / per-source",
                          "value": None if ratio is None else round(ratio, 3), "goal": "≤ 0.25",
                          "met": (ratio is not None and ratio <= 0.25) if judged else None})
        if (engine, "shared", 4) in fps and (engine, "per-source", 4) in fps:
            shared_fps, own_fps = fps[engine, "shared", 4], fps[engine, "per-source", 4]
            ratio = shared_fps / own_fps if own_fps > 0 else None
            lines.append({"what": f"{engine}: total fps at N = 4: shared {shared_fps:.1f}, per-source {own_fps:.1f}; "
                                  "shared / per-source",
                          "value": None if ratio is None else round(ratio, 2), "goal": "≥ 1.2",
                          "met": (ratio is not None and ratio >= 1.2) if judged else None})
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The report: machine line, what ran, the table of configurations, the target lines."""
    def number(value: float | None, digits: int = 1) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    others = [run["others_cores"] for run in result["runs"]]
    lines = [
        "# Many cameras, one engine: shared engine vs an engine per source", "",
        f"Machine: {result['machine']}.  ",
        f"Sources: {result['source']}.  ",
        f"Engines: {result['engines']}.  ",
        f"Other processes' CPU during each configuration (cores, on average; column others): "
        f"{min(others):.2f}–{max(others):.2f}.", "",
        "| engine | mode | N | total fps | per-source fps (min–max) | p95 latency ms | peak RSS MB | mean batch "
        "| engines | others |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in result["runs"]:
        lines.append(f"| {run['engine']} | {run['mode']} | {run['sources']} | {run['total_fps']:.1f} "
                     f"| {min(run['source_fps']):.1f}–{max(run['source_fps']):.1f} | {number(run['p95_ms'], 0)} "
                     f"| {run['peak_rss_mb']:.0f} | {number(run['mean_batch'], 2)} | {run['engines']} "
                     f"| {run['others_cores']:.2f} |")
    lines += ["", "## Targets", ""]
    if not result["targets"]:
        lines.append("- none from this run (they need N = 1 and 4 in both modes, or --device cuda)")
    for target in result["targets"]:
        verdict = {True: "met", False: "MISSED", None: "for reference"}[target["met"]]
        lines.append(f"- {target['what']}: **{number(target['value'], 2)}** (target {target['goal']}: {verdict})")
    lines.append("")
    lines += [f"Streams each rendered at ≥ {SUSTAINED * FPS:.0f} fps: "
              + ", ".join(f"{key} {count}" for key, count in result["sustained"].items()) + "."]
    return "\n".join(lines) + "\n"


def frame_size(text: str) -> tuple[int, int]:
    """`WxH` → (width, height)."""
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def source_counts(text: str) -> list[int]:
    """`1,2,4` → [1, 2, 4]."""
    return [int(part) for part in text.split(",") if part]


def arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line; --device cuda changes the defaults to the GPU sweep (1080p, FCN FP16 compiled, shared)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=None, help="comma-separated: fcn,motion (cuda: fcn)")
    parser.add_argument("--modes", default=None, help="comma-separated: shared,per-source (cuda: shared)")
    parser.add_argument("--sources", type=source_counts, default=None, help="numbers of sources: 1,2,4,8 (cuda: 1..16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out after every source's first frame")
    parser.add_argument("--size", type=frame_size, default=None, help="WxH of every source (640x360; cuda: 1920x1080)")
    parser.add_argument("--sample", action="store_true", help="play the sample clip instead of real footage")
    parser.add_argument("--batch", type=int, default=0,
                        help="frames per inference call (default 0: automatic, as seg-video chooses)")
    parser.add_argument("--device", default="cpu", help="FCN's device: cpu, or cuda for the GPU sweep")
    parser.add_argument("--min-size", type=int, default=None, help="FCN's input short side (160; cuda: 520)")
    parser.add_argument("--backend", default=None, help="FCN's backend (torch; cuda: torch-compiled)")
    parser.add_argument("--precision", default=None, help="FCN's precision (fp32; cuda: fp16)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="write the report here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    for name, cpu_default, gpu_default in (
            ("engines", "fcn,motion", "fcn"), ("modes", "shared,per-source", "shared"),
            ("sources", [1, 2, 4, 8], [1, 2, 4, 8, 12, 16]), ("size", (640, 360), (1920, 1080)),
            ("min_size", 160, 520), ("backend", "torch", "torch-compiled"), ("precision", "fp32", "fp16")):
        if getattr(args, name) is None:
            setattr(args, name, gpu_default if gpu else cpu_default)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown mode {', '.join(sorted(unknown))}; modes are {', '.join(MODES)}")
    return args


def sweep(args: argparse.Namespace, clip: Path) -> list[dict[str, Any]]:
    """Every configuration, each in its own worker, printed as it finishes. On a GPU, an engine and mode stop
    growing N once a source falls short of the sustained rate (larger N can only do worse)."""
    runs: list[dict[str, Any]] = []
    for engine in args.engines.split(","):
        for mode in args.modes.split(","):
            for n in args.sources:
                run = measure(Setup(engine, mode, n, str(clip), args.seconds, args.warmup,
                                    engine_settings(engine, args), args.batch))
                runs.append(run)
                print(f"{engine:<7} {mode:<10} N={n:<2} {run['total_fps']:6.1f} fps total, per source "
                      f"{min(run['source_fps']):.1f}–{max(run['source_fps']):.1f}, p95 {run['p95_ms']} ms, "
                      f"peak RSS {run['peak_rss_mb']:.0f} MB, mean batch {run['mean_batch']}, "
                      f"{run['engines']} engine(s), others' CPU {run['others_cores']} cores; ms per frame by stage "
                      f"{run['stage_ms']}", flush=True)
                if args.device.startswith("cuda") and min(run["source_fps"]) < SUSTAINED * FPS:
                    break
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the sweep (or, with --worker, one configuration), print and write the report; 1 if a target is missed."""
    args = arguments(argv)
    if args.worker:
        print(json.dumps(run_worker(Setup(**json.loads(args.worker)))))
        return 0
    with tempfile.TemporaryDirectory(prefix="seg-video-cams-") as folder:
        clip, what = source_clip(args, Path(folder))
        runs = sweep(args, clip)
    width, height = args.size
    result: dict[str, Any] = {
        "machine": machine_line(),
        "source": f"{what} at {width}×{height}, {FPS} fps, looped, each source at its own rate under the live policy "
                  f"(newest frame wins); {args.seconds:.0f} s measured per configuration after a {args.warmup:.0f} s "
                  "warm-up",
        "engines": "; ".join(f"{engine} ({', '.join(f'{k} {v}' for k, v in engine_settings(engine, args).items())})"
                             if engine_settings(engine, args) else engine for engine in args.engines.split(",")),
        "runs": runs,
        "targets": targets(runs, args.device),
        "sustained": {f"{engine} {mode}": sustained(runs, engine, mode)
                      for engine in args.engines.split(",") for mode in args.modes.split(",")},
    }
    report = markdown(result)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(report, encoding="utf-8")
    return 1 if any(target["met"] is False for target in result["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
