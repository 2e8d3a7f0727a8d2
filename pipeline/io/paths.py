"""Checks of a run's input and output paths: an input is never written to or replaced, an existing output is kept
unless overwriting was asked for, and an output that cannot be written is refused before anything is.

`OutputGuard` is the one check every writer makes right before it creates, opens or replaces a file (the video and
recordings, COCO files, label maps and their legend, snapshots, batch outputs and manifest): never an input of the
run (the same file by device and inode, whatever path reaches it: links, `..`), never anything but a regular file
(opening a FIFO without a reader blocks for good; a device or socket is no place for a video). `check_output` and
`check_folder` make the same checks up front, as one-line `UsageError`s, so a run is refused before it starts.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from seg_video.core.errors import UsageError, WriteError
from seg_video.core.text import one_line

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file `path` leads to (links followed), None when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class OutputGuard:
    """Refuses to write over the run's inputs or into anything but a regular file; see the module docstring."""

    def __init__(self, inputs: Iterable[Path] = ()) -> None:
        self._inputs: dict[tuple[int, int], Path] = {}
        for path in inputs:
            self.protect(path)

    def protect(self, path: Path) -> None:
        """Count `path` (a file the run reads) among the inputs."""
        found = identity(path)
        if found is not None:
            self._inputs[found] = path

    def refusal(self, path: Path) -> str | None:
        """Why `path` must not be written now, or None when it may (missing, or a regular file that is no input)."""
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ENAMETOOLONG:
                return "the name is too long for its file system"
            return None  # the write itself will say what is wrong
        kind = _KINDS.get(stat.S_IFMT(status.st_mode))
        if kind is not None:
            return f"it is {kind}, not a regular file"
        source = self._inputs.get((status.st_dev, status.st_ino))
        if source is not None:
            return "it is the input file" if Path(source) == path else f"it is the input file {source}"
        return None

    def check(self, path: Path) -> None:
        """Raise `WriteError` unless `path` may be written now."""
        reason = self.refusal(path)
        if reason is not None:
            raise WriteError(f"cannot write {path}: {reason}")

    def claim(self, path: Path) -> None:
        """`check`, then open `path` once for writing without waiting (creating it empty if missing), so that a
        FIFO put there since cannot block the real open: FFmpeg opens its files holding the interpreter's lock, and
        an open that blocked there would leave no thread, not even the signal handlers, able to run."""
        self.check(path)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except OSError as error:
            kind = "a FIFO (named pipe) with no reader" if error.errno == errno.ENXIO else one_line(error)
            raise WriteError(f"cannot write {path}: {kind}") from None
        try:
            special = _KINDS.get(stat.S_IFMT(os.fstat(descriptor).st_mode))
        finally:
            os.close(descriptor)
        if special is not None:
            raise WriteError(f"cannot write {path}: it is {special}, not a regular file")

    def holds_input(self, folder: Path) -> Path | None:
        """An input that lies in `folder` (whose files a writer may replace), if any."""
        try:
            resolved = folder.resolve()
        except OSError:
            return None
        return next((path for path in self._inputs.values() if path.resolve().parent == resolved), None)


def check_input(path: Path) -> None:
    """Refuse an input that does not exist or is a folder."""
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    if path.is_dir():
        raise UsageError(f"input is a folder, not a video: {path}")


def check_output(path: Path, guard: OutputGuard, *, overwrite: bool) -> None:
    """Refuse an output that is an input (also through a link or another relative path), a folder or anything but a
    regular file, a name too long, an existing file (unless `overwrite`), or in a folder that is missing or not
    writable."""
    reason = guard.refusal(path)
    if reason is not None and reason.startswith("it is the input file"):
        raise UsageError(f"output {path} is the input file; choose another output path")
    if reason == f"it is {_KINDS[stat.S_IFDIR]}, not a regular file":
        raise UsageError(f"output is a folder: {path}; give a file name such as {path}/out.mp4")
    if reason is not None:
        raise UsageError(f"output {path}: {reason}")
    if path.exists() and not overwrite:
        raise UsageError(f"output exists: {path} (use --overwrite to replace it)")
    folder = path.parent
    if not folder.is_dir():  # the path as given: `gone/../out.mp4` cannot be written even if `out.mp4` could
        raise UsageError(f"output folder does not exist: {folder.resolve()}")
    try:  # a real write, not os.access: root passes permission checks but not a read-only file system
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seg-video-probe-"):
            pass
    except OSError:
        raise UsageError(f"output folder is not writable: {folder}") from None


def check_folder(folder: Path, guard: OutputGuard, *, overwrite: bool, flag: str = "--masks-dir") -> None:
    """Refuse an output folder (label maps, HLS playlists; `flag` names it in messages) that is a file, holds an
    input or other files (unless `overwrite`), or cannot be made."""
    try:
        exists = folder.exists()
    except OSError as error:  # a name too long for the file system
        raise UsageError(f"{flag} {folder}: {one_line(error)}") from None
    if exists and not folder.is_dir():
        raise UsageError(f"{flag} is a file, not a folder: {folder}")
    source = guard.holds_input(folder)
    if source is not None:
        raise UsageError(f"{flag} {folder} holds the input {source}; choose another folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"{flag} is not empty: {folder} (use --overwrite to write into it)")
    if not folder.parent.is_dir():  # the path as given: `gone/../maps` cannot be made even if `maps` could
        raise UsageError(f"{flag}'s parent folder does not exist: {folder.parent}")
