"""The inputs of `seg-video batch`: files, folders searched for videos, globs and `.txt` lists, each video found once
and named by its path under the output folder; a module of its own because it only reads the command line's INPUTs
and the file system, and knows nothing of workers or the manifest.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from seg_video.core.errors import UsageError
from seg_video.core.text import one_line

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".flv", ".wmv", ".3gp", ".ogv"})
"""What a folder search takes as a video (files named on the command line or in a list are taken as they are)."""


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
        raise UsageError(f"batch reads files (local or on a shared file system), not URLs: {spec}")
    path = base / spec
    if path.is_dir():
        for found in sorted(path.rglob("*")):
            relative = found.relative_to(path)
            if (found.suffix.lower() in VIDEO_SUFFIXES and found.is_file()
                    and not any(part.startswith(".") for part in relative.parts) and not _under(found, out)):
                yield found, PurePosixPath(relative.as_posix())
    elif path.is_file() and lists and path.suffix.lower() == ".txt":
        for line in _list_lines(path):
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
            raise UsageError(f"no files match {spec}")
        for match in matches:
            yield match, PurePosixPath(match.relative_to(fixed).as_posix())
    else:
        raise UsageError(f"input not found: {spec}")


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


def _list_lines(path: Path) -> list[str]:
    """The lines of a `.txt` list of inputs; `UsageError` naming it when it cannot be read as UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UsageError(f"the list {path} is not UTF-8 text (byte {error.start} cannot be read)") from None
    except OSError as error:
        raise UsageError(f"cannot read the list {path}: {one_line(error)}") from None
