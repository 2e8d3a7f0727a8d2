"""The networks' exportable parts, their ONNX export, and the sidecar JSON that describes an export.

A *part* is a piece of a torchvision model that takes tensors and returns a tuple of tensors with no
data-dependent control flow, so it exports to ONNX, compiles to TensorRT and runs under `torch.compile` as one
graph. FCN is one part (the whole network). Mask R-CNN is four (backbone + FPN, RPN head, box head, mask head):
anchors, proposal decoding, NMS, RoIAlign and mask pasting stay torchvision ops in torch on the same device
(docs/GPU.md says why). Dim 0 of every part's inputs and outputs counts *rows*: images, or boxes for the heads.

The export uses PyTorch's TorchScript-based exporter (`dynamo=False`): on this project's parts it is ~8x faster
than the torch.export-based one (1.5 s vs 14 s for FCN on 2 CPU cores) and needs no onnxscript; its deprecation
warning is silenced here, and the switch is local to `export_part`.
"""

from __future__ import annotations

import copy
import json
import platform
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torchvision
from torch import Tensor, nn

from seg_video.engines.cache import cached_file, file_sha256

if TYPE_CHECKING:
    import onnx

OPSET = 17
"""ONNX opset of our exports: within TensorRT 10/11's parser range (9..24) and ONNX Runtime's."""
SIDECAR = "model.json"
"""The sidecar's file name in an export folder."""
SIDECAR_FORMAT = 1

Precision = Literal["fp32", "fp16"]


@dataclass
class Part:
    """One exportable piece of a model: `module(*example)` returns a tuple of tensors."""

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    example: tuple[Tensor, ...]
    """Inputs to trace with (any values; their ranks and static dims are the graph's)."""
    rows: tuple[int, int] = (1, 1)
    """Rows per image in dim 0: typical and most (1 for image parts; proposals or detections for the heads)."""
    spatial: bool = False
    """Dims 2 and 3 of its 4-D tensors vary with the picture size (images, feature maps), besides dim 0."""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (a string names a dynamic dim) and element type."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class PartInfo:
    """An exported part, as the sidecar records it."""

    name: str
    file: str
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    rows: tuple[int, int]
    operators: tuple[str, ...]


@dataclass(frozen=True)
class Sidecar:
    """What a deployment needs to feed an export and read its outputs, and what it was made from."""

    model: str
    precision: Precision
    opset: int
    weights_sha256: str
    model_sha256: str
    versions: dict[str, str]
    preprocessing: dict[str, Any]
    classes: tuple[str | None, ...]
    parts: tuple[PartInfo, ...]
    format: int = SIDECAR_FORMAT

    def part(self, name: str) -> PartInfo:
        """The named part's record."""
        return next(part for part in self.parts if part.name == name)

    def write(self, folder: Path) -> Path:
        """Write `folder/model.json`; returns its path."""
        path = folder / SIDECAR
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> Sidecar:
        """Read a sidecar written by `write` (a folder means its model.json); raises ValueError if it is not one."""
        path = path / SIDECAR if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {SIDECAR_FORMAT}")
            parts = tuple(PartInfo(**{**part, "inputs": _tensors(part["inputs"]),
                                      "outputs": _tensors(part["outputs"]), "rows": tuple(part["rows"]),
                                      "operators": tuple(part["operators"])}) for part in data["parts"])
            return cls(**{**data, "classes": tuple(data["classes"]), "parts": parts})
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a seg-video ONNX sidecar: {error}") from None


def _tensors(items: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(item["name"], tuple(item["shape"]), item["dtype"]) for item in items)


def versions() -> dict[str, str]:
    """The library versions an export depends on."""
    import onnx

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx.__version__,
            "python": platform.python_version()}


class HalfIO(nn.Module):
    """An FP16 copy of `module` with FP32 inputs and outputs (the casts are part of the graph)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(module).half()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return tuple(output.float() for output in self.module(*(x.half() for x in inputs)))


def with_precision(module: nn.Module, precision: Precision) -> nn.Module:
    """The module to export or compile for `precision`: itself for fp32, a `HalfIO` copy for fp16."""
    return HalfIO(module) if precision == "fp16" else module


def _dynamic_dims(name: str, tensor: Tensor, spatial: bool) -> dict[int, str]:
    """The dims of one input/output that vary: rows, and height/width for spatial 4-D tensors."""
    dims = {0: "rows"}
    if spatial and tensor.dim() == 4:
        dims |= {2: f"{name}_height", 3: f"{name}_width"}
    return dims


def _info(name: str, tensor: Tensor, dynamic: dict[int, str]) -> TensorInfo:
    shape = tuple(dynamic.get(axis, int(size)) for axis, size in enumerate(tensor.shape))
    return TensorInfo(name, shape, "float32")


def export_part(part: Part, folder: Path, precision: Precision, device: torch.device) -> PartInfo:
    """Export one part to `folder/<name>.onnx` (FP32 I/O; FP16 inside for fp16), checked; returns its record."""
    import onnx

    from seg_video.engines.runners.onnx_ops import operators

    module = with_precision(part.module, precision).to(device).eval()
    example = tuple(x.to(device) for x in part.example)
    with torch.no_grad():
        results = module(*example)
    dynamic = {name: _dynamic_dims(name, x, part.spatial)
               for name, x in zip((*part.inputs, *part.outputs), (*example, *results), strict=True)}
    path = folder / f"{part.name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=OPSET, input_names=part.inputs,
                          output_names=part.outputs, dynamic_axes=dynamic, do_constant_folding=True)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    return PartInfo(name=part.name, file=path.name, sha256=file_sha256(path),
                    inputs=tuple(_info(n, x, dynamic[n]) for n, x in zip(part.inputs, example, strict=True)),
                    outputs=tuple(_info(n, x, dynamic[n]) for n, x in zip(part.outputs, results, strict=True)),
                    rows=part.rows, operators=tuple(operators(graph)))


def graph_precision(model: onnx.ModelProto) -> Precision:
    """fp16 when the graph holds FP16 weights (our fp16 exports), else fp32."""
    import onnx

    return "fp16" if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer) else "fp32"


def is_intact(folder: Path) -> Sidecar | None:
    """The folder's sidecar when it and every graph it lists are present and unchanged; else None."""
    try:
        sidecar = Sidecar.read(folder)
    except ValueError:
        return None
    for part in sidecar.parts:
        path = cached_file(folder, part.file)
        if path is None or file_sha256(path) != part.sha256:
            return None
    return sidecar
