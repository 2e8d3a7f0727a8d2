"""The real-time semantic engines (lraspp, deeplabv3_mobilenet) on the CPU: eager torch against torchvision called
directly, every CPU backend against eager torch, their exports through the TensorRT operator check, the CLI end to
end; on a CUDA GPU (`gpu`-marked), TensorRT and compiled FP16 against eager FP32.

Random init leaves MobileNetV3's activations near zero (every pixel gets the same class), so each reference model's
BatchNorm statistics are measured on the test frames first: random weights, label maps with many classes. The
DeepLabV3 reference keeps its auxiliary head, as torchvision's checkpoint does, so loading also drops it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from test_neural_cli import frame_count
from test_torch_engines import MIN_SIZE, build_reference, make_frame, reference_labels, run
from torch import nn

from seg_video.cli.main import main
from seg_video.core.types import Frame, Segmentation
from seg_video.engines.base import create_engine, engine_class
from seg_video.engines.models.mobile import DeepLabV3MobileEngine, LRASPPEngine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.choice import missing
from seg_video.engines.runners.graphs import Sidecar
from seg_video.engines.runners.onnx_ops import operators, trt_problems
from seg_video.engines.runners.opencv import OPENCV_MAJOR
from seg_video.io.sample import write_sample_clip

NAMES = ["lraspp", "deeplabv3_mobilenet"]
ENGINES = {"lraspp": LRASPPEngine, "deeplabv3_mobilenet": DeepLabV3MobileEngine}


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [make_frame(i) for i in range(3)]


def calibrated(name: str, frames: list[Frame]) -> nn.Module:
    """torchvision's seeded random model for `name`, its BatchNorm statistics measured on `frames`, in eval mode."""
    model = build_reference(name, **({"aux_loss": True} if name == "deeplabv3_mobilenet" else {}))
    transform = ENGINES[name].official.transforms(resize_size=MIN_SIZE)
    images = torch.stack([transform(torch.from_numpy(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1))
                          for frame in frames])
    for norm in (module for module in model.modules() if isinstance(module, nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None  # the plain mean and variance over the batch
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.fixture(scope="module")
def references(frames: list[Frame], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    """Each engine's calibrated reference model and its saved state dict."""
    found = {}
    for name in NAMES:
        model = calibrated(name, frames)
        path = tmp_path_factory.mktemp(name) / "state.pt"
        torch.save(model.state_dict(), path)
        found[name] = (model, path)
    return found


@pytest.fixture(scope="module")
def engines(module_cache: Path, references: dict[str, tuple[nn.Module, Path]]) -> Callable[[str, str], TorchEngine]:
    """`engines(name, backend)`: the engine on its reference's weights, on the CPU, loaded once."""
    built: dict[tuple[str, str], TorchEngine] = {}

    def get(name: str, backend: str) -> TorchEngine:
        if (name, backend) not in built:
            engine = create_engine(name, {"device": "cpu", "min_size": MIN_SIZE, "weights": str(references[name][1]),
                                          "backend": backend})
            assert isinstance(engine, TorchEngine)
            engine.load()
            built[name, backend] = engine
        return built[name, backend]

    return get


def same_labels(ours: Segmentation, theirs: Segmentation) -> float:
    """The share of pixels whose labels agree, checking both label maps are there and not one class."""
    assert ours.label_map is not None and theirs.label_map is not None
    assert ours.label_map.shape == theirs.label_map.shape
    assert len(np.unique(theirs.label_map)) > 2, "a label map of one or two classes would prove little"
    return float((ours.label_map == theirs.label_map).mean())


@pytest.mark.parametrize("name", NAMES)
def test_eager_equals_torchvision(name: str, engines: Callable[[str, str], TorchEngine],
                                  references: dict[str, tuple[nn.Module, Path]], frames: list[Frame]) -> None:
    engine = engines(name, "torch")
    assert not any(key.startswith("aux_classifier.") for key in engine.loaded_model().state_dict())
    for frame, ours in zip(frames, run(engine, frames), strict=True):
        expected = Segmentation(height=120, width=160, classes=engine.classes,
                                label_map=reference_labels(references[name][0], frame).astype(np.uint8))
        assert same_labels(ours, expected) >= 0.999


@pytest.mark.parametrize("backend", [
    "onnx",
    pytest.param("opencv", marks=pytest.mark.skipif(OPENCV_MAJOR < 5, reason="OpenCV 4.x refuses these exports")),
    pytest.param("torch-compiled", marks=pytest.mark.skipif(missing("torch-compiled", torch.device("cpu")) is not None,
                                                            reason="torch-compiled does not run on the CPU here")),
])
@pytest.mark.parametrize("name", NAMES)
def test_backend_matches_eager_torch(name: str, backend: str, engines: Callable[[str, str], TorchEngine],
                                     frames: list[Frame]) -> None:
    mixed = [*frames[:2], make_frame(3, width=120, height=96)]  # a batch of 2, another size: dynamic batch, H, W
    for ours, expected in zip(run(engines(name, backend), mixed), run(engines(name, "torch"), mixed), strict=True):
        assert same_labels(ours, expected) >= 0.99


@pytest.mark.parametrize("name", NAMES)
def test_exports_pass_the_tensorrt_operator_check(name: str, engines: Callable[[str, str], TorchEngine],
                                                  module_cache: Path) -> None:
    onnx = pytest.importorskip("onnx")
    engines(name, "onnx")
    (folder,) = (path for path in (module_cache / "onnx").glob(f"{name}-fp32-*") if ".partial-" not in path.name)
    (part,) = Sidecar.read(folder).parts
    assert part.name == ENGINES[name].part_name and part.file == f"{part.name}.onnx"
    graph = onnx.load(str(folder / part.file))
    assert trt_problems(graph) == []
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Resize"} <= set(operators(graph))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_follow_the_official_weights(name: str) -> None:
    engine = create_engine(name, {"device": "cpu"})
    assert isinstance(engine, TorchEngine)
    assert engine.params.min_size == 520  # torchvision's published transform for both
    assert engine.preprocessing()["resize"]["shorter_side"] == 520
    assert engine.classes == create_engine("fcn", {"device": "cpu"}).classes
    assert engine_class(name).needs == engine_class("fcn").needs


@pytest.mark.parametrize(("name", "backend"), [("lraspp", "onnx"), ("deeplabv3_mobilenet", "torch")])
def test_cli_annotates_a_clip(name: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    clip = write_sample_clip(tmp_path / "clip.mp4", seconds=6 / 30.0, width=160, height=120, fps=30.0)
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    assert main([str(clip), str(out), "--engine", name, "--backend", backend, "--weights", "none", "--min-size",
                 "96", "--semantic", "overlay", "--masks-dir", str(masks), "--quiet"]) == 0
    assert frame_count(out) == 6 and len(list(masks.glob("*.png"))) == 6


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch-compiled", "trt"])
@pytest.mark.parametrize("name", NAMES)
def test_fp16_backend_agrees_with_torch_fp32(name: str, backend: str, frames: list[Frame],
                                             references: dict[str, tuple[nn.Module, Path]], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """≥ 95 % of labels equal: a random model's scores are close calls (these references run all in FP16 on a CPU
    agree 96-99 % with FP32; trained weights agree more)."""
    if backend == "trt":
        pytest.importorskip("tensorrt")
        pytest.importorskip("onnx")
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    params: dict[str, Any] = {"weights": str(references[name][1]), "device": "cuda", "min_size": MIN_SIZE}
    results = {}
    for precision, chosen in (("fp32", "torch"), ("fp16", backend)):
        engine = create_engine(name, {**params, "precision": precision, "backend": chosen})
        assert isinstance(engine, TorchEngine)
        engine.load()
        engine.warm_up(120, 160, batch=len(frames))
        results[precision] = run(engine, frames)
    for full, half in zip(results["fp32"], results["fp16"], strict=True):
        assert same_labels(half, full) >= 0.95
