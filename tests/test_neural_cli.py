"""`seg-video` end to end with each neural engine: random-init weights, a tiny clip, CPU."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from seg_video.cli.main import main
from seg_video.io.sample import write_sample_clip

FRAMES = 8


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("neural") / "tiny.mp4"
    return write_sample_clip(path, seconds=FRAMES / 30.0, width=160, height=120, fps=30.0)


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


MASKRCNN = ["--score-threshold", "0.0", "--param", "max_size=128", "--max-frames", "2"]
"""Random-init Mask R-CNN keeps 100 detections a frame at threshold 0: two frames keep the test quick."""


@pytest.mark.parametrize(("args", "frames"), [
    (["--engine", "maskrcnn", "--batch", "2", *MASKRCNN], 2),
    (["--engine", "maskrcnn_v2", *MASKRCNN], 2),
    (["--engine", "fcn", "--semantic", "overlay", "--batch", "3"], FRAMES),
    (["--engine", "fcn101", "--semantic", "labels"], FRAMES),
    (["--engine", "fcn", "--semantic", "instances"], FRAMES),
], ids=["maskrcnn-batch2", "maskrcnn_v2", "fcn-overlay-batch3", "fcn101-labels", "fcn-instances"])
def test_each_neural_engine_annotates_a_clip(tiny_clip: Path, tmp_path: Path, args: list[str], frames: int) -> None:
    out = tmp_path / "out.mp4"
    assert main([str(tiny_clip), str(out), "--weights", "none", "--min-size", "96", "--quiet", *args]) == 0
    assert frame_count(out) == frames


def test_missing_weights_offline_is_one_line_and_writes_nothing(tiny_clip: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import torch.hub

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    torch_home = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    out = tmp_path / "out.mp4"

    assert main([str(tiny_clip), str(out), "--engine", "fcn", "--quiet"]) == 2

    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("seg-video: error: ")
    assert str(torch_home) in err and "--weights" in err and "motion" in err
    assert not out.exists()


def test_fp16_on_cpu_is_refused(tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    assert main([str(tiny_clip), str(out), "--engine", "fcn", "--weights", "none", "--device", "cpu",
                 "--precision", "fp16"]) == 2
    assert "fp16" in capsys.readouterr().err
    assert not out.exists()
