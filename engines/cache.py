"""Where built artefacts live (exported ONNX graphs, TensorRT plans, timing caches) and the keys that name them.

The cache folder is `$SEG_VIDEO_CACHE`, else `$XDG_CACHE_HOME/seg-video`, else `~/.cache/seg-video`. The engines
read ONNX and TensorRT files only from there (or from paths a user names to the tools); a key is a hash of
everything the file depends on, so a change of model, weights, precision, shapes, TensorRT version or GPU names
another file instead of reusing a stale one.

Artefacts are made once however many threads and processes want them at the same time (`made_once`): a per-key
lock (a thread lock and an `fcntl.flock` on a hidden `.NAME.lock` file beside the artefact), a second look once it is
held, and unique temporary names (`.NAME.partial-XXXX`) renamed into place whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def cache_dir() -> Path:
    """The seg-video cache folder (not created here)."""
    explicit = os.environ.get("SEG_VIDEO_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seg-video"


def cached_file(folder: Path, name: str) -> Path | None:
    """`folder/name` if it is a regular file right inside `folder`, else None: a name with a folder in it (`..`, an
    absolute path) or a symbolic link is never followed, so a doctored sidecar or a planted link cannot make the
    engines load a file from outside the cache."""
    path = folder / name
    if name in ("", ".", "..") or Path(name).name != name or path.is_symlink() or not path.is_file():
        return None
    return path


def cache_key(fields: Mapping[str, Any]) -> str:
    """A short stable hash of `fields` (JSON-serialisable values; key order does not matter)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state (names, dtypes, shapes and bytes of every tensor, in name order)."""
    import torch  # here, not at the top: the batch command hashes its inputs with this module and needs no torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_sha256(modules: Sequence[nn.Module], weights: str) -> str:
    """A hash of the exported modules' architecture (their repr: layers and settings, e.g. batch-norm eps) and of
    the weights."""
    return hashlib.sha256(f"{modules!r}\n{weights}".encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


@contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold `target`'s lock: one holder at a time among this process's threads (a lock per path; `flock` alone does
    not exclude threads sharing a process reliably) and among processes (`flock` on `.NAME.lock` beside it, never
    deleted: removing a lock file others may hold open would let two holders in)."""
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(target.absolute(), threading.Lock())
    with lock:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.with_name(f".{target.name}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
            yield


def made_once(target: Path, find: Callable[[], T | None], make: Callable[[], T]) -> T:
    """What `find` finds of the artefact at `target`, else `make()`'s, made under `target`'s lock after looking once
    more: callers racing on an empty cache wait for the first one's artefact instead of making it again."""
    found = find()
    if found is not None:
        return found
    with locked(target):
        found = find()
        return found if found is not None else make()


def partial_prefix(target: Path) -> str:
    """The prefix of `target`'s temporary siblings (hidden, so the cache's globs never list them)."""
    return f".{target.name}.partial-"


def replace_folder(target: Path, fill: Callable[[Path], T]) -> T:
    """`fill` a new temporary sibling folder, then put it in `target`'s place; on failure it is removed and `target`
    left as it was. Call it holding `target`'s lock, which also makes leftovers of killed makers safe to remove."""
    for stale in target.parent.glob(f"{partial_prefix(target)}*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=partial_prefix(target)))
    try:
        result = fill(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return result


def write_atomically(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: a uniquely named temporary sibling, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=partial_prefix(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
