"""Mask R-CNN ResNet-50-FPN (torchvision v1 and v2): COCO instances with boxes, scores and masks.

Preprocessing is torchvision's own `GeneralizedRCNNTransform` (ImageNet normalisation, resize so the shorter
side is `min_size` unless the longer would pass `max_size`, padding to a multiple of 32), run on the device in the
preprocess thread; the same object maps boxes and masks back to the frame after inference, so results equal
calling the torchvision model on the frame.

The accelerated backends run four parts (backbone + FPN, RPN head, box head, mask head: `parts`); anchors, proposal
decoding, NMS, RoIAlign and mask pasting stay torchvision's, in torch on the same device (docs/GPU.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from seg_video.core.types import Frame, Segmentation
from seg_video.engines.models.torch_common import TorchEngine, TorchParams, class_table, compact_masks
from seg_video.engines.runners.base import Runner, RunnerModule, first
from seg_video.engines.runners.graphs import Part

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class MaskRCNNParams(TorchParams):
    """Mask R-CNN settings; the size rule and thresholds default to torchvision's."""

    score_threshold: float = 0.5
    """Drop detections scored at or below this (given to the model's box head, as torchvision's box_score_thresh)."""
    mask_threshold: float = 0.5
    """A pixel belongs to an instance where its mask probability is at least this."""
    max_size: int = 1333
    """Cap on the model input's longer side."""

    table: ClassVar = class_table(MaskRCNN_ResNet50_FPN_Weights.COCO_V1)

    def validate(self) -> None:
        """Also check the thresholds and the size cap."""
        super().validate()
        for name in ("score_threshold", "mask_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1; got {getattr(self, name)}")
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be at least min_size ({self.min_size})")


class Features(nn.Module):
    """The backbone + FPN as a part: images → the feature maps, finest first."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.backbone(images).values())


class RPNHead(nn.Module):
    """The RPN head as a part: the feature maps → objectness logits per level, then box deltas per level."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *features: Tensor) -> tuple[Tensor, ...]:
        objectness, deltas = self.head(list(features))
        return (*objectness, *deltas)


class RoIHead(nn.Module):
    """A box or mask head and its predictor as one part: pooled RoI features → the predictor's outputs."""

    def __init__(self, head: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.predictor = predictor

    def forward(self, features: Tensor) -> tuple[Tensor, ...]:
        outputs = self.predictor(self.head(features))
        return tuple(outputs) if isinstance(outputs, tuple) else (outputs,)


def as_feature_dict(names: list[str], outputs: tuple[Tensor, ...]) -> OrderedDict[str, Tensor]:
    """Feature maps by the names the FPN gives them."""
    return OrderedDict(zip(names, outputs, strict=True))


def as_rpn_output(outputs: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
    """The RPN head's (objectness per level, deltas per level)."""
    levels = len(outputs) // 2
    return list(outputs[:levels]), list(outputs[levels:])


class MaskRCNNEngine(TorchEngine):
    """torchvision `maskrcnn_resnet50_fpn` (v1): 80 COCO classes, instance masks."""

    name = "maskrcnn"
    summary = "Mask R-CNN ResNet-50-FPN (torchvision v1): 80 COCO classes, boxes + instance masks"
    kind = "instance"
    Params = MaskRCNNParams
    official = MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    builder = staticmethod(maskrcnn_resnet50_fpn)

    def __init__(self, params: MaskRCNNParams) -> None:
        super().__init__(params)
        self.params: MaskRCNNParams = params
        self._transform = GeneralizedRCNNTransform(params.min_size, params.max_size, IMAGENET_MEAN,
                                                   IMAGENET_STD).eval()

    def model_settings(self) -> dict[str, Any]:
        """Size rule and normalisation as our transform's, so the model alone behaves the same."""
        return {"min_size": self.params.min_size, "max_size": self.params.max_size, "image_mean": IMAGENET_MEAN,
                "image_std": IMAGENET_STD, "box_score_thresh": self.params.score_threshold}

    def parts(self, model: nn.Module) -> list[Part]:
        """Backbone + FPN (dynamic batch and size), RPN head (the same), box and mask heads (dynamic box count)."""
        rcnn = cast(MaskRCNN, model)
        images = torch.zeros(2, 3, 64, 96, device=self.device)  # a multiple of the transform's size_divisible
        levels = self._levels(rcnn, images)
        channels = rcnn.backbone.out_channels
        names = [f"features_{key}" for key in levels]
        roi_heads = rcnn.roi_heads
        box_size, mask_size = roi_heads.box_roi_pool.output_size, roi_heads.mask_roi_pool.output_size
        proposals = rcnn.rpn.post_nms_top_n()
        return [
            Part("backbone", Features(rcnn.backbone), ("images",), tuple(names), (images,), spatial=True),
            Part("rpn_head", RPNHead(rcnn.rpn.head), tuple(names),
                 (*(f"objectness_{key}" for key in levels), *(f"deltas_{key}" for key in levels)),
                 tuple(levels.values()), spatial=True),
            Part("box_head", RoIHead(roi_heads.box_head, roi_heads.box_predictor), ("box_features",),
                 ("class_logits", "box_regression"), (torch.zeros(4, channels, *box_size, device=self.device),),
                 rows=(proposals, proposals)),
            Part("mask_head", RoIHead(roi_heads.mask_head, roi_heads.mask_predictor), ("mask_features",),
                 ("mask_logits",), (torch.zeros(4, channels, *mask_size, device=self.device),),
                 rows=(16, roi_heads.detections_per_img)),
        ]

    def install(self, model: nn.Module, runners: Mapping[str, Runner]) -> nn.Module:
        """Each part's runner where its modules were; the heads' predictors become identities (the runners
        return what the predictors did)."""
        rcnn = cast(MaskRCNN, model)
        names = list(self._levels(rcnn, torch.zeros(1, 3, 64, 64, device=self.device)))
        rcnn.backbone = RunnerModule(runners["backbone"], partial(as_feature_dict, names))
        rcnn.rpn.head = RunnerModule(runners["rpn_head"], as_rpn_output)
        rcnn.roi_heads.box_head = RunnerModule(runners["box_head"], tuple)
        rcnn.roi_heads.box_predictor = nn.Identity()
        rcnn.roi_heads.mask_head = RunnerModule(runners["mask_head"], first)
        rcnn.roi_heads.mask_predictor = nn.Identity()
        return rcnn

    @staticmethod
    def _levels(rcnn: MaskRCNN, images: Tensor) -> OrderedDict[str, Tensor]:
        """The backbone's feature maps for `images`, by the FPN's level names ("0".."3", "pool")."""
        with torch.no_grad():
            return cast(OrderedDict[str, Tensor], rcnn.backbone(images))

    def preprocessing(self) -> dict[str, Any]:
        """GeneralizedRCNNTransform's steps."""
        return {"colour": "RGB", "layout": "NCHW", "scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "resize": {"shorter_side": self.params.min_size, "longer_side_max": self.params.max_size,
                           "interpolation": "bilinear", "pad_to_multiple_of": self._transform.size_divisible},
                "output": "backbone → rpn_head → torchvision anchors, box decoding, NMS, MultiScaleRoIAlign → "
                          "box_head → box decoding, NMS → RoIAlign → mask_head → paste_masks_in_image"}

    def build(self) -> nn.Module:
        """As torchvision's builder: the v1 COCO weights were trained with batch-norm eps 0."""
        model = super().build()
        if self.params.weights == "default" and self.official is MaskRCNN_ResNet50_FPN_Weights.COCO_V1:
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eps = 0.0
        return model

    @torch.inference_mode()
    def prepare(self, frame: Frame) -> Tensor:
        """Upload, scale to 0..1, normalise and resize on the device: the model's input for this frame."""
        image = self._transform.normalize(self.upload(frame).float().div_(255))
        return self._transform.resize(image)[0]

    @torch.inference_mode()
    def infer(self, frames: Sequence[Frame], prepared: Sequence[Tensor]) -> list[Segmentation]:
        """One batched forward (GeneralizedRCNN's, minus the preprocessing done in `prepare`)."""
        model = cast(MaskRCNN, self.loaded_model())
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in prepared]
        images = ImageList(self._transform.batch_images(list(prepared), self._transform.size_divisible), sizes)
        with self.running(prepared):
            features = model.backbone(images.tensors)
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        detections = self._transform.postprocess([self._select(d) for d in detections], images.image_sizes,
                                                 [frame.size for frame in frames])
        return [self._segmentation(frame, d) for frame, d in zip(frames, detections, strict=True)]

    def _select(self, detection: dict[str, Tensor]) -> dict[str, Tensor]:
        """The detections of the wanted classes (before their masks are pasted at full size)."""
        if self._keep is None:
            return detection
        keep = self._keep[detection["labels"]]
        return {key: value[keep] for key, value in detection.items()}

    def _segmentation(self, frame: Frame, detection: dict[str, Tensor]) -> Segmentation:
        """Torchvision's output dict as a `Segmentation`, masks thresholded on the device."""
        height, width = frame.size
        return Segmentation(
            height=height, width=width, classes=self.classes,
            boxes=detection["boxes"].float().cpu().numpy(),
            scores=detection["scores"].float().cpu().numpy(),
            class_ids=detection["labels"].cpu().numpy(),
            masks=compact_masks(detection["masks"][:, 0] >= self.params.mask_threshold),
        )


class MaskRCNNV2Engine(MaskRCNNEngine):
    """torchvision `maskrcnn_resnet50_fpn_v2`: more accurate than v1 (COCO box AP 47.4 vs 37.9), 2.5x its compute."""

    name = "maskrcnn_v2"
    summary = "Mask R-CNN ResNet-50-FPN v2: more accurate than v1 (COCO box AP 47.4 vs 37.9), 2.5x compute"
    official = MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    builder = staticmethod(maskrcnn_resnet50_fpn_v2)
