"""What the torchvision engines share: their common settings, device and backend choice, weights loading, class
filter, the frame upload (BGR uint8 on the host → RGB uint8 (3,H,W) on the engine's device, one copy) and, for
the accelerated backends, the model's exportable parts (`seg_video.engines.runners.choice`,
`seg_video.engines.runners.graphs`)."""

from __future__ import annotations

import logging
import re
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from seg_video.core.errors import EngineError
from seg_video.core.types import ClassTable, Frame, InstanceMasks
from seg_video.engines.base import TORCHVISION_NEEDS, Engine
from seg_video.engines.cache import model_sha256
from seg_video.engines.models.weights import fit_state, load_weights, weights_status
from seg_video.engines.runners.base import Runner, on_stream
from seg_video.engines.runners.choice import Backend, make_runners, present_backends, resolve_backend
from seg_video.engines.runners.compiled import CompiledRunner
from seg_video.engines.runners.graphs import OPSET, Part, Precision, Sidecar, export_part, versions
from seg_video.engines.runners.onnx import PROVIDERS
from seg_video.engines.runners.opencv import DnnTarget, check_opencv_settings

log = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
SEEDED = threading.Lock()
"""Held while a model is built from the seeded global generator, so engines loading in several threads at once
each get the same random model (`weights = "none"`)."""


def class_table(official: WeightsEnum) -> ClassTable:
    """The class table of torchvision's weights meta; background and "N/A" ids become unnamed (None) slots."""
    return ClassTable(tuple(None if name in ("__background__", "N/A") else name
                            for name in official.meta["categories"]))


@dataclass
class TorchParams:
    """Settings every torchvision engine has; `table` is the class table that `classes` names refer to."""

    weights: str = "default"
    """Either default (torchvision's official weights, downloaded once), none (random init) or a state-dict file."""
    device: str = "auto"
    """auto (first CUDA GPU if there is one, else CPU), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "fp16"] = "fp32"
    """fp16 runs the model under CUDA autocast; refused on CPU."""
    classes: tuple[str, ...] = ()
    """Class names to keep (empty: all)."""
    min_size: int = 800
    """The model input's shorter side in pixels."""
    backend: Backend = "torch"
    """torch (eager PyTorch), torch-compiled (torch.compile, channels-last; CUDA graphs on CUDA, inductor's C++ on
    the CPU), onnx (ONNX Runtime), trt (TensorRT, CUDA), opencv (OpenCV DNN), or auto: the fastest of trt,
    torch-compiled and torch on CUDA, of onnx and torch on the CPU, present here (said when the engine loads)."""
    providers: tuple[str, ...] = ()
    """Backend onnx: ONNX Runtime execution providers to try, in order, of tensorrt, cuda, cpu (empty: cuda then cpu
    on a GPU, cpu on the CPU; tensorrt only when named)."""
    dnn_target: DnnTarget = "cpu"
    """Backend opencv: where OpenCV DNN runs the network: cpu, or cuda / cuda-fp16 (an OpenCV built with CUDA)."""

    table: ClassVar[ClassTable]

    def validate(self) -> None:
        """Reject values no run could use (the device's presence is checked when the engine is built)."""
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if self.weights not in ("default", "none") and not Path(self.weights).is_file():
            raise ValueError(f"weights must be default, none or a state-dict file; {self.weights!r} is not a file")
        if not 32 <= self.min_size <= 4096:
            raise ValueError(f"min_size must be 32..4096 pixels; got {self.min_size}")
        unknown = [name for name in self.providers if name not in PROVIDERS]
        if unknown:
            raise ValueError(f"providers must be of {', '.join(PROVIDERS)}; got {unknown[0]!r}")
        try:
            self.table.ids_of(list(self.classes))
        except KeyError as error:
            raise ValueError(error.args[0]) from None


def resolve_device(spec: str, precision: str) -> torch.device:
    """The device `spec` names, checked against this machine; fp16 needs CUDA."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise EngineError(f"device {spec}: no CUDA GPU here (torch {torch.__version__}); use device cpu")
        if (device.index or 0) >= count:
            raise EngineError(f"device {spec}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
        device = torch.device("cuda", device.index or 0)
    if precision == "fp16" and device.type != "cuda":
        raise EngineError("precision fp16 needs a CUDA GPU and this run is on the CPU; use precision fp32")
    return device


def compact_masks(masks: Tensor) -> InstanceMasks:
    """(n,H,W) bool masks on the engine's device as `InstanceMasks`: each cropped to its tight box there, so only
    the crops cross to the host."""
    height, width = int(masks.shape[1]), int(masks.shape[2])
    if len(masks) == 0:
        return InstanceMasks.empty(height, width)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    top, left = rows.int().argmax(dim=1), cols.int().argmax(dim=1)
    bottom, right = height - rows.flip(1).int().argmax(dim=1), width - cols.flip(1).int().argmax(dim=1)
    present = rows.any(dim=1)
    boxes = torch.where(present[:, None], torch.stack([left, top, right, bottom], dim=1), 0).cpu().numpy()
    spans = boxes.tolist()
    flat = torch.cat([masks[i, y1:y2, x1:x2].reshape(-1) for i, (x1, y1, x2, y2) in enumerate(spans)]).cpu().numpy()
    sizes = [(y2 - y1) * (x2 - x1) for x1, y1, x2, y2 in spans]  # one copy to the host for all crops, not one each
    crops = [chunk.reshape(y2 - y1, x2 - x1) for chunk, (x1, y1, x2, y2) in
             zip(np.split(flat, np.cumsum(sizes)[:-1]), spans, strict=True)]
    return InstanceMasks(height, width, boxes, crops)


def cuda_status() -> str:
    """Whether CUDA can be used here, for `--list-engines`."""
    count = torch.cuda.device_count()
    return f"CUDA: yes ({count} GPU{'s' if count > 1 else ''})" if count else "CUDA: no (runs on CPU)"


class TorchEngine(Engine):
    """A torchvision model built by torchvision's own builder, with weights from `seg_video.engines.models.weights`."""

    needs = TORCHVISION_NEEDS

    Params: ClassVar[type[TorchParams]]
    official: ClassVar[WeightsEnum]
    """torchvision's official weights for the model (`weights = "default"`)."""
    builder: ClassVar[Callable[..., nn.Module]]
    unused_prefixes: ClassVar[tuple[str, ...]] = ()
    """Checkpoint entries inference never runs (dropped before loading, e.g. FCN's auxiliary training head)."""

    def __init__(self, params: TorchParams) -> None:
        self.params = params
        self.device = resolve_device(params.device, params.precision)
        self.backend, self._backend_line = resolve_backend(params.backend, self.device)
        if self.device.type != "cuda" and set(params.providers) - {"cpu"}:
            raise EngineError(f"providers {', '.join(params.providers)} need device cuda; this run is on the CPU")
        check_opencv_settings(params.dnn_target, self.backend, params.precision)
        self._model: nn.Module | None = None
        self._keep: Tensor | None = None
        self._stream: torch.cuda.Stream | None = None
        self._runners: dict[str, Runner] = {}
        self._warm: set[tuple[int, int, int]] = set()
        """(height, width, batch) of the runs `warm_up` has prepared for since `load`."""
        self._per_box: list[tuple[str, int, list[torch.Size]]] = []
        """Parts whose rows are boxes: name, most rows per image, input shapes after dim 0 (for `warm_up`)."""

    @property
    def classes(self) -> ClassTable:
        """The class table of the official weights (also used with --weights PATH/none)."""
        return self.Params.table

    @classmethod
    def availability(cls) -> str:
        """Weights cached or not, CUDA or not, and the backends that can run here."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return f"{weights_status(cls.official)}; {cuda_status()}; backends: {', '.join(present_backends(device))}"

    def build(self) -> nn.Module:
        """The untrained model from torchvision's builder, shaped for the official weights."""
        return type(self).builder(weights=None, weights_backbone=None, num_classes=len(self.classes.names),
                                  **self.model_settings())

    @abstractmethod
    def model_settings(self) -> dict[str, Any]:
        """Builder keyword arguments taken from the engine's settings."""

    @abstractmethod
    def parts(self, model: nn.Module) -> list[Part]:
        """The model's exportable parts (`seg_video.engines.runners.graphs`), on the model's device."""

    @abstractmethod
    def install(self, model: nn.Module, runners: Mapping[str, Runner]) -> nn.Module:
        """The model with each part replaced by its runner (same calls, same results)."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """How frames become the network's input (colour order, scale, normalisation, resize rule), for sidecars."""

    def load(self) -> None:
        """Build the model, load its weights, move it to the device, hand its parts to the backend; runs in the
        infer thread (which creates the backend's CUDA stream, sessions and engines)."""
        state = load_weights(self.params.weights, self.official, self.name)
        with SEEDED, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # weights "none": the same random model every run, for benchmarks and tests
            model = self.build()
        if state is not None:
            for key in [key for key in state if key.startswith(self.unused_prefixes)]:
                del state[key]  # in place: the checkpoint's version metadata stays with it
            fit_state(model, state, repr(self.params.weights), self.name)
        model = model.to(self.device).eval()
        if self.params.backend == "auto" or self.backend != "torch":
            log.info("%s: %s", self.name, self._backend_line)
        if self.backend != "torch":
            self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
            parts = self.parts(model)
            self._runners = make_runners(self, model, parts, self._stream)
            self._per_box = [(part.name, part.rows[1], [x.shape[1:] for x in part.example])
                             for part in parts if part.rows != (1, 1)]
            model = self.install(model, self._runners)
        self._model = model
        if self.params.classes:
            keep = torch.zeros(len(self.classes.names), dtype=torch.bool)
            keep[self.classes.ids_of(list(self.params.classes))] = True
            self._keep = keep.to(self.device)

    def close(self) -> None:
        """Drop the model (and the backend's sessions or engines), so its (device) memory can be reused."""
        self._model = None
        self._keep = None
        self._stream = None
        self._runners, self._per_box, self._warm = {}, [], set()

    def loaded_model(self) -> nn.Module:
        """The model `load` built; calling `infer` before `load` is a programming error."""
        if self._model is None:
            raise RuntimeError(f"{self.name}: infer() called before load()")
        return self._model

    def batches_well(self) -> bool:
        """On a GPU: a batch fills the device that one frame leaves mostly idle."""
        return self.device.type == "cuda"

    def upload(self, frame: Frame) -> Tensor:
        """The frame as RGB uint8 (3,H,W) on the device: one (pinned, asynchronous) copy, channels swapped there."""
        image = torch.from_numpy(np.ascontiguousarray(frame.image))
        if self.device.type == "cuda":
            image = image.pin_memory().to(self.device, non_blocking=True)
        return image.permute(2, 0, 1).flip(0).contiguous()

    def running(self, prepared: Sequence[Tensor]) -> AbstractContextManager[Any]:
        """Where `infer` runs: eager torch under fp16 autocast when asked; other backends on the engine's stream."""
        if self.backend == "torch":
            return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.params.precision == "fp16")
        return on_stream(self._stream, prepared)

    def warm_up(self, height: int, width: int, batch: int = 1) -> None:
        """Compile or build now, not on the first frames: a batch of black frames of this size through `infer`, then
        each per-box part (heads, whose row counts black frames do not span) on one row and on the most a batch can
        give it (a dynamic dim 0 may compile once on each side of a size the kernels are chosen by: 16 for the CPU's
        convolutions). On CUDA all of it twice: CUDA-graph trees run a new graph once, then capture it on its second
        call. Once per size and batch; nothing to do for eager torch on the CPU."""
        for runner in self._runners.values():
            if isinstance(runner, CompiledRunner):
                runner.fit_batch(batch)
        if (height, width, batch) in self._warm or (self.backend == "torch" and self.device.type == "cpu"):
            return
        frames = [Frame(index=i, image=np.zeros((height, width, 3), np.uint8)) for i in range(batch)]
        for _ in range(2 if self.device.type == "cuda" else 1):
            prepared = [self.prepare(frame) for frame in frames]
            self.infer(frames, prepared)
            with torch.inference_mode(), self.running(prepared):
                for name, rows, shapes in self._per_box:
                    for count in (1, batch * rows):
                        self._runners[name](*(torch.zeros((count, *shape), device=self.device) for shape in shapes))
        self._warm.add((height, width, batch))

    def export_onnx(self, model: nn.Module, folder: Path, *, weights: str, precision: Precision) -> Sidecar:
        """Export the model's parts into `folder` with their sidecar JSON; `weights` is the state's SHA-256."""
        parts = self.parts(model)
        sidecar = Sidecar(model=self.name, precision=precision, opset=OPSET, weights_sha256=weights,
                          model_sha256=model_sha256([part.module for part in parts], weights), versions=versions(),
                          preprocessing=self.preprocessing(), classes=self.classes.names,
                          parts=tuple(export_part(part, folder, precision, self.device) for part in parts))
        sidecar.write(folder)
        return sidecar
