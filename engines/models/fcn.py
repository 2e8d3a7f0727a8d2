"""FCN ResNet-50/101 (torchvision): a class for every pixel, 20 Pascal VOC classes (id 0 is background).

Preprocessing is the official weights' own transform (`weights.transforms()`): the shorter side resized to
`min_size` (520 there, antialiased bilinear, no cap on the longer side), scaled to 0..1, ImageNet-normalised, run
on the device in the preprocess thread. The logits come back at the resized size and are resized bilinearly to the
frame before the per-pixel argmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation import (
    FCN_ResNet50_Weights,
    FCN_ResNet101_Weights,
    fcn_resnet50,
    fcn_resnet101,
)

from seg_video.core.types import Frame, Segmentation
from seg_video.engines.models.torch_common import TorchEngine, TorchParams, class_table, compact_masks
from seg_video.engines.runners.base import Runner, RunnerModule
from seg_video.engines.runners.graphs import Part


@dataclass
class FCNParams(TorchParams):
    """FCN settings: the input size of the official transform, and what the output holds."""

    min_size: int = 520
    """The shorter side the official FCN transform resizes to (torchvision's 520; the longer side is not capped)."""
    output: Literal["label_map", "instances"] = "label_map"
    """label_map: a label map (the renderer blends it or draws it alone: `render.semantic`); instances: one masked
    instance per class present (box around its pixels, score = its mean probability there), so boxes are drawn too."""

    table: ClassVar = class_table(FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1)


class Logits(nn.Module):
    """FCN as one part: images → (logits at the images' size,)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return (self.model(images)["out"],)


def as_fcn_output(outputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """The part's logits in torchvision FCN's output dict."""
    return {"out": outputs[0]}


class FCNEngine(TorchEngine):
    """torchvision `fcn_resnet50`: semantic segmentation, 20 VOC classes."""

    name = "fcn"
    summary = "FCN ResNet-50 semantic segmentation: a class for every pixel, 20 Pascal VOC classes"
    kind = "semantic"
    Params = FCNParams
    official = FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
    builder = staticmethod(fcn_resnet50)
    unused_prefixes = ("aux_classifier.",)
    part_name: ClassVar[str] = "fcn"
    """The one exportable part's name (its ONNX file, TensorRT plan and runner)."""

    def __init__(self, params: FCNParams) -> None:
        super().__init__(params)
        self.params: FCNParams = params
        self._transform = self.official.transforms(resize_size=params.min_size)

    def model_settings(self) -> dict[str, Any]:
        """No auxiliary head: it only helps training."""
        return {"aux_loss": False}

    def parts(self, model: nn.Module) -> list[Part]:
        """The whole network, dynamic in batch, height and width."""
        example = torch.zeros(2, 3, 64, 64, device=self.device)
        return [Part(self.part_name, Logits(model), ("images",), ("logits",), (example,), spatial=True)]

    def install(self, model: nn.Module, runners: Mapping[str, Runner]) -> nn.Module:
        """The runner in the model's place, answering with the model's output dict."""
        return RunnerModule(runners[self.part_name], as_fcn_output)

    def preprocessing(self) -> dict[str, Any]:
        """The official transform's steps."""
        return {"colour": "RGB", "layout": "NCHW", "scale": 1 / 255, "mean": list(self._transform.mean),
                "std": list(self._transform.std),
                "resize": {"shorter_side": self.params.min_size, "interpolation": self._transform.interpolation.value,
                           "antialias": self._transform.antialias},
                "output": "logits (rows, classes, height, width) at the input size; argmax over classes"}

    @torch.inference_mode()
    def prepare(self, frame: Frame) -> Tensor:
        """Upload, then the official transform on the device: the model's input for this frame."""
        return self._transform(self.upload(frame))

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Tensor]) -> list[Segmentation]:
        """`observe`, then `finish` for each frame."""
        return [self.finish(frame, logits) for frame, logits in zip(frames, self.observe(frames, prepared),
                                                                      strict=True)]

    @torch.inference_mode()
    def observe(self, frames: Sequence[Frame], prepared: Sequence[Tensor]) -> list[Tensor]:
        """The network alone: one forward per run of same-sized frames in the batch (all of it, for a video); each
        frame's logits at the input size. The per-frame rest runs in `finish`, beside the next forward."""
        model = self.loaded_model()
        results: list[Tensor] = []
        with self.running(prepared):
            for _, run in groupby(zip(frames, prepared, strict=True), key=lambda item: item[0].size):
                results.extend(model(torch.stack([image for _, image in run]))["out"])
        return results

    @torch.inference_mode()
    def finish(self, frame: Frame, logits: Tensor) -> Segmentation:
        """One frame's logits (classes, h, w) as a label map or as per-class instances, at the frame's size."""
        height, width = frame.size
        # channels last: the resize and the argmax read each pixel's class scores as one run (~5x faster on a CPU)
        logits = F.interpolate(logits[None].float().contiguous(memory_format=torch.channels_last), size=(height, width),
                               mode="bilinear", align_corners=False)[0]
        labels = logits.argmax(0)
        if self._keep is not None:
            labels = torch.where(self._keep[labels], labels, 0)
        if self.params.output != "instances":
            return Segmentation(height=height, width=width, classes=self.classes,
                                label_map=labels.to(torch.uint8).cpu().numpy())
        present = labels.unique()
        present = present[present != 0]
        masks = labels == present[:, None, None]
        scores = (logits.softmax(0)[present] * masks).sum((1, 2)) / masks.sum((1, 2))
        compact = compact_masks(masks)
        return Segmentation(height=height, width=width, classes=self.classes, boxes=compact.boxes.astype(np.float32),
                            scores=scores.cpu().numpy(), class_ids=present.cpu().numpy(), masks=compact)


class FCN101Engine(FCNEngine):
    """torchvision `fcn_resnet101`: more accurate than FCN-50 (COCO-VOC mIoU 63.7 vs 60.5), 1.5x its compute."""

    name = "fcn101"
    summary = "FCN ResNet-101: more accurate than fcn (VOC mIoU 63.7 vs 60.5), 1.5x compute"
    official = FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1
    builder = staticmethod(fcn_resnet101)
