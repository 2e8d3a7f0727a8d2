"""Model weights for the torchvision engines: the official ones (downloaded once, checksummed, cached under the
torch hub dir), a local state-dict file, or none (random init).

Every file is read with `torch.load(..., weights_only=True)`: a checkpoint that holds pickled Python objects
(a whole saved model, or anything with code in it) is refused, never unpickled. Every failure a user can cause is
an `EngineError` with a one-line message that says what to do.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from seg_video.core.errors import EngineError
from seg_video.engines.base import NO_NEEDS, engines

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]


def cached_path(official: WeightsEnum) -> Path:
    """Where torch hub keeps (or would keep) the official weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(official.url).name


def weights_status(official: WeightsEnum) -> str:
    """Whether the official weights are cached here, for `--list-engines`."""
    path = cached_path(official)
    if path.is_file():
        return f"weights cached at {path}"
    return f"weights not cached (download ~{official.meta['_file_size']:.0f} MB on first run, or --weights PATH)"


def load_weights(choice: str, official: WeightsEnum, engine: str) -> StateDict | None:
    """The state dict `choice` names: None for "none", the official weights for "default", else a file's."""
    if choice == "none":
        return None
    if choice == "default":
        path = cached_path(official)
        if not path.is_file():
            _download(official, path, engine)
        return read_state_dict(path, f"(a corrupt download? delete {path} to fetch it again)")
    return read_state_dict(Path(choice), "")


def read_state_dict(path: Path, hint: str) -> StateDict:
    """A state dict (name → tensor) read from `path` with weights_only=True; `hint` ends read-error messages."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needs = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"a pickled Python object ({needs.group(1)})" if needs else "data that is not a plain pickle of tensors"
        raise EngineError(f"refusing weights {path}: it holds {what}, and only state dicts load (weights_only=True); "
                          "save model.state_dict() with torch.save instead") from None
    except (OSError, RuntimeError, EOFError) as error:
        raise EngineError(f"cannot read weights {path}: {_one_line(error)} {hint}".rstrip()) from None
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise EngineError(f"weights {path} are not a state dict (parameter name → tensor) but a "
                          f"{type(state).__name__}; save model.state_dict() instead")
    return state


def fit_state(model: nn.Module, state: StateDict, source: str, engine: str) -> None:
    """Load `state` into `model`, every entry matching; a mismatch is one line naming the first culprit."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        lines = str(error).splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line), lines[0])
        raise EngineError(f"weights {source} do not fit {engine}: {detail}") from None
    if missing or unexpected:
        raise EngineError(f"weights {source} do not fit {engine}: {len(missing)} missing and {len(unexpected)} "
                          f"unexpected entries (first: {[*missing, *unexpected][0]})")


def _download(official: WeightsEnum, path: Path, engine: str) -> None:
    """Fetch the official weights into the hub cache, checking the SHA-256 prefix in their file name."""
    match = torch.hub.HASH_REGEX.search(path.name)
    log.info("%s: downloading its weights (%.0f MB, once) from %s into %s", engine, official.meta["_file_size"],
             official.url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(official.url, str(path), match.group(1) if match else None, progress=False)
    except (OSError, RuntimeError) as error:  # no network, unwritable cache, checksum mismatch
        offline = [name for name, info in engines().items()
                   if info.origin == "built in" and info.engine_class().needs == NO_NEEDS]
        raise EngineError(f"{engine} weights are not cached at {path} and could not be downloaded "
                          f"({_one_line(error)}); use --weights PATH (a state dict, e.g. a copy of {official.url}), "
                          f"--weights none (random init), or an engine that needs no weights: "
                          f"--engine {'|'.join(offline)}") from None


def _one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line."""
    text = " ".join(str(getattr(error, "reason", None) or error).split())
    return text[:200] or type(error).__name__
