"""The accelerated backends on a CUDA GPU against eager torch FP32 (all `gpu`-marked: skipped without CUDA; the
TensorRT ones also without the `tensorrt` package, the ONNX Runtime one without its CUDA execution provider).

Random-init weights, 320x240 frames, model inputs of 480 px, as the torch engines' own FP16 test (its
`cuda_settings`: Mask R-CNN calibrated to keep about a dozen detections). Also the stream order every accelerated
backend relies on (`on_stream`), on real CUDA streams.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from test_torch_engines import assert_agrees, assert_fp16_agrees, cuda_settings, make_frame, run
from torch._dynamo.utils import counters

from seg_video.core.types import Frame
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.base import on_stream

pytestmark = pytest.mark.gpu


def loaded(name: str, params: dict[str, Any]) -> TorchEngine:
    """The engine built from params and loaded."""
    engine = create_engine(name, params)
    assert isinstance(engine, TorchEngine)
    engine.load()
    return engine


def graphs() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    return int(counters["stats"]["unique_graphs"])


def frames_of(*counts: int) -> list[list[Frame]]:
    """Batches of 320x240 frames of these sizes."""
    return [[make_frame(i, width=320, height=240) for i in range(count)] for count in counts]


def test_on_stream_orders_the_engine_stream_after_the_caller_and_the_caller_after_it() -> None:
    stream = torch.cuda.Stream()
    spin = int(2e8)  # GPU cycles a kernel spins: ~0.1 s, so a read that does not wait sees the old values
    x = torch.ones(1 << 20, device="cuda")
    out = torch.zeros_like(x)
    torch.cuda.synchronize()
    torch.cuda._sleep(spin)  # on the caller's (default) stream: the input is written late
    x.mul_(3)
    with on_stream(stream, [x]):
        out.copy_(x * 2)  # on the engine's stream, which must wait for the input first
        torch.cuda._sleep(spin)
        out.add_(1)  # written late on the engine's stream
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.equal(out.cpu(), torch.full((1 << 20,), 7.0))  # read on the caller's stream, after the block


def settings(name: str, tmp_path: Path) -> dict[str, Any]:
    """`cuda_settings` for the first frame of `frames_of`."""
    return cuda_settings(name, tmp_path, frames_of(1)[0])


@pytest.mark.parametrize("backend", ["torch-compiled", "trt"])
@pytest.mark.parametrize("name", ["fcn", "maskrcnn"])
def test_fp16_backend_agrees_with_torch_fp32(name: str, backend: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "trt":
        pytest.importorskip("tensorrt")
        pytest.importorskip("onnx")
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    batch, short = frames_of(2, 1)
    params = settings(name, tmp_path)
    reference = loaded(name, params)
    ours = loaded(name, {**params, "backend": backend, "precision": "fp16"})
    ours.warm_up(240, 320, batch=len(batch))
    warmed = graphs()
    for frames in (batch, short):  # a short last batch runs at the warmed shapes (Mask R-CNN: other head rows)
        for full, half in zip(run(reference, frames), run(ours, frames), strict=True):
            assert_fp16_agrees(name, full, half)
    assert graphs() == warmed  # Dynamo compiled nothing after the warm-up


@pytest.mark.parametrize("name", ["fcn", "maskrcnn"])
def test_compiled_fp32_gives_eager_fp32_results(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled machinery (padded rows, CUDA graphs, the owner thread, stream order) without FP16's rounding, and
    without TF32 on either side: what eager torch gives, detection for detection."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    batch, short = frames_of(2, 1)
    params = settings(name, tmp_path)
    reference = loaded(name, params)
    ours = loaded(name, {**params, "backend": "torch-compiled"})
    ours.warm_up(240, 320, batch=len(batch))
    for frames in (batch, short):
        for expected, result in zip(run(reference, frames), run(ours, frames), strict=True):
            assert_agrees(name, expected, result, min_matched=0.9, min_mask_iou=0.97)


def test_compiled_fcn_warmed_in_one_thread_runs_in_another_without_compiling(tmp_path: Path) -> None:
    engine = loaded("fcn", {**settings("fcn", tmp_path), "backend": "torch-compiled", "precision": "fp16"})
    before = graphs()
    engine.warm_up(240, 320, batch=4)  # here, as a program that loads an engine for its pipelines does
    warmed = graphs()
    batches = frames_of(4, 3, 4, 2, 4)  # short batches are padded to the warmed batch of 4
    with ThreadPoolExecutor(1) as pool:  # another thread, as the pipeline's infer stage
        results = pool.submit(lambda: [run(engine, frames) for frames in batches]).result()
    assert warmed > before and graphs() == warmed
    again = run(engine, batches[3])  # here again: the same graphs, the same labels
    for first, second in zip(results[3], again, strict=True):
        assert first.label_map is not None and second.label_map is not None
        assert (first.label_map == second.label_map).mean() >= 0.999


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
