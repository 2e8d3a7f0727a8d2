"""Checks of a run's input and output paths, made before anything is written: an input is never replaced, an
existing output is kept unless overwriting was asked for, and an output that cannot be written is refused at once.
Every refusal is a `UsageError` with a one-line message."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from seg_video.core.errors import UsageError


def check_input(path: Path) -> None:
    """Refuse an input that does not exist or is a folder."""
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    if path.is_dir():
        raise UsageError(f"input is a folder, not a video: {path}")


def check_output(path: Path, *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output that is one of `inputs` (also through a link or another relative path), a folder, an existing
    file (unless `overwrite`), or in a folder that is missing or not writable."""
    for source in inputs:
        if path.resolve() == source.resolve() or (path.exists() and source.exists() and os.path.samefile(path, source)):
            raise UsageError(f"output {path} is the input file; choose another output path")
    if path.is_dir():
        raise UsageError(f"output is a folder: {path}; give a file name such as {path}/out.mp4")
    if path.exists() and not overwrite:
        raise UsageError(f"output exists: {path} (use --overwrite to replace it)")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder does not exist: {folder}")
    try:  # a real write, not os.access: root passes permission checks but not a read-only file system
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seg-video-probe-"):
            pass
    except OSError:
        raise UsageError(f"output folder is not writable: {folder}") from None


def check_folder(folder: Path, *, overwrite: bool) -> None:
    """Refuse a label-map folder that is a file, holds files (unless `overwrite`) or cannot be made."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--masks-dir is a file, not a folder: {folder}")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"--masks-dir is not empty: {folder} (use --overwrite to write into it)")
    if not folder.resolve().parent.is_dir():
        raise UsageError(f"--masks-dir's parent folder does not exist: {folder.resolve().parent}")
