"""The TensorRT plan cache, without TensorRT: which optimisation profile covers which input shapes, what a plan is
named after (model, weights, graph, precision, TensorRT version, GPU, profile), and where it and the timing cache
live."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from seg_video.engines.cache import cache_dir, cache_key, cached_file
from seg_video.engines.runners.base import bucket
from seg_video.engines.runners.graphs import PartInfo, Sidecar

Shape = tuple[int, ...]


Profile = dict[str, tuple[Shape, Shape, Shape]]
"""Per input name: the (min, opt, max) shapes of one TensorRT optimisation profile."""


def profile_for(names: Sequence[str], shapes: Sequence[Shape], rows: tuple[int, int]) -> Profile:
    """The profile for inputs of these shapes: dim 0 from 1 to the rows of a power-of-two count of images, the
    other dims as they are."""
    images = bucket(math.ceil(shapes[0][0] / rows[1]))
    return {name: ((1, *shape[1:]), (images * rows[0], *shape[1:]), (images * rows[1], *shape[1:]))
            for name, shape in zip(names, shapes, strict=True)}


def covers(profile: Profile, names: Sequence[str], shapes: Sequence[Shape]) -> bool:
    """Whether every input shape lies within the profile."""
    return all(all(low <= size <= high for low, size, high in zip(profile[name][0], shape, profile[name][2],
                                                                    strict=True))
               for name, shape in zip(names, shapes, strict=True))


def plan_identity(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str) -> str:
    """`model-part-hash` naming what a TensorRT plan is built from, all but its shapes: model, weights, graph,
    precision, TensorRT version, GPU."""
    key = cache_key({"model": sidecar.model, "model_sha256": sidecar.model_sha256,
                     "weights_sha256": sidecar.weights_sha256, "part": part.name, "onnx_sha256": part.sha256,
                     "precision": sidecar.precision, "tensorrt": tensorrt, "gpu": gpu})
    return f"{sidecar.model}-{part.name}-{key}"


def plan_path(sidecar: Sidecar, part: PartInfo, profile: Profile, tensorrt: str, gpu: str) -> Path:
    """Where the cache keeps the plan for that profile (the profile beside it as JSON, same name)."""
    return cache_dir() / "trt" / f"{plan_identity(sidecar, part, tensorrt, gpu)}-{cache_key(profile)}.plan"


def read_profile(path: Path) -> Profile:
    """A profile saved as JSON beside its plan."""
    return {name: (tuple(low), tuple(opt), tuple(high)) for name, (low, opt, high) in
            json.loads(path.read_text()).items()}


def cached_plan(sidecar: Sidecar, part: PartInfo, tensorrt: str, gpu: str, shapes: Sequence[Shape]) -> Path | None:
    """A cached plan of this graph (for this TensorRT and GPU) whose profile covers `shapes`, or None: one built by
    an earlier run or by tools/build_engine.py, perhaps for a bigger batch."""
    names = [spec.name for spec in part.inputs]
    for saved in sorted((cache_dir() / "trt").glob(f"{plan_identity(sidecar, part, tensorrt, gpu)}-*.json")):
        plan = cached_file(saved.parent, saved.with_suffix(".plan").name)
        if plan is not None and covers(read_profile(saved), names, shapes):
            return plan
    return None


def timing_cache_path(tensorrt: str, gpu: str) -> Path:
    """The TensorRT timing cache shared by every build for this GPU model and TensorRT version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-")
    return cache_dir() / "trt" / f"timing-{slug}-{tensorrt}.cache"
