"""The torchvision engines (maskrcnn, maskrcnn_v2, fcn, fcn101; lraspp and deeplabv3_mobilenet in
test_mobile_engines) on CPU with random-init weights at small sizes.

Each reference model is torchvision's builder called directly (seeded random init), its state dict saved once per
module; the engines load that file, so parity also covers `weights=PATH`. Frames are 160x120 BGR.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.error import URLError

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from tool_modules import load_tool
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.segmentation import (
    FCN_ResNet50_Weights,
    deeplabv3_mobilenet_v3_large,
    fcn_resnet50,
    fcn_resnet101,
    lraspp_mobilenet_v3_large,
)

from seg_video.core.errors import ConfigError, EngineError
from seg_video.core.types import Frame, Segmentation, boxes_from_masks
from seg_video.engines.base import Engine, create_engine, engine_class
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.models.weights import cached_path

MIN_SIZE, MAX_SIZE = 128, 224
BUILDERS = {"maskrcnn": maskrcnn_resnet50_fpn, "maskrcnn_v2": maskrcnn_resnet50_fpn_v2, "fcn": fcn_resnet50,
            "fcn101": fcn_resnet101, "lraspp": lraspp_mobilenet_v3_large,
            "deeplabv3_mobilenet": deeplabv3_mobilenet_v3_large}
KEPT_DETECTIONS = 12
"""Detections the Mask R-CNN tests keep on the first frame (threshold midway between the 12th and 13th best score):
enough to compare, cheap to mask, and no score near the cut-off."""

agreement = load_tool("_agreement")  # match and mask_iou, shared with tools/gpu_check.py
match, mask_iou = agreement.match, agreement.mask_iou


def make_frame(index: int, width: int = 160, height: int = 120) -> Frame:
    """A textured BGR frame with a few solid shapes that move with `index`."""
    rng = np.random.default_rng(index)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 0)
    cv2.rectangle(image, (10 + 7 * index, 15), (70 + 7 * index, 90), (40, 40, 220), -1)
    cv2.circle(image, (115, 60 - 4 * index), 28, (200, 160, 30), -1)
    return Frame(index=index, image=image)


def rgb_tensor(frame: Frame) -> torch.Tensor:
    """The frame as a torchvision user feeds it: RGB float (3,H,W) in 0..1."""
    return TF.to_tensor(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))


def build_reference(name: str, **settings: Any) -> nn.Module:
    """torchvision's builder, random init with a fixed seed, in eval mode."""
    torch.manual_seed(0)
    return BUILDERS[name](weights=None, weights_backbone=None, **settings).eval()


def run(engine: Engine, frames: list[Frame]) -> list[Segmentation]:
    """The engine's prepare + infer on one batch."""
    return engine.infer(frames, [engine.prepare(frame) for frame in frames])


def loaded(name: str, **params: Any) -> Engine:
    """An engine built from params on the CPU and loaded."""
    engine = create_engine(name, {"device": "cpu", "min_size": MIN_SIZE, **params})
    engine.load()
    return engine


def assert_same_instances(ours: Segmentation, theirs: Segmentation, *, atol: float = 1e-3) -> None:
    """Same instance set: paired by box, equal boxes/labels/scores (within atol), masks IoU ≥ 0.99."""
    pairs = match(ours, theirs, min_iou=0.99)
    assert len(ours) == len(theirs) == len(pairs)
    if not pairs:
        return
    i, j = (list(index) for index in zip(*pairs, strict=True))
    np.testing.assert_allclose(ours.boxes[i], theirs.boxes[j], atol=atol)
    np.testing.assert_allclose(ours.scores[i], theirs.scores[j], atol=atol)
    assert ours.masks is not None and theirs.masks is not None
    assert min(mask_iou(ours.full_masks()[a], theirs.full_masks()[b]) for a, b in pairs) >= 0.99


def reference_instances(model: nn.Module, frame: Frame) -> Segmentation:
    """torchvision's Mask R-CNN called directly on the frame, as a `Segmentation`."""
    with torch.inference_mode():
        out = model([rgb_tensor(frame)])[0]
    height, width = frame.size
    return Segmentation(height=height, width=width, classes=create_engine("maskrcnn", {"device": "cpu"}).classes,
                        boxes=out["boxes"].numpy(), scores=out["scores"].numpy(), class_ids=out["labels"].numpy(),
                        masks=(out["masks"][:, 0] >= 0.5).numpy())


def reference_labels(model: nn.Module, frame: Frame) -> np.ndarray:
    """torchvision's FCN called directly with its weights' own transform; logits resized to the frame, argmax."""
    transform = FCN_ResNet50_Weights.DEFAULT.transforms(resize_size=MIN_SIZE)
    image = torch.from_numpy(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
    with torch.inference_mode():
        logits = model(transform(image)[None])["out"]
    return F.interpolate(logits, size=frame.size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


def calibrated(name: str, frame: Frame, **sizes: int) -> tuple[nn.Module, float]:
    """A random Mask R-CNN and the score threshold midway between its `KEPT_DETECTIONS`-th and next best score on
    `frame` (a fixed threshold keeps none, or all, of a random model's scores), set in the model."""
    model = build_reference(name, box_score_thresh=0.0, box_detections_per_img=KEPT_DETECTIONS + 1, **sizes)
    threshold = agreement.threshold_keeping(reference_instances(model, frame).scores, KEPT_DETECTIONS)
    model.roi_heads.score_thresh = threshold
    return model, threshold


def cuda_settings(name: str, folder: Path, frames: list[Frame]) -> dict[str, Any]:
    """Saved random weights on CUDA at 480 px; Mask R-CNN calibrated to keep about `KEPT_DETECTIONS` on the first
    frame."""
    path = folder / "state.pt"
    params: dict[str, Any] = {"weights": str(path), "device": "cuda", "min_size": 480}
    if name == "fcn":
        torch.save(build_reference(name).state_dict(), path)
        return params
    model, threshold = calibrated(name, frames[0], min_size=480, max_size=800)
    torch.save(model.state_dict(), path)
    return params | {"max_size": 800, "score_threshold": threshold}


@dataclass
class Case:
    """A reference torchvision model, its saved state dict, and our engine loaded from that file."""

    name: str
    model: nn.Module
    path: Path
    params: dict[str, Any]
    engine: Engine


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [make_frame(i) for i in range(3)]


@pytest.fixture(scope="module")
def case(frames: list[Frame], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Case]:
    """The `Case` of an engine name, built on first use and kept for the module."""

    @cache
    def build(name: str) -> Case:
        path = tmp_path_factory.mktemp(name) / "state.pt"
        if engine_class(name).kind == "semantic":
            model = build_reference(name)
            params: dict[str, Any] = {"weights": str(path), "output": "label_map"}
        else:  # keep about KEPT_DETECTIONS on the first frame
            model, threshold = calibrated(name, frames[0], min_size=MIN_SIZE, max_size=MAX_SIZE)
            model.roi_heads.detections_per_img = 100  # the builder's default, as in the engine
            params = {"weights": str(path), "score_threshold": threshold, "max_size": MAX_SIZE}
        torch.save(model.state_dict(), path)
        return Case(name, model, path, params, loaded(name, **params))

    return build


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """An empty torch hub dir, and downloads that fail like a machine without network; yields (dir, URLs asked)."""
    previous = torch.hub.get_dir()
    hub = tmp_path / "hub"
    asked: list[str] = []

    def no_network(url: str, *args: Any, **kwargs: Any) -> None:
        asked.append(url)
        raise URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    torch.hub.set_dir(str(hub))
    yield hub, asked
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("name", ["maskrcnn", "maskrcnn_v2"])
def test_instance_output_equals_torchvision(name: str, case: Callable[[str], Case], frames: list[Frame]) -> None:
    ours = run(case(name).engine, frames[:1])[0]
    assert len(ours) > 0, "an empty set would prove nothing"
    assert_same_instances(ours, reference_instances(case(name).model, frames[0]))
    assert ours.masks is not None and ours.full_masks().shape == (len(ours), 120, 160)
    assert ours.boxes.dtype == np.float32 and ours.class_ids.dtype == np.int64


@pytest.mark.parametrize("name", ["fcn", "fcn101"])
def test_semantic_output_equals_torchvision(name: str, case: Callable[[str], Case], frames: list[Frame]) -> None:
    for frame in frames:
        expected = reference_labels(case(name).model, frame)
        ours = run(case(name).engine, [frame])[0]
        assert ours.label_map is not None and ours.label_map.shape == (120, 160)
        assert len(np.unique(expected)) > 1, "a one-class label map would prove nothing"
        assert (ours.label_map == expected).mean() >= 0.999


def test_instance_batch_equals_single(case: Callable[[str], Case], frames: list[Frame]) -> None:
    engine = case("maskrcnn").engine
    singles = [run(engine, [frame])[0] for frame in frames]
    batched = run(engine, frames)
    assert len({len(s) for s in singles}) > 1, "frames with the same count would not show the order"
    for result, single in zip(batched, singles, strict=True):
        assert_same_instances(result, single, atol=1e-2)


@pytest.mark.parametrize("name", ["fcn", "fcn101"])
def test_semantic_batch_equals_single(name: str, case: Callable[[str], Case], frames: list[Frame]) -> None:
    engine = case(name).engine
    mixed = [*frames, make_frame(3, width=120, height=96)]  # a size change splits the batch in two forwards
    for result, frame in zip(run(engine, mixed), mixed, strict=True):
        single = run(engine, [frame])[0]
        assert result.label_map is not None and single.label_map is not None
        assert (result.label_map == single.label_map).mean() >= 0.999


def test_prepare_runs_ahead_of_load(case: Callable[[str], Case], frames: list[Frame]) -> None:
    engine = create_engine("fcn", {"device": "cpu", "min_size": MIN_SIZE, **case("fcn").params})
    prepared = [engine.prepare(frame) for frame in frames]  # the preprocess thread may start before the model loads
    engine.load()
    for ours, expected in zip(engine.infer(frames, prepared), run(case("fcn").engine, frames), strict=True):
        np.testing.assert_array_equal(ours.label_map, expected.label_map)


def test_instance_class_filter(case: Callable[[str], Case], frames: list[Frame]) -> None:
    everything = run(case("maskrcnn").engine, frames[:1])[0]
    ids, counts = np.unique(everything.class_ids, return_counts=True)
    wanted = ids[np.argsort(counts)[::-1][:2]]
    names = tuple(everything.classes.name(int(i)) for i in wanted)
    filtered = run(loaded("maskrcnn", **case("maskrcnn").params, classes=names), frames[:1])[0]
    assert len(filtered) > 0
    assert_same_instances(filtered, everything.select(np.isin(everything.class_ids, wanted)))


def test_fcn_output_modes_and_class_filter(case: Callable[[str], Case], frames: list[Frame]) -> None:
    fcn = case("fcn")
    labels = run(fcn.engine, frames[:1])[0].label_map
    assert labels is not None and labels.dtype == np.uint8
    instances = run(loaded("fcn", weights=str(fcn.path), output="instances"), frames[:1])[0]
    present = [c for c in np.unique(labels) if c != 0]
    assert instances.label_map is None and instances.masks is not None
    assert sorted(instances.class_ids.tolist()) == present
    full = instances.full_masks()
    for class_id, mask, box, score in zip(instances.class_ids, full, instances.boxes, instances.scores, strict=True):
        np.testing.assert_array_equal(mask, labels == class_id)
        np.testing.assert_array_equal(box, boxes_from_masks(mask[None])[0])
        assert 0.0 < score <= 1.0
    kept = present[0]
    filtered = run(loaded("fcn", weights=str(fcn.path), classes=(instances.classes.name(int(kept)),)),
                   frames[:1])[0].label_map
    assert filtered is not None
    np.testing.assert_array_equal(filtered, np.where(labels == kept, kept, 0))


def test_class_tables() -> None:
    coco, voc = (create_engine(name, {"device": "cpu"}).classes for name in ("maskrcnn", "fcn"))
    assert len(coco.names) == 91 and sum(n is not None for n in coco.names) == 80 and coco.names[1] == "person"
    assert len(voc.names) == 21 and sum(n is not None for n in voc.names) == 20 and voc.names[15] == "person"


def use_as_cached_official(name: str, weights: Path) -> None:
    """Put `weights` where torch hub keeps the engine's official weights file."""
    cls = engine_class(name)
    assert issubclass(cls, TorchEngine)
    cached = cached_path(cls.official)
    cached.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(weights, cached)


def test_default_weights_are_read_from_the_hub_cache(offline_hub: tuple[Path, list[str]],
                                                     case: Callable[[str], Case], frames: list[Frame]) -> None:
    hub, asked = offline_hub
    assert "weights not cached" in engine_class("fcn").availability()
    use_as_cached_official("fcn", case("fcn").path)
    assert f"weights cached at {hub / 'checkpoints'}" in engine_class("fcn").availability()
    engine = loaded("fcn", output="label_map")
    assert not asked
    np.testing.assert_array_equal(run(engine, frames[:1])[0].label_map, reference_labels(case("fcn").model,
                                                                                          frames[0]))


def test_maskrcnn_v1_official_weights_load_as_torchvision_does(offline_hub: tuple[Path, list[str]],
                                                                case: Callable[[str], Case], tmp_path: Path) -> None:
    frozen = tmp_path / "frozen.pt"  # torchvision's v1 checkpoint comes from FrozenBatchNorm2d: no batch counters
    state = {k: v for k, v in case("maskrcnn").model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, frozen)
    use_as_cached_official("maskrcnn", frozen)
    engine = loaded("maskrcnn")
    assert isinstance(engine, TorchEngine)
    norms = [m for m in engine.loaded_model().modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 0.0 for m in norms)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_missing_weights_offline_is_one_clear_line(name: str, offline_hub: tuple[Path, list[str]]) -> None:
    hub, asked = offline_hub
    engine = create_engine(name, {"device": "cpu"})
    with pytest.raises(EngineError) as caught:
        engine.load()
    message = str(caught.value)
    assert asked, "the engine should have tried to download"
    assert "\n" not in message
    assert str(hub / "checkpoints") in message and "Network is unreachable" in message
    assert "--weights PATH" in message and "--weights none" in message and "threshold" in message


class Payload:
    """Pickles to a call that would create `marker` if anything ever unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (shutil.copyfile, (os.devnull, str(self.marker)))


@pytest.mark.parametrize("kind", ["whole model", "payload via torch.save", "payload via pickle"])
def test_pickled_objects_are_refused_and_never_run(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pt"
    if kind == "whole model":
        torch.save(nn.Sequential(nn.Conv2d(3, 4, 3)), path)
    elif kind == "payload via torch.save":
        torch.save({"backbone.body.conv1.weight": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    engine = create_engine("fcn", {"device": "cpu", "weights": str(path)})
    with pytest.raises(EngineError, match=r"refusing weights .* only state dicts load") as caught:
        engine.load()
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_files_that_are_not_fitting_state_dicts(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(EngineError, match="not a state dict"):
        create_engine("fcn", {"device": "cpu", "weights": str(path)}).load()
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), path)
    with pytest.raises(EngineError, match=r"do not fit fcn: .*missing"):
        create_engine("fcn", {"device": "cpu", "weights": str(path)}).load()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match=r"refusing weights .* not a plain pickle of tensors"):
        create_engine("fcn", {"device": "cpu", "weights": str(path)}).load()
    path.write_bytes(b"")
    with pytest.raises(EngineError, match="cannot read weights"):
        create_engine("fcn", {"device": "cpu", "weights": str(path)}).load()


def test_fp16_needs_cuda() -> None:
    with pytest.raises(EngineError, match="fp16 needs a CUDA GPU"):
        create_engine("maskrcnn", {"device": "cpu", "precision": "fp16"})
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="fp16 needs a CUDA GPU"):
            create_engine("fcn", {"precision": "fp16"})  # device auto resolves to the CPU here
        with pytest.raises(EngineError, match="no CUDA GPU"):
            create_engine("fcn", {"device": "cuda:0"})


@pytest.mark.parametrize(("params", "message"), [
    ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ({"classes": ["person", "persn"]}, "unknown class 'persn'; known: person, bicycle"),
    ({"score_threshold": 1.5}, "score_threshold must be between 0 and 1"),
    ({"min_size": 8}, "min_size must be 32..4096"),
    ({"min_size": 1400}, r"max_size \(1333\) must be at least min_size"),
    ({"weights": "no/such/file.pt"}, "is not a file"),
    ({"output": "label_map"}, "unknown setting engine.maskrcnn.output"),
])
def test_bad_settings_are_config_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_engine("maskrcnn", params)


def test_availability_names_weights_and_cuda(offline_hub: tuple[Path, list[str]]) -> None:
    for name in BUILDERS:
        line = engine_class(name).availability()
        assert line.startswith("weights not cached (download ~") and "--weights PATH" in line
        assert "CUDA: " in line


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["maskrcnn", "fcn"])
def test_cuda_fp16_agrees_with_fp32(name: str, tmp_path: Path) -> None:
    frames = [make_frame(i, width=320, height=240) for i in range(2)]
    params = cuda_settings(name, tmp_path, frames)
    results = {}
    for precision in ("fp32", "fp16"):
        engine = create_engine(name, {**params, "precision": precision})
        engine.load()
        results[precision] = run(engine, frames)
    for full, half in zip(results["fp32"], results["fp16"], strict=True):
        assert_fp16_agrees(name, full, half)


FP16_MATCHED, FP16_MASK_IOU = 0.5, 0.8
"""What a random-initialised Mask R-CNN keeps in FP16 of its FP32 result: its class scores and mask logits crowd the
cut-offs, so FP16 rounding flips whole detections and mask pixels (measured on an H200, 320x240, a dozen
detections: autocast 11 of 11 matched at mask IoU 0.91; pure FP16 compiled 7 of 11; at 720p 54 of 60, IoU 0.84).
Exactness of the compiled path is checked in FP32 (tests/test_gpu_backends.py)."""


def assert_agrees(name: str, reference: Segmentation, ours: Segmentation, *, min_matched: float = 0.9,
                  min_mask_iou: float = 0.97) -> None:
    """A result against the reference one: FCN ≥ 99 % of labels equal; Mask R-CNN at least `min_matched` of the
    instances matched by box, matched masks' IoU ≥ `min_mask_iou` (over all matched instances' pixels: tiny masks do
    not dominate)."""
    if name == "fcn":
        assert agreement.label_agreement(ours, reference) >= 0.99
        return
    found = agreement.instance_agreement(ours, reference, min_box_iou=0.8)
    assert found.reference > 0 and found.matched_fraction >= min_matched and found.mask_iou >= min_mask_iou


def assert_fp16_agrees(name: str, full: Segmentation, half: Segmentation) -> None:
    """An FP16 result against the FP32 one, within what FP16 keeps of a random model (`FP16_MATCHED`)."""
    assert_agrees(name, full, half, min_matched=FP16_MATCHED, min_mask_iou=FP16_MASK_IOU)
