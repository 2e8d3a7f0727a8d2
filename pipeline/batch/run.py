"""`seg-video batch`: annotate a collection of videos with a pool of pipelines, here or on a Ray cluster, resumably.

Each worker (a local process: `seg_video.batch.local_pool`, or a Ray actor: `seg_video.batch.ray_pool`) loads the
engine once and runs one `AnnotateJob` per video (`seg_video.batch.worker`). Outputs mirror the input names under
DIR and are written under a temporary name (`PARTIAL` + name, in the same folder), renamed into place only when their
video succeeded. `DIR/manifest.jsonl` holds one JSON object per
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

from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from seg_video.batch.inputs import collect_inputs
from seg_video.batch.manifest import MANIFEST, Entry, Kind, Manifest, fingerprint, plan, record_of
from seg_video.batch.messages import POLL_SECONDS, Pool, Result
from seg_video.core.errors import UsageError, WriteError
from seg_video.io.paths import OutputGuard

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig

MAX_WORKERS = 1024
"""The most workers one batch starts (a typo such as --workers 10000000 must not fork that many processes)."""

class Observer(Protocol):
    """Told what the workers start, advance and finish (the CLI's progress display)."""

    def begin(self, slot: int, entry: Entry) -> None:
        """The worker in `slot` started on the entry."""

    def advance(self, slot: int, frames: int) -> None:
        """The worker in `slot` has done `frames` frames of its video."""

    def end(self, slot: int, entry: Entry) -> None:
        """The worker in `slot` finished the entry (done, failed, or lost)."""

    def note(self, text: str) -> None:
        """An event worth telling (a lost worker)."""

    def draw(self) -> None:
        """A moment to show the state (called about every `POLL_SECONDS`)."""


def execute(entries: Sequence[Entry], pool: Pool, manifest: Manifest, progress: Observer, out: Path,
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
        entry.commit(manifest.guard)
    except (OSError, WriteError) as error:
        entry.discard()
        entry.status, entry.reason = "failed", f"cannot rename the outputs into place: {error}"
        manifest.append(record_of(entry, out, config_hash, result))


class Batch:
    """One `seg-video batch`: the inputs found, each settled from the manifest (skipped, given up, or pending) before
    any worker starts, then `run` on a pool. Refusals (`UsageError`) come from the constructor, before anything is
    written but the output folder."""

    def __init__(self, specs: Sequence[str], out: Path, config: RunConfig, kinds: Sequence[Kind], *,
                 max_attempts: int, overwrite: bool) -> None:
        if not kinds:
            raise UsageError("--no-video needs --coco and/or --masks (else nothing is written)")
        if max_attempts < 1:
            raise UsageError(f"--max-attempts must be at least 1; got {max_attempts}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out is a file, not a folder: {out}")
        items = collect_inputs(specs, out)
        if not items:
            raise UsageError(f"no videos found in {' '.join(specs)}")
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.max_attempts = max_attempts
        guard = OutputGuard(path for path, _ in items)
        refusal = guard.refusal(out / MANIFEST)
        if refusal is not None:
            raise UsageError(f"cannot keep the manifest {out / MANIFEST}: {refusal}")
        self.manifest = Manifest(out / MANIFEST, guard)
        self.config_hash = fingerprint(config, kinds)
        self.entries = plan(items, out, kinds, self.manifest, self.config_hash, max_attempts=max_attempts,
                            overwrite=overwrite)

    @property
    def pending(self) -> int:
        """Videos this run will process."""
        return sum(entry.status == "pending" for entry in self.entries)

    def run(self, make_pool: Callable[[int], Pool], observe: Callable[[Sequence[str]], Observer]) -> None:
        """Record the skipped videos again, then process the pending ones on the pool `make_pool` makes for their
        number, followed by the observer `observe` makes for its workers' names. The manifest is closed however this
        ends; an interruption propagates once the workers are stopped."""
        pending = self.pending
        self.manifest.open()
        try:
            for entry in self.entries:
                if entry.kept is not None:
                    self.manifest.append(entry.kept)
            if not pending:
                return
            pool = make_pool(pending)
            try:
                pool.start()
            except BaseException:
                pool.abort()
                raise
            execute(self.entries, pool, self.manifest, observe(pool.names), self.out, self.config_hash,
                    max_attempts=self.max_attempts)
        finally:
            self.manifest.close()


def check_workers(workers: int | None) -> None:
    """Refuse a worker count outside 1..MAX_WORKERS."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}; got {workers}")
