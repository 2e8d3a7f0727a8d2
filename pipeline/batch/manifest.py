"""The bookkeeping that makes `seg-video batch` resumable: an `Entry` per input video with its final and temporary
outputs, the `DIR/manifest.jsonl` file (`Manifest`), and the plan that settles each entry from it (skipped, given
up, or pending) before any worker starts; a module of its own because it alone decides what a re-run does again,
writes the manifest and renames outputs into place, whichever pool runs the videos.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Literal

from seg_video.batch.messages import Result, Task
from seg_video.core.errors import UsageError, WriteError
from seg_video.core.text import one_line
from seg_video.engines.cache import cache_key, file_sha256
from seg_video.io.paths import OutputGuard

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig

MANIFEST = "manifest.jsonl"
PARTIAL = ".partial."
"""Prefix of an output's name while it is being written (hidden; the extension, which picks the format, is kept)."""
OUTPUT_SUFFIXES = {"video": ".mp4", "coco": ".coco.json", "masks": ".masks"}
"""Each output kind's name: the input's name with this suffix in place of its own."""

Kind = Literal["video", "coco", "masks"]
Status = Literal["pending", "done", "failed", "skipped"]


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

    def commit(self, guard: OutputGuard) -> None:
        """Rename each temporary output to its final name, replacing an earlier run's (never an input, nor a folder
        holding one: `guard`; `WriteError` then)."""
        for kind, final in self.outputs.items():
            source = guard.holds_input(final) if kind == "masks" else None
            if source is not None:
                raise WriteError(f"cannot replace {final}: it holds the input {source}")
            if kind != "masks":
                guard.check(final)
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

    def __init__(self, path: Path, guard: OutputGuard) -> None:
        """Read `path` line by line; a line that is not a whole, well-formed record (the torn last line of a killed
        run, damage) is skipped and counted in `unreadable`: its video is done again."""
        self.path = path
        self.guard = guard
        """The check every file the batch writes or renames into place goes through."""
        self.records: dict[str, dict[str, Any]] = {}
        self.unreadable = 0
        self._file: IO[str] | None = None
        if not path.is_file():
            return
        try:
            lines = path.read_bytes().splitlines()
        except OSError as error:
            raise UsageError(f"cannot read the manifest {path}: {one_line(error)}") from None
        for line in lines:
            record = _record(line)
            if record is None:
                self.unreadable += bool(line.strip())
            else:
                self.records[record["name"]] = record

    def open(self) -> None:
        """Rewrite the file with one line per name (to a temporary file, renamed over it), then open it to append."""
        temporary = self.path.with_name(PARTIAL + self.path.name)
        self.guard.check(temporary)
        self.guard.check(self.path)
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
    """One record as a line of ASCII (so a torn line never splits a character)."""
    return json.dumps(record, ensure_ascii=True) + "\n"


RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "status": (str,), "config": (str,), "size": (int,), "mtime_ns": (int,), "frames": (int,),
    "attempts": (int,), "sha256": (str, type(None)), "reason": (str, type(None)),
}
"""The fields a re-run reads from a record, and the types they must have."""


def _record(line: bytes) -> dict[str, Any] | None:
    """The record on a manifest line, or None when the line is not one (undecodable, not JSON, a field missing or
    of the wrong type, an unknown status, a failure without its reason)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    for field, types in RECORD_FIELDS.items():
        value = record.get(field)
        if not isinstance(value, types) or isinstance(value, bool):
            return None
    if record["status"] not in ("done", "failed", "skipped") or min(record["size"], record["attempts"]) < 0:
        return None
    return None if record["status"] == "failed" and record["reason"] is None else record


def fingerprint(config: RunConfig, kinds: Sequence[Kind]) -> str:
    """A short hash of every setting of the run and the outputs it writes: a change means done videos are redone."""
    return cache_key({"config": dataclasses.asdict(config), "outputs": list(kinds)})


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
                raise UsageError(f"output {final} would replace an input; choose another --out folder")
            if writers.setdefault(final, path) != path:
                raise UsageError(f"{writers[final]} and {path} would both write {final}; "
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
        raise UsageError(f"--out already holds outputs this batch did not write: {shown} "
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
        return record.get("sha256") == file_sha256(entry.path)
    except OSError:  # unreadable now: the worker will say why
        return False


def record_of(entry: Entry, out: Path, config_hash: str, result: Result) -> dict[str, Any]:
    """The manifest line of an entry this run processed."""
    return {"name": str(entry.name), "input": str(entry.path), "size": entry.size, "mtime_ns": entry.mtime_ns,
            "sha256": result.sha256, "config": config_hash, "status": entry.status, "reason": entry.reason,
            "outputs": [final.relative_to(out).as_posix() for final in entry.outputs.values()],
            "frames": entry.frames, "seconds": round(entry.seconds, 3), "attempts": entry.attempts,
            "worker": result.worker, "finished": datetime.now(UTC).isoformat(timespec="seconds")}
