"""How far two segmentations of the same frame agree: label maps pixel by pixel, instances paired by box (shared by
the engine tests and tools/gpu_check.py, which report FP16 against FP32), and the score threshold that keeps a
random Mask R-CNN's best few."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torchvision.ops import box_iou

from seg_video.core.types import Segmentation


def match(ours: Segmentation, theirs: Segmentation, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one pairs of same-class instances whose boxes overlap best (at least `min_iou`), greedy by IoU."""
    iou = box_iou(torch.from_numpy(ours.boxes), torch.from_numpy(theirs.boxes))
    iou[torch.from_numpy(ours.class_ids[:, None] != theirs.class_ids[None, :])] = 0
    pairs = []
    while iou.numel() and iou.max() >= min_iou:
        i, j = divmod(int(iou.argmax()), iou.shape[1])
        pairs.append((i, j))
        iou[i, :] = 0
        iou[:, j] = 0
    return pairs


def mask_iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def threshold_keeping(scores: npt.NDArray[np.floating], kept: int) -> float:
    """The score threshold midway between the `kept`-th best score and the next, so that `kept` detections stay and
    none sits at the cut-off (a random model's scores crowd together); 0 when there are no more than `kept`."""
    ranked = np.sort(scores)[::-1]
    return float(ranked[kept - 1:kept + 1].mean()) if len(ranked) > kept else 0.0


def label_agreement(ours: Segmentation, theirs: Segmentation) -> float:
    """The fraction of pixels given the same class in both label maps."""
    assert ours.label_map is not None and theirs.label_map is not None
    return float((ours.label_map == theirs.label_map).mean())


@dataclass(frozen=True)
class InstanceAgreement:
    """Instances of one result paired with a reference's: how many, and how well their masks overlap."""

    reference: int
    """Instances in the reference."""
    compared: int
    """Instances in the result compared with it."""
    matched: int
    """Pairs of the same class whose boxes overlap at least the IoU asked for."""
    mask_iou: float
    """IoU over all matched masks' pixels together (tiny masks do not dominate); 1.0 when nothing matched."""

    @property
    def matched_fraction(self) -> float:
        """Matched pairs per reference instance (1.0 for an empty reference)."""
        return self.matched / self.reference if self.reference else 1.0


def instance_agreement(ours: Segmentation, reference: Segmentation, min_box_iou: float = 0.8) -> InstanceAgreement:
    """`ours` against `reference`: instances paired by box (same class, IoU ≥ `min_box_iou`), their masks compared."""
    pairs = match(ours, reference, min_iou=min_box_iou)
    overlap = 1.0
    if pairs:
        ours_masks, reference_masks = ours.full_masks(), reference.full_masks()
        assert ours_masks is not None and reference_masks is not None
        overlap = mask_iou(ours_masks[[i for i, _ in pairs]], reference_masks[[j for _, j in pairs]])
    return InstanceAgreement(reference=len(reference), compared=len(ours), matched=len(pairs), mask_iou=overlap)
