"""Where built artefacts live (exported ONNX graphs, TensorRT plans, timing caches) and the keys that name them.

The cache folder is `$SEG_VIDEO_CACHE`, else `$XDG_CACHE_HOME/seg-video`, else `~/.cache/seg-video`. The engines
read ONNX and TensorRT files only from there (or from paths a user names to the tools); a key is a hash of
everything the file depends on, so a change of model, weights, precision, shapes, TensorRT version or GPU names
another file instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


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
