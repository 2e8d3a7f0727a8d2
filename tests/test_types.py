"""The values that flow: compact instance masks round-trip to full masks exactly, and a segmentation checks what it
is given."""

from __future__ import annotations

import numpy as np
import pytest

from seg_video.core.types import ClassTable, InstanceMasks, Segmentation, SegmentationError, boxes_from_masks

THINGS = ClassTable(("a", "b"))


def random_masks(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """`count` full masks of scattered blobs, one of them empty."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, height, width), bool)
    for mask in masks[1:]:
        y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
        block = mask[y:y + rng.integers(1, 30), x:x + rng.integers(1, 30)]
        block[:] = rng.random(block.shape) > 0.3
        mask[rng.integers(0, height), rng.integers(0, width)] = True
    return masks


def test_compact_masks_round_trip_to_full_masks_exactly() -> None:
    full = random_masks(12, 72, 96, seed=5)
    compact = InstanceMasks.from_full(full)
    np.testing.assert_array_equal(compact.full(), full)
    np.testing.assert_array_equal(compact.boxes, boxes_from_masks(full))
    assert compact.crops[0].shape == (0, 0) and compact.areas().tolist() == full.sum(axis=(1, 2)).tolist()
    assert sum(crop.size for crop in compact.crops) < full.size / 4  # the cost follows the objects, not the frame
    picked = compact[np.array([5, 2, 7])]
    np.testing.assert_array_equal(picked.full(), full[[5, 2, 7]])
    np.testing.assert_array_equal(compact[compact.areas() > 50].full(), full[full.sum(axis=(1, 2)) > 50])
    for index in range(12):
        np.testing.assert_array_equal(compact.window(index, 10, 5, 60, 70), full[index, 5:70, 10:60])


def test_crops_over_loose_boxes_are_trimmed_to_tight_ones() -> None:
    crop = np.zeros((10, 12), bool)
    crop[3:6, 4:9] = True
    masks = InstanceMasks.from_crops(50, 60, np.array([[20, 30, 32, 40]]), [crop])
    assert masks.boxes.tolist() == [[24, 33, 29, 36]] and masks.crops[0].all()
    full = np.zeros((1, 50, 60), bool)
    full[0, 33:36, 24:29] = True
    np.testing.assert_array_equal(masks.full(), full)
    with pytest.raises(SegmentationError, match="does not fit its box"):
        InstanceMasks.from_crops(50, 60, np.array([[20, 30, 32, 40]]), [np.ones((3, 3), bool)])
    with pytest.raises(SegmentationError, match="does not fit its box"):
        InstanceMasks(50, 60, np.array([[50, 40, 70, 45]]), [np.ones((5, 20), bool)])  # out of the frame


def test_a_segmentation_takes_full_or_compact_masks_and_checks_them() -> None:
    full = random_masks(3, 40, 50, seed=1)
    given = Segmentation(40, 50, THINGS, boxes=boxes_from_masks(full), scores=[1, 1, 1], class_ids=[0, 1, 0],
                         masks=full)
    assert isinstance(given.masks, InstanceMasks)
    np.testing.assert_array_equal(given.full_masks(), full)
    np.testing.assert_array_equal(given.select(np.array([True, False, True])).full_masks(), full[[0, 2]])
    with pytest.raises(SegmentationError, match="masks have shape"):
        Segmentation(40, 50, THINGS, boxes=boxes_from_masks(full), scores=[1, 1, 1], class_ids=[0, 1, 0],
                     masks=full[:, :30])
    with pytest.raises(SegmentationError, match="2 masks of a 50x40 frame for 3 instances"):
        Segmentation(40, 50, THINGS, boxes=boxes_from_masks(full), scores=[1, 1, 1], class_ids=[0, 1, 0],
                     masks=InstanceMasks.from_full(full[:2]))
    assert Segmentation.empty(40, 50, THINGS).full_masks().shape == (0, 40, 50)
