"""The `torch-compiled` backend on the CPU (inductor's C++ backend, FP32), through the CLI against eager torch; its
owning thread and fixed row counts; and the stream-ordering logic every accelerated backend shares (the real CUDA
streams are checked in test_gpu_backends).

Compiling dominates (about a minute a model on 2 cores), so each model is compiled once, in one CLI run that is
checked for everything: results, and no Dynamo compile after the warm-up. Random-init weights, a 160x120 clip.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from test_torch_engines import KEPT_DETECTIONS, assert_same_instances, build_reference
from torch import Tensor, nn
from torch._dynamo.utils import counters

from seg_video.cli.main import main
from seg_video.core.types import Segmentation
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.base import ordered
from seg_video.engines.runners.choice import missing, resolve_backend
from seg_video.engines.runners.compiled import CompiledRunner, cpp_compiler, owner
from seg_video.engines.runners.graphs import Part
from seg_video.io.sample import write_sample_clip

pytestmark = pytest.mark.skipif(cpp_compiler() is None, reason="inductor's CPU backend needs a C++ compiler")

FRAMES = 8
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_clip(tmp_path_factory.mktemp("compiled") / "tiny.mp4", seconds=FRAMES / 30.0, width=160,
                             height=120, fps=30.0)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    """Each test compiles its own graphs: none reused from an earlier test's modules of the same classes."""
    torch._dynamo.reset()


def graphs() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture
def warm_ups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`graphs()` after each warm-up of a torch engine from now on (the real `warm_up`, observed)."""
    seen: list[int] = []
    warm_up = TorchEngine.warm_up

    def observed(engine: TorchEngine, height: int, width: int, batch: int = 1) -> None:
        warm_up(engine, height, width, batch)
        seen.append(graphs())

    monkeypatch.setattr(TorchEngine, "warm_up", observed)
    return seen


def run_cli(clip: Path, engine: str, backend: str, weights: Path, *args: str) -> None:
    """`seg-video CLIP --no-video` on the CPU with saved random weights; asserts it succeeded."""
    assert main([str(clip), "--no-video", "--no-track", "--quiet", "--engine", engine, "--backend", backend,
                 "--device", "cpu", "--weights", str(weights), *args]) == 0


def label_maps(folder: Path) -> list[np.ndarray]:
    """The label-map PNGs of `--masks-dir`, in frame order."""
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]


def coco_frames(path: Path, count: int) -> list[Segmentation]:
    """The instances of a `--coco` file, one `Segmentation` per frame (masks decoded from their RLE)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    classes = create_engine("maskrcnn", {"device": "cpu"}).classes
    frames = []
    for index in range(count):
        found = [a for a in data["annotations"] if a["image_id"] == index + 1]
        height, width = found[0]["segmentation"]["size"] if found else (0, 0)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in found)], np.float32)
        masks = np.array([mask_utils.decode({**a["segmentation"], "counts": a["segmentation"]["counts"].encode()})
                          for a in found], bool).reshape(len(found), height, width)
        frames.append(Segmentation(height=height, width=width, classes=classes, boxes=boxes,
                                   scores=np.array([a["score"] for a in found], np.float32),
                                   class_ids=np.array([a["category_id"] for a in found], np.int64), masks=masks))
    return frames


def test_fcn_compiled_through_the_cli_matches_eager_torch_and_compiles_only_at_warm_up(
        tiny_clip: Path, tmp_path: Path, warm_ups: list[int]) -> None:
    weights = tmp_path / "fcn.pt"
    torch.save(build_reference("fcn").state_dict(), weights)
    before = graphs()
    for backend in ("torch", "torch-compiled"):  # batches of 3, 3 and a short last one of 2
        run_cli(tiny_clip, "fcn", backend, weights, "--min-size", "120", "--batch", "3",
                "--masks-dir", str(tmp_path / backend))
    (warmed,) = warm_ups[1:]  # after the eager run's warm-up (which has nothing to do on the CPU)
    assert warmed > before and graphs() == warmed
    eager, compiled = label_maps(tmp_path / "torch"), label_maps(tmp_path / "torch-compiled")
    assert len(eager) == len(compiled) == FRAMES
    for expected, result in zip(eager, compiled, strict=True):
        assert len(np.unique(expected)) > 1, "a one-class label map would prove nothing"
        assert (result == expected).mean() >= 0.99


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools's decode, numpy 2
def test_maskrcnn_compiled_through_the_cli_gives_eager_detections_and_compiles_only_at_warm_up(
        tiny_clip: Path, tmp_path: Path, warm_ups: list[int]) -> None:
    weights = tmp_path / "maskrcnn.pt"
    torch.save(build_reference("maskrcnn").state_dict(), weights)
    sizes = ["--min-size", "96", "--param", "max_size=128", "--max-frames", "3", "--batch", "2"]  # batches: 2, 1
    run_cli(tiny_clip, "maskrcnn", "torch", weights, *sizes, "--score-threshold", "0.0",
            "--coco", str(tmp_path / "eager.json"))
    everything = coco_frames(tmp_path / "eager.json", 3)
    scores = np.sort(everything[0].scores)[::-1]  # keep KEPT_DETECTIONS on frame 0, no score near the cut-off
    threshold = float(scores[KEPT_DETECTIONS - 1:KEPT_DETECTIONS + 1].mean())
    before = graphs()
    run_cli(tiny_clip, "maskrcnn", "torch-compiled", weights, *sizes, "--score-threshold", str(threshold),
            "--coco", str(tmp_path / "compiled.json"))
    (warmed,) = warm_ups[1:]
    assert warmed > before and graphs() == warmed
    compiled = coco_frames(tmp_path / "compiled.json", 3)
    counts = [len(frame) for frame in compiled]
    assert counts[0] == KEPT_DETECTIONS and counts[0] + counts[1] != counts[2]  # the mask head saw two row counts
    for result, expected in zip(compiled, everything, strict=True):
        assert_same_instances(result, expected.select(expected.scores > threshold), atol=0.02)  # COCO rounds


class Probe(nn.Module):
    """A 1x1 convolution that notes, outside the compiled graph, every thread its forward runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.threads: set[int] = set()

    def forward(self, x: Tensor) -> tuple[Tensor]:
        note_thread(self.threads)
        return (self.conv(x).relu(),)


@torch._dynamo.disable
def note_thread(threads: set[int]) -> None:
    threads.add(threading.get_ident())


def probe_runner(module: Probe, rows: tuple[int, int]) -> CompiledRunner:
    """`module` compiled as a part with `rows` rows per image (typical, most)."""
    return CompiledRunner(Part("probe", module, ("x",), ("y",), (torch.zeros(2, 3, 4, 4),), rows=rows), "fp32", CPU)


def test_compiled_parts_are_entered_only_from_the_owning_thread() -> None:
    torch.manual_seed(0)
    module = Probe().eval()
    runner = probe_runner(module, (2, 5))  # rows are boxes: dim 0 dynamic on the CPU
    inputs = {rows: torch.randn(rows, 3, 4, 4) for rows in (0, 1, 3, 7, 12)}
    results: dict[tuple[int, int], Tensor] = {}

    def work(worker: int) -> None:
        with torch.inference_mode():
            for rows, x in inputs.items():
                (results[worker, rows],) = runner(x)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    work(3)
    for thread in threads:
        thread.join()
    assert module.threads == {owner().thread.ident} and owner().thread.ident != threading.get_ident()
    with torch.inference_mode():
        for (_, rows), result in results.items():
            torch.testing.assert_close(result, module.conv(inputs[rows]).relu())
    assert len(results) == 4 * len(inputs)


def test_image_parts_are_padded_to_the_runs_batch() -> None:
    torch.manual_seed(0)
    module = Probe().eval()
    runner = probe_runner(module, (1, 1))
    runner.fit_batch(4)
    before = graphs()
    with torch.inference_mode():
        for rows in (4, 1, 3, 0, 4, 2):  # a short last batch runs at the batch's shape
            x = torch.randn(rows, 3, 4, 4)
            (result,) = runner(x)
            torch.testing.assert_close(result, module.conv(x).relu())
        assert graphs() == before + 1
        (result,) = runner(torch.randn(6, 3, 4, 4))  # more than the batch: the fixed count grows, once
        assert result.shape[0] == 6 and graphs() == before + 2
        runner(torch.randn(5, 3, 4, 4))
    assert graphs() == before + 2


class Scale(nn.Module):
    """Its input times two: one small graph per input shape."""

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (x * 2,)


def test_parts_sharing_a_forward_compile_past_dynamos_default_limit_of_eight() -> None:
    before = graphs()
    with torch.inference_mode():
        for width in range(1, 11):  # ten parts (or frame sizes) on one class's forward
            runner = CompiledRunner(Part("scale", Scale(), ("x",), ("y",), (torch.zeros(1, 3, 2, width),)), "fp32",
                                    CPU)
            for _ in range(2):
                x = torch.randn(1, 3, 2, width)
                torch.testing.assert_close(runner(x)[0], x * 2)
    assert graphs() == before + 10  # each compiled once: none left to run eagerly
    assert not [key for key in counters["unimplemented"] if "recompile limit" in key.lower()]


class FakeStream:
    """Records `wait_stream` calls into a shared log: the ordering logic alone (a supplement to the GPU test)."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name = name
        self.log = log

    def wait_stream(self, stream: Any) -> None:
        self.log.append((self.name, stream.name))


def test_engine_stream_waits_for_the_caller_and_the_caller_for_it_after() -> None:
    log: list[tuple[str, str]] = []
    caller, engine = FakeStream("caller", log), FakeStream("engine", log)
    with ordered(caller, engine):
        log.append(("block", ""))
    assert log == [("engine", "caller"), ("block", ""), ("caller", "engine")]
    log.clear()
    with pytest.raises(ValueError), ordered(caller, engine):
        raise ValueError("the block failed")
    assert log == [("engine", "caller"), ("caller", "engine")]  # the caller's stream still waits


def test_compiled_backend_is_offered_on_the_cpu_but_not_chosen_by_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing("torch-compiled", CPU) is None
    assert resolve_backend("auto", CPU)[0] in ("onnx", "torch")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert "C++ compiler" in (missing("torch-compiled", CPU) or "")
