"""The one interface every segmentation backend implements, and the registry that finds them by name.

Lifecycle: the engine object is created (cheap: parameters checked, nothing loaded) where the run is set up;
`load()` runs in the infer thread, which owns any GPU context; `prepare()` runs in the preprocess thread and must
not touch state that `infer()` changes; `infer()` sees frames in order, one batch at a time.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pipeline.settings import from_mapping
from pipeline.types import ClassTable, Frame, Segmentation


class EngineError(RuntimeError):
    """An engine cannot be built or run as asked (missing weights, bad parameter, unavailable device)."""


class Engine(ABC):
    """A segmentation backend: frames in, one `Segmentation` per frame out."""

    name: ClassVar[str]
    kind: ClassVar[Literal["instance", "semantic"]]
    Params: ClassVar[type]
    """A dataclass of the engine's settings; `[engine.<name>]` in a config and `--param` fill it."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Engine:
        """Build the engine from a mapping of settings, each checked against `Params`."""
        return cls(from_mapping(cls.Params, params, where=f"engine.{cls.name}"))  # type: ignore[call-arg]

    @classmethod
    def availability(cls) -> str:
        """One line for `--list-engines`: can this engine run here now, and if not, what it lacks."""
        return "ready (CPU)"

    @property
    @abstractmethod
    def classes(self) -> ClassTable:
        """The class table the engine's class ids refer to."""

    def load(self) -> None:
        """Load weights / build models; called once in the infer thread before the first `infer`."""

    def prepare(self, frame: Frame) -> Any:
        """Per-frame work that can run ahead of inference in its own thread (resize, normalise, upload)."""
        return frame.image

    @abstractmethod
    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        """Segment a batch of frames (in order); returns one `Segmentation` per frame."""

    def reset(self) -> None:
        """Forget what earlier frames taught the engine (background model, warm start): a new video begins."""

    def close(self) -> None:
        """Release what `load` acquired."""


NO_NEEDS = "nothing (CPU, always available)"
"""What an engine that runs anywhere, with no model files, needs."""


@dataclass(frozen=True)
class EngineInfo:
    """How to find an engine without importing it, and what to tell a user about it."""

    name: str
    module: str
    attribute: str
    summary: str
    needs: str = NO_NEEDS

    def engine_class(self) -> type[Engine]:
        """Import the engine's module and return its class."""
        cls = getattr(importlib.import_module(self.module), self.attribute)
        assert issubclass(cls, Engine)
        return cls


TORCHVISION_NEEDS = "torchvision weights (download once, or --weights PATH/none); CUDA optional"

ENGINES: dict[str, EngineInfo] = {
    info.name: info
    for info in (
        EngineInfo("threshold", "engines.classical.threshold", "ThresholdEngine",
                   "grey-level thresholding (Otsu, mean/adaptive, multi-level) into connected regions"),
        EngineInfo("edges", "engines.classical.edges", "EdgesEngine",
                   "Sobel / Laplacian / Canny edges closed into filled regions"),
        EngineInfo("kmeans", "engines.classical.kmeans", "KMeansEngine",
                   "colour clustering (k-means in Lab) at reduced resolution, one instance per cluster"),
        EngineInfo("region", "engines.classical.region", "RegionEngine",
                   "watershed region growing from distance-transform markers; splits touching objects"),
        EngineInfo("motion", "engines.classical.motion", "MotionEngine",
                   "background subtraction (MOG2/KNN), one instance per moving object; real-time surveillance"),
        EngineInfo("maskrcnn", "engines.torch_instance", "MaskRCNNEngine",
                   "Mask R-CNN ResNet-50-FPN (torchvision v1): 80 COCO classes, boxes + instance masks",
                   needs=TORCHVISION_NEEDS),
        EngineInfo("maskrcnn_v2", "engines.torch_instance", "MaskRCNNV2Engine",
                   "Mask R-CNN ResNet-50-FPN v2: more accurate than v1 (COCO box AP 47.4 vs 37.9), 2.5x compute",
                   needs=TORCHVISION_NEEDS),
        EngineInfo("fcn", "engines.torch_semantic", "FCNEngine",
                   "FCN ResNet-50 semantic segmentation: a class for every pixel, 20 Pascal VOC classes",
                   needs=TORCHVISION_NEEDS),
        EngineInfo("fcn101", "engines.torch_semantic", "FCN101Engine",
                   "FCN ResNet-101: more accurate than fcn (VOC mIoU 63.7 vs 60.5), 1.5x compute",
                   needs=TORCHVISION_NEEDS),
        EngineInfo("maskrcnn_tf", "engines.opencv_tf", "MaskRCNNTFEngine",
                   "Mask R-CNN Inception v2 (TensorFlow Object Detection API, OpenCV's tutorial graph) on OpenCV "
                   "DNN: 80 COCO classes",
                   needs="--model-file frozen_inference_graph.pb --model-config its OpenCV .pbtxt; OpenCV 4.x"),
    )
}


def engine_names() -> list[str]:
    """Registered engine names, in display order."""
    return list(ENGINES)


def create_engine(name: str, params: Mapping[str, Any] | None = None) -> Engine:
    """Build the named engine with its parameters checked; raises `EngineError` for an unknown name."""
    info = ENGINES.get(name)
    if info is None:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return info.engine_class().from_params(params or {})
