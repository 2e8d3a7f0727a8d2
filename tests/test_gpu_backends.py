"""The accelerated backends on a CUDA GPU against eager torch FP32 (all `gpu`-marked: skipped without CUDA; the
TensorRT ones also without the `tensorrt` package, the ONNX Runtime one without its CUDA execution provider).

Random-init weights, 320x240 frames, model inputs of 480 px, as the torch engines' own FP16 test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from test_torch_engines import assert_fp16_agrees, build_reference, make_frame

from seg_video.core.types import Frame, Segmentation
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine

pytestmark = pytest.mark.gpu


def run(engine: TorchEngine, frames: list[Frame]) -> list[Segmentation]:
    """prepare + infer on one batch."""
    return engine.infer(frames, [engine.prepare(frame) for frame in frames])


def loaded(name: str, params: dict[str, Any]) -> TorchEngine:
    """The engine built from params and loaded."""
    engine = create_engine(name, params)
    assert isinstance(engine, TorchEngine)
    engine.load()
    return engine


def settings(name: str, tmp_path: Path) -> dict[str, Any]:
    """Saved random weights on CUDA at 480 px (Mask R-CNN: only confident detections)."""
    path = tmp_path / "state.pt"
    torch.save(build_reference(name).state_dict(), path)
    params: dict[str, Any] = {"weights": str(path), "device": "cuda", "min_size": 480}
    if name == "maskrcnn":
        params |= {"max_size": 800, "score_threshold": 0.8}
    return params


@pytest.mark.parametrize("backend", ["torch-compiled", "trt"])
@pytest.mark.parametrize("name", ["fcn", "maskrcnn"])
def test_fp16_backend_agrees_with_torch_fp32(name: str, backend: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "trt":
        pytest.importorskip("tensorrt")
        pytest.importorskip("onnx")
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    frames = [make_frame(i, width=320, height=240) for i in range(2)]
    params = settings(name, tmp_path)
    reference = loaded(name, params)
    ours = loaded(name, {**params, "backend": backend, "precision": "fp16"})
    ours.warm_up(240, 320, batch=len(frames))
    for full, half in zip(run(reference, frames), run(ours, frames), strict=True):
        assert_fp16_agrees(name, full, half, min_mask_iou=0.95)


def test_compiled_fcn_does_not_recompile_per_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = loaded("fcn", {**settings("fcn", tmp_path), "backend": "torch-compiled", "precision": "fp16"})
    caplog.set_level(logging.INFO, logger="seg_video")
    engine.warm_up(240, 320, batch=4)
    compiled = caplog.text.count("compiling")
    for count in (4, 3, 4, 2, 4):  # a short last batch falls in a bucket too
        run(engine, [make_frame(i, width=320, height=240) for i in range(count)])
    assert compiled == 1 and caplog.text.count("compiling") == 2  # bucket 4, then bucket 2


def test_trt_plans_are_cached_across_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tensorrt")
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="seg_video")
    params = {**settings("fcn", tmp_path), "backend": "trt", "precision": "fp16"}
    loaded("fcn", params).warm_up(240, 320)
    assert caplog.text.count("trt: building") == 1
    loaded("fcn", params).warm_up(240, 320)
    assert caplog.text.count("trt: building") == 1 and len(list((tmp_path / "cache" / "trt").glob("*.plan"))) == 1


def test_onnx_runtime_on_cuda_matches_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)")
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    frames = [make_frame(i, width=320, height=240) for i in range(2)]
    params = settings("fcn", tmp_path)
    ours = loaded("fcn", {**params, "backend": "onnx", "providers": ("cuda",)})
    for expected, result in zip(run(loaded("fcn", params), frames), run(ours, frames), strict=True):
        assert expected.label_map is not None and result.label_map is not None
        assert (expected.label_map == result.label_map).mean() >= 0.999
