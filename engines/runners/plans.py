"""The TensorRT plan cache and profiles, without TensorRT: which optimisation profile a part gets, which profile
covers which shapes, what a plan is named after (model, weights, graph, precision, TensorRT version, GPU, profile),
where it and the timing cache live, and what to do with a timing cache TensorRT refuses.

A part's profile spans what the run can feed it, so no shape of the run needs another build once it has warmed up:
dim 0 from 1 to the run's most images per call × the part's most rows per image (`PartInfo.rows[1]`: 100
detections for Mask R-CNN's mask head), and the picture dims over what the model's resize rule can give
(`SizeRange`); opt is the shapes seen when it is built. The run's batch and picture size are what the engine's first
part (the one fed the images) has seen — at warm-up, which runs a batch of the run's size first (`Profiles`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from seg_video.engines.cache import cache_dir, cache_key, cached_file, write_atomically
from seg_video.engines.runners.graphs import PartInfo, Sidecar

log = logging.getLogger(__name__)

Shape = tuple[int, ...]


Profile = dict[str, tuple[Shape, Shape, Shape]]
"""Per input name: the (min, opt, max) shapes of one TensorRT optimisation profile."""

SPAN = 2
"""Where the resize rule has no cap (FCN: the shorter side fixed, the longer one the frame's aspect), profiles reach
this many times the longer side seen: other aspect ratios and orientations up to that fit without a rebuild, and
the plan's memory (sized for the profile's maximum) stays bounded."""


@dataclass(frozen=True)
class SizeRange:
    """The sides, in pixels, a model's resize rule can give its network input: `low` to `high` (None: no cap)."""

    low: int
    high: int | None

    @classmethod
    def of(cls, resize: Mapping[str, Any]) -> SizeRange:
        """From a resize record as the engines' `preprocessing()["resize"]` writes it. With `longer_side_max` (Mask
        R-CNN): the longer side at most that, the shorter one at most `shorter_side` and less for wide frames, both
        padded to `pad_to_multiple_of`, so each side is one multiple to the padded cap. Else (FCN): the shorter side
        is `shorter_side`, the longer one any larger size."""
        if "longer_side_max" in resize:
            multiple = int(resize.get("pad_to_multiple_of", 1))
            return cls(multiple, -(-int(resize["longer_side_max"]) // multiple) * multiple)
        return cls(int(resize["shorter_side"]), None)


class Profiles:
    """The profiles an engine's parts get (module docstring), shared by the engine's part runners: the first part
    records the run's batch and picture size on every call, before the parts after it run."""

    def __init__(self, sizes: SizeRange, first: str) -> None:
        self.sizes = sizes
        self.first = first
        self.images = 0
        self.picture: tuple[int, int] | None = None

    def observe(self, part: PartInfo, shapes: Sequence[Shape]) -> None:
        """Note the batch (the most so far) and picture size when `part` is the first part."""
        if part.name == self.first:
            self.images = max(self.images, shapes[0][0])
            self.picture = (shapes[0][2], shapes[0][3])

    def wanted(self, part: PartInfo, shapes: Sequence[Shape]) -> Profile:
        """The profile for `part`, whose inputs now have `shapes`; its picture dims scale with the network input's
        (a feature map at stride 8 spans an eighth of its range)."""
        if self.picture is None:
            raise RuntimeError(f"{part.name} ran before {self.first}, the part that is fed the images")
        high_side = self.sizes.high or SPAN * max(self.picture)
        profile: Profile = {}
        for spec, shape in zip(part.inputs, shapes, strict=True):
            low, opt, high = list(shape), list(shape), list(shape)
            high[0] = max(shape[0], self.images * part.rows[1])
            low[0], opt[0] = 1, min(max(1, self.images * part.rows[0]), high[0])
            for axis in (axis for axis, size in enumerate(spec.shape) if axis > 0 and isinstance(size, str)):
                seen = self.picture[axis - 2]
                low[axis] = max(1, min(shape[axis], shape[axis] * self.sizes.low // seen))
                high[axis] = max(shape[axis], -(-shape[axis] * high_side // seen))
            profile[spec.name] = (tuple(low), tuple(opt), tuple(high))
        return profile


def widened(old: Profile, new: Profile) -> Profile:
    """A profile spanning both, optimised for `new`'s opt: what replaces a plan the run has outgrown."""
    return {name: (tuple(map(min, old[name][0], low)), opt, tuple(map(max, old[name][2], high)))
            for name, (low, opt, high) in new.items()}


def covers(profile: Profile, names: Sequence[str], shapes: Sequence[Shape]) -> bool:
    """Whether every input shape lies within the profile."""
    return all(all(low <= size <= high for low, size, high in zip(profile[name][0], shape, profile[name][2],
                                                                    strict=True))
               for name, shape in zip(names, shapes, strict=True))


def contains(outer: Profile, inner: Profile) -> bool:
    """Whether `outer` covers every shape `inner` does."""
    names = list(inner)
    return set(names) <= set(outer) and all(covers(outer, names, [inner[name][end] for name in names])
                                            for end in (0, 2))


def plan_identity(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str) -> str:
    """`model-part-hash` naming what a TensorRT plan is built from, all but its shapes: model, weights, graph,
    precision, TensorRT version, GPU."""
    key = cache_key({"model": sidecar.model, "model_sha256": sidecar.model_sha256,
                     "weights_sha256": sidecar.weights_sha256, "part": part.name, "onnx_sha256": part.sha256,
                     "precision": sidecar.precision, "tensorrt": tensorrt, "gpu": gpu})
    return f"{sidecar.model}-{part.name}-{key}"


def plans_of(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str) -> Path:
    """What the lock on building a part's plans (any profile) is named after."""
    return cache_dir() / "trt" / plan_identity(sidecar, part, tensorrt, gpu)


def plan_path(sidecar: Sidecar, part: PartInfo, profile: Profile, tensorrt: str, gpu: str) -> Path:
    """Where the cache keeps the plan for that profile (the profile beside it as JSON, same name)."""
    return cache_dir() / "trt" / f"{plan_identity(sidecar, part, tensorrt, gpu)}-{cache_key(profile)}.plan"


def read_profile(path: Path) -> Profile:
    """A profile saved as JSON beside its plan."""
    return {name: (tuple(low), tuple(opt), tuple(high)) for name, (low, opt, high) in
            json.loads(path.read_text()).items()}


def save_plan(path: Path, data: bytes, profile: Profile) -> None:
    """Put a plan in the cache: the plan first, then its profile, so whoever finds the profile finds the plan."""
    write_atomically(path, data)
    write_atomically(path.with_suffix(".json"), json.dumps(profile).encode())


def remove_plan(path: Path) -> None:
    """Take a superseded plan out of the cache: its profile first, so no one finds a profile without its plan."""
    path.with_suffix(".json").unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def cached_plan(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str,
                profile: Profile) -> tuple[Path, Profile] | None:
    """A cached plan of this graph (for this TensorRT and GPU) whose profile contains `profile`, and its profile, or
    None: one built by an earlier run or by tools/build_engine.py, perhaps for a bigger batch."""
    for saved in sorted((cache_dir() / "trt").glob(f"{plan_identity(sidecar, part, tensorrt, gpu)}-*.json")):
        plan = cached_file(saved.parent, saved.with_suffix(".plan").name)
        try:
            found = read_profile(saved)
        except (OSError, ValueError):  # removed or being replaced by another run
            continue
        if plan is not None and contains(found, profile):
            return plan, found
    return None


def timing_cache_path(tensorrt: str, gpu: str) -> Path:
    """The TensorRT timing cache shared by every build for this GPU model and TensorRT version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-")
    return cache_dir() / "trt" / f"timing-{slug}-{tensorrt}.cache"


def offer_timing_cache(path: Path, attach: Callable[[bytes], bool]) -> bool:
    """Give the timing cache file's bytes (none when there is no file) to `attach` (TensorRT's create and
    `set_timing_cache`: True when it took them). A file that cannot be read or is refused (another TensorRT or GPU,
    damaged) gets one warning line and False: build without it and leave the file as it is."""
    try:
        known = path.read_bytes() if path.exists() else b""
    except OSError as error:
        log.warning("trt: timing cache %s unreadable (%s); building without it", path, error.strerror or error)
        return False
    if attach(known):
        return True
    log.warning("trt: timing cache %s refused (another TensorRT or GPU, or damaged); building without it, the file "
                "left as it is", path)
    return False


class TimingCache(Protocol):
    """What the build hands back of its timing cache (TensorRT's `ITimingCache`)."""

    def serialize(self) -> Any: ...


def keep_timing_cache(path: Path, cache: TimingCache | None) -> None:
    """Save the build's timing cache for the next build; TensorRT gives none back when it had none (said)."""
    if cache is None:
        log.warning("trt: the build gave no timing cache back; %s left as it is", path)
        return
    write_atomically(path, bytes(cache.serialize()))
