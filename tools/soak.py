"""Soak test: a live run for minutes, sampling the process's memory, threads, open files and queue sizes.

    python tools/soak.py                                  # 2 min: a synthetic 30 fps camera, motion engine, viewer
    python tools/soak.py --minutes 60 --json soak.json --csv soak.csv --record soak.mp4
    python tools/soak.py --source rtsp://user:pass@cam/stream1 --minutes 480   # a real camera or stream

The run is `seg-video`'s live job under the live policy: the source (by default the sample scene rendered and
delivered in real time like a camera), the real engine, renderer, the browser view with a client that connects
to the MJPEG stream, reads a second, leaves, and fetches the page and `/stats.json` again and again, and
optionally a recording. Every `--interval` seconds it samples the process's RSS, OS thread count and open file
descriptors (from /proc: Linux), each queue's size, and the feed's frames, drops and latency.

It prints a summary and checks that the run is flat: the median of the last quarter of samples is no higher
than that of the second quarter (the first is warm-up) plus a margin: RSS max(5 %, 8 MB), threads and fds 1;
and no queue ever held more than its capacity. Exit 0 when flat, 1 when not.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from _machine import machine_line

from seg_video.api import run_config
from seg_video.core.config import LiveSettings
from seg_video.core.runner import Policy
from seg_video.core.types import Frame
from seg_video.io.sample import SampleScene
from seg_video.io.streams import LiveInput, open_input, paced
from seg_video.live.job import LiveJob, LiveOptions, output_paths
from seg_video.live.web import WebView

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
KEPT_SAMPLES = 2000
"""Samples kept in memory; past this every other one is let go (the CSV gets them all as they are taken), so a
soak of hours measures the pipeline and not its own record of it."""


@dataclass(frozen=True)
class Margins:
    """How much the last quarter may exceed the second quarter (medians) and still count as flat."""

    rss_fraction: float = 0.05
    rss_mb: float = 8.0
    threads: int = 1
    fds: int = 1


@dataclass(slots=True)
class Sample:
    """The process and the pipeline at one moment of the run."""

    seconds: float
    rss_mb: float
    threads: int
    fds: int
    queues: dict[str, int]
    frames: int
    dropped: int
    latency_p50_ms: float | None


@dataclass
class ViewerTally:
    """What the browser client did: completed visits, JPEG parts received, requests that failed."""

    visits: int = 0
    parts: int = 0
    failures: list[str] = field(default_factory=list)


class SampleRecord:
    """The samples kept for the verdict: every one up to `limit`, then every other one is let go (and only every
    second one taken from then on is kept), so they stay evenly spread over the run in bounded memory."""

    def __init__(self, limit: int = KEPT_SAMPLES) -> None:
        self.samples: list[Sample] = []
        self.taken = 0
        self._limit = limit
        self._every = 1

    def add(self, sample: Sample) -> None:
        """Note one more sample, keeping it if it falls on the current spacing."""
        if self.taken % self._every == 0:
            self.samples.append(sample)
        self.taken += 1
        if len(self.samples) == self._limit:
            self.samples, self._every = self.samples[::2], 2 * self._every


class CsvSamples:
    """Writes each sample as a CSV row as it is taken (the header from the first one's queues), flushed at once so
    a long soak can be watched."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._writer = csv.writer(stream)
        self._queues: list[str] | None = None

    def __call__(self, s: Sample) -> None:
        if self._queues is None:
            self._queues = list(s.queues)
            self._writer.writerow(["seconds", "rss_mb", "threads", "fds", "frames", "dropped", "latency_p50_ms",
                                   *(f"queue {name}" for name in self._queues)])
        self._writer.writerow([s.seconds, s.rss_mb, s.threads, s.fds, s.frames, s.dropped, s.latency_p50_ms,
                               *(s.queues[name] for name in self._queues)])
        self._stream.flush()


def process_usage() -> tuple[float, int, int]:
    """(resident memory in MB, OS threads, open file descriptors) of this process, from /proc."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    status = Path("/proc/self/status").read_text()
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    return resident_pages * PAGE_SIZE / MB, threads, len(os.listdir("/proc/self/fd"))


def scene_camera(width: int, height: int, fps: float) -> LiveInput:
    """The sample scene as an endless camera delivering in real time (each frame stamped when it was due)."""

    def frames() -> Iterator[Frame]:
        scene = SampleScene(width, height, fps)
        index = 0
        while True:
            yield Frame(index=index, image=scene.render(index)[0], pts=index, time_base=Fraction(1, round(fps)),
                        source_id="scene")
            index += 1

    return LiveInput(name="scene", frames=paced(frames()), policy=Policy.LIVE, fps=fps)


def browse(view: WebView, stop: threading.Event, tally: ViewerTally, stream_seconds: float = 1.0) -> None:
    """A browser that keeps coming back: the page, the stats, a second of each stream; until `stop`."""
    host, port = "127.0.0.1", view.address[1]
    while not stop.is_set():
        try:
            for path in ("/", "/stats.json"):
                connection = http.client.HTTPConnection(host, port, timeout=5)
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        tally.failures.append(f"GET {path}: {response.status}")
                finally:
                    connection.close()
            for index in range(len(view.feeds)):
                with socket.create_connection((host, port), timeout=5) as client:
                    client.sendall(f"GET /stream/{index}.mjpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                    received = bytearray()
                    deadline = time.monotonic() + stream_seconds
                    while time.monotonic() < deadline and (chunk := client.recv(1 << 16)):
                        received += chunk
                tally.parts += received.count(b"Content-Type: image/jpeg")
            tally.visits += 1
        except OSError as error:
            if not stop.is_set():
                tally.failures.append(f"{type(error).__name__}: {error}")
        stop.wait(0.2)


def sample(job: LiveJob, started: float) -> Sample:
    """The process's and the job's numbers now."""
    rss, threads, fds = process_usage()
    queues = {f"{i}:{name}": q.qsize() for i, stats in enumerate(job.run_stats) for name, q in stats.queues.items()}
    feeds = [feed.stats() for feed in job.feeds]
    latencies = [f.latency_p50_ms for f in feeds if f.latency_p50_ms is not None]
    return Sample(seconds=round(time.monotonic() - started, 2), rss_mb=round(rss, 1), threads=threads, fds=fds,
                  queues=queues, frames=sum(f.frames for f in feeds), dropped=sum(f.dropped_total for f in feeds),
                  latency_p50_ms=round(max(latencies), 1) if latencies else None)


def rss_trend(samples: list[Sample]) -> float:
    """MB per hour that RSS grew by over the last three quarters (least squares): slow growth that a short run's
    quarter medians cannot show; reported, not judged."""
    steady = samples[len(samples) // 4:]
    if len(steady) < 2:
        return 0.0
    fit = statistics.linear_regression([s.seconds for s in steady], [s.rss_mb for s in steady])
    return round(fit.slope * 3600, 1)


def growth_problems(samples: list[Sample], capacity: dict[str, int], peaks: dict[str, int],
                    margins: Margins = Margins()) -> list[str]:
    """Why the run is not flat (empty when it is): growth from the second to the last quarter of `samples` (evenly
    spread over the run), a queue whose `peaks` (largest size seen) exceeded its capacity."""
    quarter = len(samples) // 4
    if quarter < 2:
        raise ValueError(f"need at least 8 samples to compare quarters; got {len(samples)}")
    second, last = samples[quarter:2 * quarter], samples[-quarter:]
    problems = []
    for name in ("rss_mb", "threads", "fds"):
        before = statistics.median(getattr(s, name) for s in second)
        after = statistics.median(getattr(s, name) for s in last)
        allowed = {"rss_mb": max(before * margins.rss_fraction, margins.rss_mb), "threads": margins.threads,
                   "fds": margins.fds}[name]
        if after > before + allowed:
            problems.append(f"{name} grew from {before:g} to {after:g} (allowed +{allowed:g})")
    problems += [f"queue {name} held {peak} > {capacity[name]}"
                 for name, peak in peaks.items() if peak > capacity[name]]
    return problems


def soak(inputs: list[LiveInput], engine: str, seconds: float, interval: float, *, stop: threading.Event,
         record: Path | None = None, on_sample: Callable[[Sample], None] | None = None) -> dict[str, Any]:
    """Run `inputs` (opened with `stop`) live for `seconds` with a browser client coming and going; the samples
    (up to `KEPT_SAMPLES`, evenly spread; `on_sample` sees each) and the verdict."""
    before, threads_before = process_usage(), set(threading.enumerate())
    outputs = output_paths(record, len(inputs)) if record else []
    job = LiveJob(run_config(engine), inputs, LiveOptions(serve=("127.0.0.1", 0), outputs=outputs),
                  stop=stop)
    assert job.web is not None
    capacity = {f"{i}:{name}": q.maxsize for i, stats in enumerate(job.run_stats) for name, q in stats.queues.items()}
    tally, leave = ViewerTally(), threading.Event()
    runner = threading.Thread(target=job.run, name="soak-job")
    viewer = threading.Thread(target=browse, args=(job.web, leave, tally), name="soak-viewer")
    started = time.monotonic()
    runner.start()
    viewer.start()
    kept = SampleRecord()
    peaks = dict.fromkeys(capacity, 0)
    try:
        while (now := time.monotonic()) < started + seconds and runner.is_alive():
            latest = sample(job, started)
            peaks = {name: max(size, latest.queues[name]) for name, size in peaks.items()}
            if on_sample is not None:
                on_sample(latest)
            kept.add(latest)
            time.sleep(max(0.0, started + kept.taken * interval - now))
    finally:
        leave.set()
        job.stop()
        viewer.join(10)
        runner.join(30)
    del job  # a recording's encoder keeps its native threads until it is freed, which the collector does
    time.sleep(0.5)  # handler threads of the last requests wind down
    gc.collect()
    after = process_usage()
    samples = kept.samples
    problems = growth_problems(samples, capacity, peaks) if not runner.is_alive() and len(samples) >= 8 else [
        f"the run ended early or did not stop ({len(samples)} samples)"]
    return {
        "seconds": round(seconds, 1), "interval": interval, "engine": engine,
        "sources": [source.name for source in inputs],
        "machine": machine_line(),
        "before": dict(zip(("rss_mb", "threads", "fds"), before, strict=True)),
        "after_stop": dict(zip(("rss_mb", "threads", "fds"), after, strict=True)),
        "threads_left": sorted(t.name for t in set(threading.enumerate()) - threads_before),
        "queue_capacity": capacity, "queue_peak": peaks, "viewer": asdict(tally), "problems": problems,
        "flat": not problems, "samples_taken": kept.taken, "rss_trend_mb_per_hour": rss_trend(samples),
        "samples": [asdict(s) for s in samples],
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The human-readable summary: quarters of each measure, the viewer's visits, the verdict."""
    samples = result["samples"]
    quarter = max(1, len(samples) // 4)
    lines = [f"soak: {result['seconds']:.0f} s, {', '.join(result['sources'])} → {result['engine']}, "
             f"{result['samples_taken']} samples ({result['machine']})"]
    for name, unit in (("rss_mb", "MB"), ("threads", ""), ("fds", "")):
        values = [s[name] for s in samples]
        second, last = statistics.median(values[quarter:2 * quarter]), statistics.median(values[-quarter:])
        lines.append(f"  {name:<8} start {values[0]:g}{unit}, 2nd quarter {second:g}, last quarter {last:g}, "
                     f"max {max(values):g}; after stop {result['after_stop'][name]:.5g} "
                     f"(before start {result['before'][name]:.5g})")
    lines.append(f"  rss trend over the last three quarters: {result['rss_trend_mb_per_hour']:+g} MB/h")
    lines.append(f"  threads of the run still alive after stop: {', '.join(result['threads_left']) or 'none'}")
    peak, capacity = result["queue_peak"], result["queue_capacity"]
    lines.append("  queues   peak/capacity " + ", ".join(f"{n} {peak[n]}/{c}" for n, c in capacity.items()))
    end = samples[-1]
    lines.append(f"  frames   {end['frames']} rendered, {end['dropped']} dropped, "
                 f"latency p50 {end['latency_p50_ms']} ms")
    viewer = result["viewer"]
    lines.append(f"  viewer   {viewer['visits']} visits, {viewer['parts']} JPEG parts, "
                 f"{len(viewer['failures'])} failures")
    lines.append("  verdict  flat" if result["flat"] else "  verdict  NOT FLAT: " + "; ".join(result["problems"]))
    return lines


def main(argv: list[str] | None = None) -> int:
    """Parse the options, soak, print the summary, write the files; exit 1 unless flat and the viewer was served."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the run (default 2)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--engine", default="motion", help="segmentation engine (default motion)")
    parser.add_argument("--source", action="append", default=[], metavar="SPEC",
                        help="a camera, stream URL or file instead of the synthetic camera (repeatable)")
    parser.add_argument("--size", default="640x360", metavar="WxH", help="synthetic camera's picture size")
    parser.add_argument("--fps", type=float, default=30.0, help="synthetic camera's frame rate")
    parser.add_argument("--record", type=Path, metavar="FILE", help="also record (one file per source)")
    parser.add_argument("--json", type=Path, help="write the summary and the samples (up to 2000) here")
    parser.add_argument("--csv", type=Path, help="write every sample here as it is taken, one row each")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be positive")
    width, _, height = args.size.partition("x")
    stop = threading.Event()
    inputs = [open_input(spec, LiveSettings(), policy="live", stop=stop) for spec in args.source] or [
        scene_camera(int(width), int(height), args.fps)]
    with contextlib.ExitStack() as files:
        rows = None if args.csv is None else CsvSamples(files.enter_context(args.csv.open("w", newline="")))
        result = soak(inputs, args.engine, 60 * args.minutes, args.interval, stop=stop, record=args.record,
                      on_sample=rows)
    print("\n".join(summary_lines(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["flat"] and result["viewer"]["parts"] and not result["viewer"]["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
