"""OpenCV DNN (`cv2.dnn`): where its nets run (`dnn_target`), how they are read (OpenCV's failures as one-line
`EngineError`s), and `DnnRunner`, which runs one of our exported ONNX parts for `--backend opencv`.

Targets: `cpu` is DNN_BACKEND_OPENCV on DNN_TARGET_CPU (the default, in every OpenCV); `cuda` and `cuda-fp16` are
DNN_BACKEND_CUDA on DNN_TARGET_CUDA / DNN_TARGET_CUDA_FP16, only where OpenCV was built with CUDA and cuDNN and sees
a GPU (the PyPI wheels are not). OpenCV's nets take and return host arrays: a part's inputs are copied to the host
and its outputs back to the engine's device.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from seg_video.core.errors import EngineError
from seg_video.engines.runners.base import PartRunner
from seg_video.engines.runners.graphs import Part, PartInfo

log = logging.getLogger(__name__)

DnnTarget = Literal["cpu", "cuda", "cuda-fp16"]
TARGETS: dict[str, tuple[int, int]] = {
    "cpu": (cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU),
    "cuda": (cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA),
    "cuda-fp16": (cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA_FP16),
}
"""`dnn_target` values → (cv2.dnn backend, cv2.dnn target)."""
OPENCV_ERROR_PREFIX = re.compile(r"OpenCV\([^)]*\) \S+:\d+: error: \(-?\d+:[^)]*\) ")
"""The `OpenCV(4.x) file.cpp:123: error: (-2:Unspecified error) ` prefix before each of OpenCV's messages."""
OPENCV_MAJOR = int(cv2.__version__.split(".")[0])
CHECK_TOLERANCE = 1e-3
"""Most difference `check_part` lets pass, as a fraction of the largest output value (at least 1)."""
PART_HINT = "; run this model with --backend onnx or torch instead"


def target_problem(target: str) -> str | None:
    """Why this OpenCV cannot run nets on `target`, or None when it can."""
    if target == "cpu":
        return None
    backend, wanted = TARGETS[target]
    if wanted not in cv2.dnn.getAvailableTargets(backend):
        return (f"this OpenCV ({cv2.__version__}) was built without the CUDA DNN backend, as the PyPI wheels are; "
                f"use dnn_target cpu, or an OpenCV 4.x built WITH_CUDA and WITH_CUDNN")
    if OPENCV_MAJOR >= 5:
        return (f"OpenCV {cv2.__version__}'s DNN engine runs on the CPU only (\"the new DNN does not support non-CPU "
                f"back-ends for now\"); use dnn_target cpu, or an OpenCV 4.x built with CUDA")
    if cv2.cuda.getCudaEnabledDeviceCount() == 0:
        return f"OpenCV {cv2.__version__} has its CUDA DNN backend but sees no CUDA GPU here; use dnn_target cpu"
    return None


def check_opencv_settings(target: str, backend: str, precision: str) -> None:
    """Refuse a `dnn_target` this OpenCV cannot use, one given to another backend, and fp16 on OpenCV's side."""
    if backend != "opencv":
        if target != "cpu":
            raise EngineError(f"dnn_target {target} is a setting of --backend opencv; this run's backend is {backend}")
        return
    problem = target_problem(target)
    if problem is not None:
        raise EngineError(f"dnn_target {target}: {problem}")
    if precision != "fp32":
        raise EngineError("--backend opencv runs the fp32 export; for FP16 use --dnn-target cuda-fp16 "
                          "(an OpenCV with CUDA) and --precision fp32")


def opencv_reason(error: cv2.error) -> str:
    """OpenCV's error message as one line, its file/line prefixes left out."""
    text = " ".join(line.lstrip("> ").strip() for line in str(error).splitlines())
    return re.sub(r"\s+", " ", OPENCV_ERROR_PREFIX.sub("", text)).strip()


@contextmanager
def opencv_quiet() -> Iterator[None]:
    """Silence OpenCV's own log while a net is read: its errors reach the user as our one line instead."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_net(read: Callable[[], cv2.dnn.Net], what: str, target: str, hint: str = "") -> cv2.dnn.Net:
    """The net `read()` returns, set to run on `target`; OpenCV's failure becomes an `EngineError` naming `what`
    (then `hint`, what to do instead)."""
    try:
        with opencv_quiet():
            net = read()
    except cv2.error as error:
        raise EngineError(f"OpenCV {cv2.__version__} cannot load {what}: {opencv_reason(error)}{hint}") from None
    if net.empty():
        raise EngineError(f"OpenCV {cv2.__version__} cannot load {what}: it read an empty network{hint}")
    if target != "cpu":  # DNN_BACKEND_OPENCV on DNN_TARGET_CPU is every net's default (and OpenCV 5 warns if set)
        backend, chosen = TARGETS[target]
        net.setPreferableBackend(backend)
        net.setPreferableTarget(chosen)
    return net


def forward(net: cv2.dnn.Net, outputs: Sequence[str], what: str, hint: str = "") -> tuple[np.ndarray, ...]:
    """Run `net` for the named outputs; OpenCV's failure becomes an `EngineError` naming `what`, then `hint`."""
    try:
        return tuple(net.forward(list(outputs)))
    except cv2.error as error:
        raise EngineError(f"OpenCV {cv2.__version__} could not run {what}: {opencv_reason(error)}{hint}") from None


class DnnRunner(PartRunner):
    """An exported part on OpenCV DNN (`readNetFromONNX`): inputs copied to the host, outputs back to `device`."""

    def __init__(self, path: Path, info: PartInfo, target: str, device: torch.device) -> None:
        super().__init__(info)
        self._what = f"part {info.name} ({path.name})"
        self.net = read_net(lambda: cv2.dnn.readNetFromONNX(str(path)), self._what, target, PART_HINT)
        self._device = device
        self._outputs = [spec.name for spec in info.outputs]

    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        for spec, x in zip(self.info.inputs, inputs, strict=True):
            self.net.setInput(np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()), spec.name)
        return tuple(torch.from_numpy(np.asarray(output)).to(self._device)
                     for output in forward(self.net, self._outputs, self._what, PART_HINT))


def check_part(runner: DnnRunner, part: Part) -> None:
    """Refuse a part OpenCV computes wrongly: run it and its torch module on random inputs of another shape than it
    was exported with (one row; spatial inputs 32 pixels taller and wider), compare (OpenCV 4.x reads some of our
    size-dependent resizes as the export's fixed sizes and gives wrong feature maps, silently)."""
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(torch.rand((1, *x.shape[1:-2], x.shape[-2] + 32, x.shape[-1] + 32) if part.spatial and x.dim() == 4
                              else (1, *x.shape[1:]), generator=generator).to(x.device) for x in part.example)
    with torch.inference_mode():
        expected = part.module(*inputs)
    got = runner(*inputs)
    worst = max(float((ours - theirs).abs().max()) / max(1.0, float(theirs.abs().max()))
                for ours, theirs in zip(got, expected, strict=True))
    if worst > CHECK_TOLERANCE:
        raise EngineError(f"OpenCV {cv2.__version__} runs part {part.name} wrongly: its outputs differ from PyTorch's "
                          f"by {worst:.1%} of their range at a size other than the export's{PART_HINT}")


def dnn_runners(folder: Path, parts: Sequence[Part], infos: Sequence[PartInfo], target: str,
                device: torch.device) -> dict[str, DnnRunner]:
    """A `DnnRunner` per exported part, each checked against its torch module, said once in the log."""
    runners = {}
    for part, info in zip(parts, infos, strict=True):
        runners[info.name] = DnnRunner(folder / info.file, info, target, device)
        check_part(runners[info.name], part)
    log.info("OpenCV DNN %s runs %s on dnn_target %s (checked against PyTorch)", cv2.__version__,
             ", ".join(runners), target)
    return runners
