"""`seg-video IN OUT` end to end on real generated media, and every bad-input case the CLI promises to refuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from seg_video.cli.main import main
from seg_video.io.sample import SampleScene, write_sample_clip

WIDTH, HEIGHT, FPS, SECONDS = 320, 240, 30.0, 2.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 320×240 H.264 clip with AAC audio and moving shapes (the sample scene)."""
    path = tmp_path_factory.mktemp("media") / "in.mp4"
    return write_sample_clip(path, seconds=SECONDS, width=WIDTH, height=HEIGHT, fps=FPS)


def decode(path: Path) -> tuple[list[np.ndarray], list[float], float | None]:
    """All frames (BGR), their times in seconds, and the audio stream's duration (None without audio)."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_seconds = None
        if audio is not None and audio.duration is not None:
            audio_seconds = float(audio.duration * audio.time_base)
        images, times = [], []
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.pts * frame.time_base))
    return images, times, audio_seconds


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


def test_annotates_a_clip_keeping_frames_timing_and_audio(clip: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    assert run_cli(clip, out, "--engine", "motion", "--crf", "12", "--param", "warmup=5") == 0

    in_images, in_times, in_audio = decode(clip)
    out_images, out_times, out_audio = decode(out)
    assert len(out_images) == len(in_images) == int(SECONDS * FPS)
    assert out_times == pytest.approx(in_times, abs=1e-3)
    assert in_audio is not None and out_audio is not None
    assert out_audio == pytest.approx(in_audio, abs=0.1)
    assert f"{len(in_images)} frames" in capsys.readouterr().err

    scene = SampleScene(WIDTH, HEIGHT, FPS)
    for index in (30, 45, 59):  # after the background model's warm-up
        masks = scene.render(index)[1]
        objects = masks.any(axis=0)
        change = np.abs(out_images[index].astype(int) - in_images[index].astype(int)).max(axis=2)
        assert np.median(change[objects]) > 20, "objects are drawn over"
        background = change[~annotation_area(masks)]  # re-encoding noise only (CRF 12 over the input's CRF 18)
        assert np.percentile(background, 99) <= 8 and background.max() <= 20, "the background is untouched"


def annotation_area(masks: np.ndarray, margin: int = 6, label_height: int = 24, label_width: int = 100) -> np.ndarray:
    """Where drawing may happen: the box around each group of touching objects (as a motion engine merges
    them), a few pixels of slack for a mask found at reduced scale, and a label band at the box's top, which
    the renderer may shift left to keep it inside the frame."""
    grown = cv2.dilate(masks.any(axis=0).astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    count, _, boxes, _ = cv2.connectedComponentsWithStats(grown)
    area = np.zeros(masks.shape[1:], bool)
    for left, top, width, height, _ in boxes[1:count]:
        band_left = max(0, min(left, left + width - label_width))
        area[max(0, top - label_height): top + height, band_left: max(left + width, left + label_width)] = True
    return area


def test_list_engines_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--list-engines") == 0
    listing = capsys.readouterr().out
    for name in ("threshold", "edges", "kmeans", "region", "motion"):
        assert name in listing
    with pytest.raises(SystemExit) as exited:
        run_cli("--help")
    assert exited.value.code == 0
    assert "--engine" in capsys.readouterr().out


def test_make_sample_writes_a_clip_and_refuses_to_clobber(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.mp4"
    assert run_cli("--make-sample", sample) == 0
    images, _, audio = decode(sample)
    assert len(images) > 30 and audio is not None
    before = sample.read_bytes()
    assert run_cli("--make-sample", sample) == 2
    assert "output exists" in capsys.readouterr().err
    assert sample.read_bytes() == before


def expect_refusal(capsys: pytest.CaptureFixture[str], args: list[str | Path], message: str) -> None:
    """The CLI exits 2 with one `seg-video: error:` line containing `message`, and no traceback."""
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("seg-video: error: ")
    assert message in lines[0]


def test_refuses_a_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    expect_refusal(capsys, [tmp_path / "nope.mp4", out], "input not found")
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"hello, this is not a video\n" * 40])
def test_refuses_a_non_media_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(content)
    out = tmp_path / "out.mp4"
    expect_refusal(capsys, [fake, out], "not a media file")
    assert not out.exists()
    assert fake.read_bytes() == content


def test_refuses_a_file_without_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio_only = tmp_path / "tone.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = tmp_path / "out.mp4"
    expect_refusal(capsys, [audio_only, out], "no video stream")
    assert not out.exists()


def test_refuses_to_write_over_the_input(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    before = clip.read_bytes()
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    monkeypatch.chdir(clip.parent)
    for out in (clip, link, Path("in.mp4"), Path(".") / ".." / clip.parent.name / "in.mp4"):
        expect_refusal(capsys, [clip, out, "--overwrite"], "is the input file")
    assert clip.read_bytes() == before


def test_refuses_an_existing_output_without_overwrite(clip: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    expect_refusal(capsys, [clip, out], "output exists")
    assert out.read_bytes() == b"precious"
    assert run_cli(clip, out, "--overwrite", "--max-frames", "5", "--quiet") == 0
    assert len(decode(out)[0]) == 5


def test_refuses_a_missing_or_unwritable_output_folder(clip: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    expect_refusal(capsys, [clip, tmp_path / "missing" / "out.mp4"], "output folder does not exist")
    expect_refusal(capsys, [clip, Path("/proc/seg-video-out.mp4")], "not writable")
    if os.geteuid() != 0:  # root writes anywhere; /proc above covers it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        expect_refusal(capsys, [clip, locked / "out.mp4"], "not writable")


def test_refuses_unknown_engines_and_bad_settings(clip: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    expect_refusal(capsys, [clip, out, "--engine", "magic"], "unknown engine 'magic'")
    expect_refusal(capsys, [clip, out, "--param", "nonsense=1"], "engine.motion.nonsense")
    expect_refusal(capsys, [clip, out, "--engine", "threshold", "--param", "method=psychic"], "method")
    config = tmp_path / "bad.toml"
    config.write_text("[render]\nalpha = 3.0\n")
    expect_refusal(capsys, [clip, out, "--config", config], "alpha")
    config.write_text("[render]\ncolour = 'red'\n")
    expect_refusal(capsys, [clip, out, "--config", config], "render.colour")
    config.write_text("[render\n")
    expect_refusal(capsys, [clip, out, "--config", config], "not valid TOML")
    expect_refusal(capsys, [clip, out, "--config", "no-such-preset"], "config not found")
    expect_refusal(capsys, [clip, out, "--max-frames", "0"], "--max-frames")
    expect_refusal(capsys, [clip, out, "--crf", "99"], "crf")
    assert not out.exists()


def test_presets_load_and_run(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from seg_video.core.config import preset_names

    for preset in preset_names():
        out = tmp_path / f"{preset}.mp4"
        if preset.endswith("-trt-fp16"):  # CUDA presets: run where CUDA is (compiled torch: no TensorRT here)
            gpu_run = [clip, out, "--config", preset, "--weights", "none", "--backend", "torch-compiled"]
            if not torch.cuda.is_available():
                expect_refusal(capsys, gpu_run, "CUDA")
                continue
            assert run_cli(*gpu_run, "--max-frames", "3", "--quiet") == 0, preset
        else:
            assert run_cli(clip, out, "--config", preset, "--max-frames", "3", "--quiet") == 0, preset
        assert len(decode(out)[0]) == 3


def test_a_decode_error_mid_file_finalizes_what_was_written(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = write_sample_clip(tmp_path / "whole.mkv", seconds=2.0, width=WIDTH, height=HEIGHT, fps=FPS)
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 4000] = os.urandom(4000)  # garbage in the middle of the stream
    broken = tmp_path / "broken.mkv"
    broken.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"

    code = run_cli(broken, out, "--quiet")

    images = decode(out)[0]
    if code == 0:  # FFmpeg concealed the damage: every frame still came out
        assert len(images) >= int(SECONDS * FPS) - 10
    else:
        assert code == 1
        err = capsys.readouterr().err.strip()
        assert "frame" in err and err.count("\n") == 0
        assert 0 < len(images) < int(SECONDS * FPS)


def test_ctrl_c_finalizes_a_playable_output(tmp_path: Path) -> None:
    long_clip = write_sample_clip(tmp_path / "long.mp4", seconds=20.0, width=WIDTH, height=HEIGHT, fps=FPS)
    out = tmp_path / "out.mp4"
    process = subprocess.Popen([sys.executable, "-m", "seg_video", str(long_clip), str(out), "--quiet",
                                "--preset", "medium"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)

    assert process.returncode == 130, err
    written = int(err.split("interrupted; ")[1].split(" frames")[0])
    images = decode(out)[0]
    assert 0 < written < int(20 * FPS)
    assert len(images) == written
