"""`seg-video batch`: annotate a collection of videos with a pool of pipelines, here or on a Ray cluster, resumably.

Each worker (a local process, or a Ray actor: `pipeline.batch_ray`) loads the engine once and runs one `AnnotateJob`
per video. Outputs mirror the input names under DIR and are written under a temporary name (`PARTIAL` + name, in the
same folder), renamed into place only when their video succeeded. `DIR/manifest.jsonl` holds one JSON object per
line, appended as each video ends (the last line for a name wins; each run starts by compacting the file):

    {"name": "cam1/monday.mp4", "input": "/data/cam1/monday.mp4", "size": 1048576, "mtime_ns": 1731000000000000000,
     "sha256": "…", "config": "…", "status": "done", "reason": null, "outputs": ["cam1/monday.mp4"],
     "frames": 9000, "seconds": 61.2, "attempts": 1, "worker": "worker 2", "finished": "2026-01-01T12:00:00+00:00"}

`status` is done, failed (`reason`: the one-line error) or skipped (done by an earlier run, input and settings
unchanged); `config` fingerprints the run's settings and outputs; `attempts` counts runs since the input or the
settings last changed. A re-run skips what is done and unchanged (same size and mtime, or same sha256) while its
outputs exist, and retries failures until `--max-attempts`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import IO, Any, Literal, Protocol, TextIO

import cv2

from engines.base import ENGINES, EngineError, create_engine
from pipeline import cli
from pipeline.app import AnnotateJob, annotation_exports
from pipeline.config import RunConfig
from pipeline.progress import format_duration
from pipeline.runner import StageFailed
from pipeline.video_io import DecodeError, MediaError, VideoSource

MANIFEST = "manifest.jsonl"
PARTIAL = ".partial."
"""Prefix of an output's name while it is being written (hidden; the extension, which picks the format, is kept)."""
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".flv", ".wmv", ".3gp", ".ogv"})
"""What a folder search takes as a video (files named on the command line or in a list are taken as they are)."""
OUTPUT_SUFFIXES = {"video": ".mp4", "coco": ".coco.json", "masks": ".masks"}
"""Each output kind's name: the input's name with this suffix in place of its own."""
POLL_SECONDS = 0.25
"""How often the batch looks for news from its workers and redraws its progress."""
STOP_SECONDS = 10.0
"""How long stopped workers get to finish their teardown before they are killed."""

Kind = Literal["video", "coco", "masks"]
Status = Literal["pending", "done", "failed", "skipped"]


@dataclass(frozen=True)
class Task:
    """One video for a worker: the input and the temporary paths of the outputs it asks for."""

    input: str
    video: str | None
    coco: str | None
    masks: str | None


@dataclass(frozen=True)
class Result:
    """What a worker made of a task: frames, seconds, the input's sha256, and the one-line reason if it failed."""

    frames: int
    seconds: float
    sha256: str | None
    error: str | None
    worker: str


@dataclass(frozen=True)
class Update:
    """News from the worker in `slot`: frames done in its current video, its result, or why the worker was lost."""

    slot: int
    frames: int = 0
    result: Result | None = None
    lost: str | None = None


class Pool(Protocol):
    """Workers that each annotate one task at a time with an engine they loaded once."""

    names: list[str]

    def start(self) -> None:
        """Start every worker and wait until each has loaded its engine; raises `EngineError` if one cannot."""

    def submit(self, slot: int, task: Task) -> None:
        """Give the idle worker in `slot` a task."""

    def poll(self, timeout: float) -> list[Update]:
        """News from the workers, waiting at most `timeout` seconds for some."""

    def restart(self, slot: int) -> None:
        """Replace the lost worker in `slot` with a fresh one."""

    def close(self) -> None:
        """Let idle workers exit; the pool is done."""

    def abort(self) -> None:
        """Stop every worker now, mid-video too (Ctrl-C)."""


class BatchWorker:
    """An engine loaded once, and the videos given to it annotated one after another, each by its own `AnnotateJob`."""

    def __init__(self, config: RunConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.engine = create_engine(config.engine, config.engine_params)
        self.engine.load()

    def annotate(self, task: Task, on_frame: Callable[[int], None] | None = None) -> Result:
        """Run one task; any failure of the video becomes the result's one-line `error` instead of an exception."""
        started = time.perf_counter()
        digest: str | None = None
        job: AnnotateJob | None = None
        try:
            digest = checksum(Path(task.input))
            source = VideoSource(task.input)
            exports = annotation_exports(self.config, source, coco=_path(task.coco), masks_dir=_path(task.masks))
            job = AnnotateJob(self.config, source, _path(task.video), on_frame=on_frame, exports=exports,
                              engine=self.engine)
            job.run()
            error = None
        except StageFailed as failure:
            error = str(failure.error) if isinstance(failure.error, (MediaError, DecodeError)) else str(failure)
        except Exception as failure:  # noqa: BLE001 - one video's failure is its entry's, never the batch's
            error = str(failure) if isinstance(failure, (MediaError, OSError)) else \
                f"{type(failure).__name__}: {failure}"
        return Result(frames=0 if job is None else job.frames_written, seconds=time.perf_counter() - started,
                      sha256=digest, error=None if error is None else " ".join(error.split()), worker=self.name)

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def checksum(path: Path) -> str:
    """The file's sha256, hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def uses_gpu(config: RunConfig) -> bool:
    """Whether the engine runs on a GPU where there is one: a neural engine not told `device=cpu`."""
    params = ENGINES[config.engine].engine_class().Params
    has_device = any(f.name == "device" for f in dataclasses.fields(params))
    return has_device and config.engine_params.get("device") != "cpu"


# -- the local pool: one process per worker ------------------------------------------------------------------------


class LocalPool:
    """Worker processes on this machine, each with its own loaded engine, fed over a pipe one task at a time.

    Each worker's OpenCV and PyTorch thread pools get its share of the cores (the pipeline's stage threads and the
    codecs' own threads come on top); with GPUs, worker k sees only GPU k mod `gpus`.
    """

    def __init__(self, config: RunConfig, size: int, *, gpus: int = 0) -> None:
        self.names = [f"worker {slot + 1}" for slot in range(size)]
        self._config = config
        self._gpus = gpus
        self._threads = max(1, available_cpus() // size)
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess | None] = [None] * size
        self._pipes: list[Connection | None] = [None] * size

    def start(self) -> None:
        """Start the worker processes, then wait for each to load its engine."""
        for slot in range(len(self.names)):
            self._spawn(slot)
        for slot in range(len(self.names)):
            self._await_ready(slot)

    def submit(self, slot: int, task: Task) -> None:
        """Send the task down the worker's pipe."""
        self._pipe(slot).send(task)

    def poll(self, timeout: float) -> list[Update]:
        """Messages from the workers' pipes, and a lost update for each worker process that died."""
        ends: dict[Any, int] = {}
        for slot, (process, pipe) in enumerate(zip(self._processes, self._pipes, strict=True)):
            if process is not None and pipe is not None:
                ends[pipe] = ends[process.sentinel] = slot
        updates: list[Update] = []
        for slot in sorted({ends[end] for end in wait(list(ends), timeout)}):
            pipe, process = self._pipe(slot), self._process(slot)
            try:
                while pipe.poll():
                    kind, value = pipe.recv()
                    updates.append(Update(slot, result=value) if kind == "result" else Update(slot, frames=value))
            except (EOFError, OSError):
                pass  # the process is gone: said below
            if not process.is_alive():
                process.join()
                updates.append(Update(slot, lost=f"worker process ended ({_exit_reason(process.exitcode)})"))
        return updates

    def restart(self, slot: int) -> None:
        """Replace the dead worker process with a fresh one."""
        self._release(slot)
        self._spawn(slot)
        self._await_ready(slot)

    def close(self) -> None:
        """Tell each worker to exit, and wait for it."""
        for pipe in self._pipes:
            if pipe is not None:
                with contextlib.suppress(OSError):  # a worker already gone
                    pipe.send(None)
        for slot in range(len(self.names)):
            self._stop(slot)

    def abort(self) -> None:
        """SIGTERM every worker (each stops its video and exits), then kill those still running."""
        for process in self._processes:
            if process is not None and process.is_alive():
                process.terminate()
        for slot in range(len(self.names)):
            self._stop(slot)

    def _spawn(self, slot: int) -> None:
        ours, theirs = self._context.Pipe()
        gpu = slot % self._gpus if self._gpus else None
        process = self._context.Process(target=serve, args=(theirs, self._config, self.names[slot], self._threads, gpu),
                                        name=f"seg-video {self.names[slot]}", daemon=True)
        process.start()
        theirs.close()
        self._processes[slot], self._pipes[slot] = process, ours

    def _await_ready(self, slot: int) -> None:
        try:
            kind, message = self._pipe(slot).recv()
        except (EOFError, OSError):
            kind, message = "fatal", f"{self.names[slot]} exited while loading the engine"
        if kind == "fatal":
            raise EngineError(message)

    def _stop(self, slot: int) -> None:
        """Wait for the worker process to exit (kill it after STOP_SECONDS), then forget it."""
        process = self._processes[slot]
        if process is None:
            return
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
        self._release(slot)

    def _release(self, slot: int) -> None:
        pipe = self._pipes[slot]
        if pipe is not None:
            pipe.close()
        self._processes[slot], self._pipes[slot] = None, None

    def _pipe(self, slot: int) -> Connection:
        pipe = self._pipes[slot]
        assert pipe is not None, f"{self.names[slot]} is not running"
        return pipe

    def _process(self, slot: int) -> BaseProcess:
        process = self._processes[slot]
        assert process is not None, f"{self.names[slot]} is not running"
        return process


def _exit_reason(code: int | None) -> str:
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


def available_cpus() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def serve(pipe: Connection, config: RunConfig, name: str, threads: int, gpu: int | None) -> None:
    """A local worker process: load the engine, then annotate each task received until told to stop.

    Ctrl-C is left to the batch, which stops its workers with SIGTERM; a worker whose batch is gone (the pipe broke)
    exits too. Its messages: ("ready" | "fatal", text), then ("frames", n) while a video runs and ("result", Result).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    cv2.setNumThreads(threads)
    try:
        try:
            worker = BatchWorker(config, name)
        except Exception as error:  # noqa: BLE001 - told to the batch, which stops with it
            pipe.send(("fatal", f"{name} cannot load the {config.engine} engine: {error}"))
            return
        try:
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(threads)
            pipe.send(("ready", name))
            while (task := pipe.recv()) is not None:
                pipe.send(("result", worker.annotate(task, on_frame=_reporter(pipe))))
        finally:
            worker.close()
    except (KeyboardInterrupt, EOFError, OSError):
        pass  # stopped by the batch, or the batch is gone
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a SIGTERM while the interpreter shuts down just ends it


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _reporter(pipe: Connection) -> Callable[[int], None]:
    """An `on_frame` callback that sends the frame count down `pipe` at most every POLL_SECONDS."""
    last = 0.0

    def report(frames: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= POLL_SECONDS:
            last = now
            pipe.send(("frames", frames))

    return report


# -- inputs, outputs and the manifest ------------------------------------------------------------------------------


def collect_inputs(specs: Sequence[str], out: Path) -> list[tuple[Path, PurePosixPath]]:
    """Each input video with its name under DIR, in order, each once.

    A file is taken as named (name: its file name); a folder is searched for videos (name: the path below the folder;
    hidden files and DIR itself are left out); a glob's matches keep their path below the pattern's fixed part; a
    `.txt` file lists any of these, one per line (relative to the list's folder; blank and `#` lines ignored).
    """
    found: dict[Path, tuple[Path, PurePosixPath]] = {}
    for spec in specs:
        for path, name in _expand(spec, Path.cwd(), out.resolve(), lists=True):
            found.setdefault(path.resolve(), (path, name))
    return list(found.values())


def _expand(spec: str, base: Path, out: Path, *, lists: bool) -> Iterator[tuple[Path, PurePosixPath]]:
    if "://" in spec:
        raise cli.UsageError(f"batch reads files (local or on a shared file system), not URLs: {spec}")
    path = base / spec
    if path.is_dir():
        for found in sorted(path.rglob("*")):
            relative = found.relative_to(path)
            if (found.suffix.lower() in VIDEO_SUFFIXES and found.is_file()
                    and not any(part.startswith(".") for part in relative.parts) and not _under(found, out)):
                yield found, PurePosixPath(relative.as_posix())
    elif path.is_file() and lists and path.suffix.lower() == ".txt":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                yield from _expand(line.strip(), path.parent, out, lists=False)
    elif path.is_file():
        yield path, PurePosixPath(path.name)
    elif glob.has_magic(spec):
        parts = Path(spec).parts
        fixed = base.joinpath(*[part for part in parts[:next(i for i, p in enumerate(parts) if glob.has_magic(p))]])
        matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))
                   if Path(m).is_file() and not _under(Path(m), out)]
        if not matches:
            raise cli.UsageError(f"no files match {spec}")
        for match in matches:
            yield match, PurePosixPath(match.relative_to(fixed).as_posix())
    else:
        raise cli.UsageError(f"input not found: {spec}")


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


@dataclass
class Entry:
    """One input video of the batch: where it is, its outputs (final paths), and what this run did with it."""

    path: Path
    name: PurePosixPath
    outputs: dict[Kind, Path]
    size: int
    mtime_ns: int
    status: Status = "pending"
    reason: str | None = None
    frames: int = 0
    seconds: float = 0.0
    attempts: int = 0
    """Runs since the input or the settings last changed (the earlier ones failed)."""
    kept: dict[str, Any] | None = None
    """A skipped entry's manifest line, recorded again by this run."""

    def temporary(self, kind: Kind) -> Path:
        """Where the output of `kind` is written until the video succeeds."""
        final = self.outputs[kind]
        return final.with_name(PARTIAL + final.name)

    def task(self) -> Task:
        """The worker's instructions, after clearing what a killed run may have left at the temporary names."""
        self.discard()
        for final in self.outputs.values():
            final.parent.mkdir(parents=True, exist_ok=True)
        named = {kind: str(self.temporary(kind)) for kind in self.outputs}
        return Task(input=str(self.path), video=named.get("video"), coco=named.get("coco"), masks=named.get("masks"))

    def discard(self) -> None:
        """Delete the temporary outputs."""
        for kind in self.outputs:
            _remove(self.temporary(kind))

    def commit(self) -> None:
        """Rename each temporary output to its final name, replacing an earlier run's."""
        for kind, final in self.outputs.items():
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(self.temporary(kind), final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)  # a killed run's orphaned worker may still be writing into it
    else:
        path.unlink(missing_ok=True)


class Manifest:
    """`DIR/manifest.jsonl`: a JSON object per line, appended as videos finish; the last line for a name wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.unreadable = 0
        self._file: IO[str] | None = None
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.records[record["name"]] = record
                except (ValueError, TypeError, KeyError):  # the torn last line of a killed run, or damage
                    self.unreadable += 1

    def open(self) -> None:
        """Rewrite the file with one line per name (to a temporary file, renamed over it), then open it to append."""
        temporary = self.path.with_name(PARTIAL + self.path.name)
        with open(temporary, "w", encoding="utf-8") as file:
            file.writelines(_line(record) for record in self.records.values())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - appended to until close()

    def append(self, record: dict[str, Any]) -> None:
        """Add a record, on disk before this returns."""
        assert self._file is not None, "open() the manifest first"
        self.records[record["name"]] = record
        self._file.write(_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def fingerprint(config: RunConfig, kinds: Sequence[Kind]) -> str:
    """A short hash of every setting of the run and the outputs it writes: a change means done videos are redone."""
    text = json.dumps({"config": dataclasses.asdict(config), "outputs": list(kinds)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan(items: Sequence[tuple[Path, PurePosixPath]], out: Path, kinds: Sequence[Kind], manifest: Manifest,
         config_hash: str, *, max_attempts: int, overwrite: bool) -> list[Entry]:
    """An entry per input, each already settled (skipped, or failed too often) or pending; refuses name clashes,
    outputs over inputs, and outputs this batch did not write (unless `overwrite`)."""
    entries: list[Entry] = []
    writers: dict[Path, Path] = {}
    inputs = {path.resolve() for path, _ in items}
    foreign: list[Path] = []
    for path, name in items:
        outputs: dict[Kind, Path] = {kind: out / name.with_suffix(OUTPUT_SUFFIXES[kind]) for kind in kinds}
        for final in outputs.values():
            if final.resolve() in inputs:
                raise cli.UsageError(f"output {final} would replace an input; choose another --out folder")
            if writers.setdefault(final, path) != path:
                raise cli.UsageError(f"{writers[final]} and {path} would both write {final}; "
                                     "rename one or batch them into different --out folders")
        stat = path.stat()
        entry = Entry(path, name, outputs, stat.st_size, stat.st_mtime_ns)
        record = manifest.records.get(str(name))
        if record is None:
            foreign += [final for final in outputs.values() if final.exists()]
        else:
            assess(entry, record, config_hash, max_attempts)
        entries.append(entry)
    if foreign and not overwrite:
        shown = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise cli.UsageError(f"--out already holds outputs this batch did not write: {shown} "
                             "(use --overwrite to replace them)")
    return entries


def assess(entry: Entry, record: Mapping[str, Any], config_hash: str, max_attempts: int) -> None:
    """Settle the entry from its manifest record when the input and the settings are the ones recorded: skipped if
    done and its outputs exist, failed if it already failed `max_attempts` times; else it stays pending."""
    if record.get("config") != config_hash or not _unchanged(entry, record):
        return
    if record["status"] in ("done", "skipped") and all(final.exists() for final in entry.outputs.values()):
        entry.status, entry.reason, entry.frames = "skipped", "up to date", record.get("frames", 0)
        entry.kept = {**record, "input": str(entry.path), "mtime_ns": entry.mtime_ns, "status": "skipped",
                        "reason": "up to date"}
    elif record["status"] == "failed":
        entry.attempts = record.get("attempts", 1)
        if entry.attempts >= max_attempts:
            entry.status, entry.reason = "failed", f"gave up after {entry.attempts} attempts: {record['reason']}"


def _unchanged(entry: Entry, record: Mapping[str, Any]) -> bool:
    """Whether the input is the one recorded: same size, and same mtime or (read only then) same sha256."""
    if record.get("size") != entry.size:
        return False
    if record.get("mtime_ns") == entry.mtime_ns:
        return True
    try:
        return record.get("sha256") == checksum(entry.path)
    except OSError:  # unreadable now: the worker will say why
        return False


def record_of(entry: Entry, out: Path, config_hash: str, result: Result) -> dict[str, Any]:
    """The manifest line of an entry this run processed."""
    return {"name": str(entry.name), "input": str(entry.path), "size": entry.size, "mtime_ns": entry.mtime_ns,
            "sha256": result.sha256, "config": config_hash, "status": entry.status, "reason": entry.reason,
            "outputs": [final.relative_to(out).as_posix() for final in entry.outputs.values()],
            "frames": entry.frames, "seconds": round(entry.seconds, 3), "attempts": entry.attempts,
            "worker": result.worker, "finished": datetime.now(UTC).isoformat(timespec="seconds")}


# -- running the batch ---------------------------------------------------------------------------------------------


class BatchProgress:
    """Progress on stderr: on a terminal an overall line (videos, frames, fps across workers) and a status line per
    worker, redrawn in place; elsewhere a line per finished video; nothing when `quiet`."""

    def __init__(self, entries: Sequence[Entry], workers: Sequence[str], *, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "quiet" if quiet else "live" if self.stream.isatty() else "log"
        self._entries = entries
        self._workers = list(workers)
        self._current: list[tuple[str, int] | None] = [None] * len(workers)
        self._frames = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._lines = 0

    @property
    def frames(self) -> int:
        """Frames annotated by this run so far, videos in progress included."""
        return self._frames + sum(current[1] for current in self._current if current is not None)

    def begin(self, slot: int, entry: Entry) -> None:
        """The worker in `slot` started on the entry."""
        self._current[slot] = (str(entry.name), 0)

    def advance(self, slot: int, frames: int) -> None:
        """The worker in `slot` has done `frames` frames of its video."""
        current = self._current[slot]
        if current is not None:
            self._current[slot] = (current[0], frames)

    def end(self, slot: int, entry: Entry) -> None:
        """The worker in `slot` finished the entry (done, failed, or lost)."""
        self._current[slot] = None
        self._frames += entry.frames if entry.status == "done" else 0
        if self.mode == "log":
            finished = sum(e.status != "pending" for e in self._entries)
            what = f"{entry.frames} frames in {entry.seconds:.1f} s" if entry.status == "done" else entry.reason
            self.stream.write(f"{cli.PROG}: [{finished}/{len(self._entries)}] {entry.status} {entry.name}: {what}\n")
            self.stream.flush()
        self.draw(force=True)

    def note(self, text: str) -> None:
        """Tell of an event (a lost worker) in the line-per-video log."""
        if self.mode == "log":
            self.stream.write(f"{cli.PROG}: {text}\n")
            self.stream.flush()

    def draw(self, *, force: bool = False) -> None:
        """Redraw the live display (at most 4 times a second unless `force`)."""
        now = time.monotonic()
        if self.mode != "live" or (not force and now - self._last_draw < POLL_SECONDS):
            return
        self._last_draw = now
        lines = [self.overall(now - self._started)] + [
            f"  {name}: " + ("idle" if current is None else f"{current[0]}  {current[1]} frames")
            for name, current in zip(self._workers, self._current, strict=True)]
        up = f"\033[{self._lines}F" if self._lines else ""
        self.stream.write(up + "".join(f"{line}\033[K\n" for line in lines))
        self.stream.flush()
        self._lines = len(lines)

    def overall(self, elapsed: float) -> str:
        """The overall line: videos finished of all, failures and skips, frames and fps, time and ETA."""
        total = len(self._entries)
        counts = {status: sum(e.status == status for e in self._entries) for status in ("done", "failed", "skipped")}
        finished = sum(counts.values())
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        worked = counts["done"] + counts["failed"]
        remaining = total - finished
        eta = f" ETA {format_duration(elapsed / worked * remaining)}" if worked and remaining else ""
        filled = int(24 * finished / total) if total else 24
        return (f"[{'#' * filled}{'.' * (24 - filled)}] {finished}/{total} videos ({counts['failed']} failed, "
                f"{counts['skipped']} skipped) {self.frames} frames {fps:5.1f} fps {format_duration(elapsed)}{eta}")


def execute(entries: Sequence[Entry], pool: Pool, manifest: Manifest, progress: BatchProgress, out: Path,
            config_hash: str, *, max_attempts: int) -> None:
    """Feed the pending entries to the pool's workers, record each outcome, commit each success's outputs.

    A worker that dies loses only its video, which goes back in the queue while it has attempts left. On any
    exception (Ctrl-C, SIGTERM) the workers are stopped, the videos in progress lose their temporary outputs, and
    the exception propagates; nothing in progress is recorded, so the next run does them again.
    """
    waiting = deque(entry for entry in entries if entry.status == "pending")
    idle = list(range(len(pool.names)))
    running: dict[int, Entry] = {}
    try:
        while waiting or running:
            while idle and waiting:
                slot, start = idle.pop(0), waiting.popleft()
                start.attempts += 1
                pool.submit(slot, start.task())
                running[slot] = start
                progress.begin(slot, start)
            for update in pool.poll(POLL_SECONDS):
                if update.lost is not None:
                    progress.note(f"{pool.names[update.slot]} lost: {update.lost}")
                    pool.restart(update.slot)
                entry = running.get(update.slot)
                if entry is None:  # an idle worker died: replaced above
                    continue
                if update.result is None and update.lost is None:
                    progress.advance(update.slot, update.frames)
                    continue
                if update.result is None and entry.attempts < max_attempts:  # its worker died: try again
                    entry.discard()
                    waiting.appendleft(entry)
                else:
                    lost = Result(0, 0.0, None, f"worker lost: {update.lost}", pool.names[update.slot])
                    _settle(entry, update.result or lost, manifest, out, config_hash)
                    progress.end(update.slot, entry)
                del running[update.slot]  # only now: an interrupted _settle still has its temporaries deleted
                idle.append(update.slot)
            progress.draw()
    except BaseException:
        pool.abort()
        for entry in running.values():
            entry.discard()
        raise
    pool.close()


def _settle(entry: Entry, result: Result, manifest: Manifest, out: Path, config_hash: str) -> None:
    """Record the worker's result; on success the record goes first, then the outputs take their final names."""
    entry.frames, entry.seconds = result.frames, result.seconds
    entry.status, entry.reason = ("done", None) if result.error is None else ("failed", result.error)
    if entry.status == "failed":
        entry.discard()
        manifest.append(record_of(entry, out, config_hash, result))
        return
    manifest.append(record_of(entry, out, config_hash, result))
    try:
        entry.commit()
    except OSError as error:
        entry.discard()
        entry.status, entry.reason = "failed", f"cannot rename the outputs into place: {error}"
        manifest.append(record_of(entry, out, config_hash, result))


def summary_table(entries: Sequence[Entry], seconds: float, where: str, manifest: Path) -> str:
    """The end-of-batch report: counts, frames and seconds by status, throughput, and each failure's reason."""
    rows = []
    processed = [e for e in entries if e.status in ("done", "failed") and e.seconds > 0]
    frames = sum(e.frames for e in processed if e.status == "done")
    for status in ("done", "failed", "skipped"):
        group = [e for e in entries if e.status == status]
        work = sum(e.seconds for e in group)
        rows.append(f"{status:<9}{len(group):>7}{sum(e.frames for e in group):>9}{work:>10.1f}")
    rate = f"{len(processed) / seconds:.2f} videos/s, {frames / seconds:.1f} frames/s" if seconds > 0 else ""
    lines = [f"{cli.PROG} batch: {len(entries)} videos in {seconds:.1f} s on {where}",
             f"{'status':<9}{'videos':>7}{'frames':>9}{'work (s)':>10}", *rows, f"throughput: {rate}"]
    failed = [e for e in entries if e.status == "failed"]
    if failed:
        lines += ["failed:"] + [f"  {e.name}: {e.reason}" for e in failed]
    pending = [e for e in entries if e.status == "pending"]
    if pending:
        lines.append(f"not finished (the next run does them): {len(pending)}")
    lines.append(f"manifest: {manifest}")
    return "\n".join(lines)


# -- the command line ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """`seg-video batch`'s options; engine and pipeline settings use the names of the single-video command's."""
    parser = cli.OneLineParser(
        prog=f"{cli.PROG} batch",
        description="Annotate many videos with a pool of pipelines (processes here, or Ray actors on a cluster), "
                    "each loading the engine once. Resumable: DIR/manifest.jsonl records every video, and a re-run "
                    "does only what is not done yet (or whose input or settings changed).",
        epilog=f"examples:\n  {cli.PROG} batch footage/ --out annotated/ --workers 4\n"
               f"  {cli.PROG} batch 'cams/*/2026-*.mp4' list.txt --out out/ --coco --no-video\n"
               f"  {cli.PROG} batch footage/ --out /shared/out/ --engine maskrcnn --ray auto",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders (searched for videos), globs (quote them), or .txt lists of these")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="output folder: outputs mirror the input names, plus manifest.jsonl")
    parser.add_argument("-e", "--engine", help="segmentation engine (default: motion; see seg-video --list-engines)")
    parser.add_argument("-c", "--config", metavar="FILE|PRESET", help="TOML config file or preset name")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the engine, e.g. --param device=cuda (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="a pipeline/render/output/track setting, e.g. --set output.crf=28 (repeatable)")
    parser.add_argument("-w", "--workers", type=int, metavar="N",
                        help="pipelines at once (default: one per GPU for a neural engine on GPUs, else one per "
                             "CPU core here; with --ray, as many as the cluster's GPUs or CPUs)")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="run the workers as Ray actors: auto = this machine's cluster (ray start) or a new local "
                             "one; ADDRESS = a cluster's (host:port, ray://host:port). Needs seg-video[ray]")
    parser.add_argument("--coco", action="store_true", dest="write_coco", help="also write NAME.coco.json per video")
    parser.add_argument("--masks", action="store_true", dest="write_masks",
                        help="also write a label-map PNG per frame into NAME.masks/ per video")
    parser.add_argument("--no-video", action="store_true", help="write no annotated videos (needs --coco or --masks)")
    parser.add_argument("--max-attempts", type=int, default=3, metavar="N",
                        help="give up on a video after N failed runs (default 3; a changed input starts afresh)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in DIR named like an output that no earlier batch there wrote")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    return parser


def main(argv: Sequence[str]) -> int:
    """`seg-video batch …` (called by `pipeline.cli.main`); returns the exit code: 0 all done, 1 some failed."""
    args = build_parser().parse_args(argv, namespace=cli.build_parser().parse_args([]))
    wanted: dict[Kind, bool] = {"video": not args.no_video, "coco": args.write_coco, "masks": args.write_masks}
    kinds = [kind for kind, on in wanted.items() if on]
    if not kinds:
        raise cli.UsageError("--no-video needs --coco and/or --masks (else nothing is written)")
    if args.workers is not None and args.workers < 1:
        raise cli.UsageError(f"--workers must be at least 1; got {args.workers}")
    if args.max_attempts < 1:
        raise cli.UsageError(f"--max-attempts must be at least 1; got {args.max_attempts}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise cli.UsageError(f"--out is a file, not a folder: {out}")
    config = cli._config(args)
    items = collect_inputs(args.inputs, out)
    if not items:
        raise cli.UsageError(f"no videos found in {' '.join(args.inputs)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / MANIFEST)
    config_hash = fingerprint(config, kinds)
    entries = plan(items, out, kinds, manifest, config_hash, max_attempts=args.max_attempts,
                   overwrite=args.overwrite)
    if manifest.unreadable and not args.quiet:
        print(f"{cli.PROG}: {manifest.path}: {manifest.unreadable} unreadable line(s) ignored", file=sys.stderr)
    pending = sum(entry.status == "pending" for entry in entries)
    manifest.open()
    started = time.perf_counter()
    where, code = "no workers (nothing to do)", 0
    try:
        for entry in entries:
            if entry.kept is not None:
                manifest.append(entry.kept)
        if pending:
            pool, where = _pool(args, config, pending)
            try:
                pool.start()
            except BaseException:
                pool.abort()
                raise
            progress = BatchProgress(entries, pool.names, quiet=args.quiet)
            execute(entries, pool, manifest, progress, out, config_hash, max_attempts=args.max_attempts)
    except KeyboardInterrupt:
        code = cli.EXIT_SIGINT
    except cli.Terminated:
        code = cli.EXIT_SIGTERM
    finally:
        manifest.close()
    if not args.quiet:
        print(summary_table(entries, time.perf_counter() - started, where, manifest.path), file=sys.stderr)
    if code:
        print(f"{cli.PROG}: error: {'interrupted' if code == cli.EXIT_SIGINT else 'terminated'}; "
              "finished videos are kept, the next run does the rest", file=sys.stderr)
        return code
    return cli.EXIT_FAILED if any(entry.status == "failed" for entry in entries) else 0


def _pool(args: argparse.Namespace, config: RunConfig, pending: int) -> tuple[Pool, str]:
    """The pool to run `pending` videos on, and how to name it in the summary."""
    gpu = uses_gpu(config)
    if args.ray is not None:
        try:
            from pipeline.batch_ray import RayPool
        except ImportError:
            raise cli.UsageError("--ray needs Ray: pip install 'seg-video[ray]'") from None
        ray_pool = RayPool(config, args.ray, args.workers, pending=pending, gpu=gpu)
        return ray_pool, f"Ray ({len(ray_pool.names)} actors)"
    gpus = 0
    if gpu:
        import torch

        gpus = torch.cuda.device_count()
    size = max(1, min(args.workers or gpus or available_cpus(), pending))
    return LocalPool(config, size, gpus=gpus), f"{size} local worker{'s' * (size > 1)}"
