"""Real-time semantic engines on MobileNetV3-Large (torchvision): LR-ASPP and DeepLabV3, the same 20 Pascal VOC
classes as FCN at a fraction of its compute (2.1 and 10.5 GFLOPs at 520 px against FCN-ResNet50's 153), so a CPU
can run them live.

They are FCN's shape of model (images → `out` logits at the input size), so they are FCN's engine with another
builder and weights: the same preprocessing (the weights' own transform), backends, outputs and class filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchvision.models import WeightsEnum
from torchvision.models.segmentation import (
    DeepLabV3_MobileNet_V3_Large_Weights,
    LRASPP_MobileNet_V3_Large_Weights,
    deeplabv3_mobilenet_v3_large,
    lraspp_mobilenet_v3_large,
)

from seg_video.engines.models.fcn import FCNEngine, FCNParams

LRASPP_WEIGHTS = LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
DEEPLABV3_WEIGHTS = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1


def official_min_size(weights: WeightsEnum) -> int:
    """The shorter side the weights' own transform resizes frames to (torchvision's `resize_size`)."""
    (size,) = weights.transforms().resize_size
    return int(size)


@dataclass
class LRASPPParams(FCNParams):
    """LR-ASPP settings: FCN's, with the official LR-ASPP transform's input size."""

    min_size: int = official_min_size(LRASPP_WEIGHTS)
    """The shorter side the official LR-ASPP transform resizes to (520); live on a CPU, 256 or less keeps up."""


@dataclass
class DeepLabV3MobileParams(FCNParams):
    """DeepLabV3-MobileNet settings: FCN's, with the official DeepLabV3-MobileNet transform's input size."""

    min_size: int = official_min_size(DEEPLABV3_WEIGHTS)
    """The shorter side the official DeepLabV3-MobileNet transform resizes to (520)."""


class LRASPPEngine(FCNEngine):
    """torchvision `lraspp_mobilenet_v3_large`: the fastest semantic engine, near real time on a CPU."""

    name = "lraspp"
    summary = ("LR-ASPP MobileNetV3-Large semantic segmentation, 20 Pascal VOC classes: real time on a CPU "
               "(VOC mIoU 57.9 vs fcn's 60.5 at 1/70 of its compute)")
    Params = LRASPPParams
    official = LRASPP_WEIGHTS
    builder = staticmethod(lraspp_mobilenet_v3_large)
    part_name = "lraspp"

    def model_settings(self) -> dict[str, Any]:
        """Nothing: LR-ASPP has no auxiliary head (its builder refuses `aux_loss`)."""
        return {}


class DeepLabV3MobileEngine(FCNEngine):
    """torchvision `deeplabv3_mobilenet_v3_large`: FCN-ResNet50's accuracy at 1/15 of its compute; the auxiliary
    training head is dropped like FCN's."""

    name = "deeplabv3_mobilenet"
    summary = ("DeepLabV3 MobileNetV3-Large semantic segmentation, 20 Pascal VOC classes: fcn's accuracy "
               "(VOC mIoU 60.3 vs 60.5) at 1/15 of its compute, 5x lraspp's")
    Params = DeepLabV3MobileParams
    official = DEEPLABV3_WEIGHTS
    builder = staticmethod(deeplabv3_mobilenet_v3_large)
    part_name = "deeplabv3"
