"""Shared test set-up: small real clips of the sample scene (written once per session) and the `gpu` marker."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import UdpStream, free_port, need

from seg_video.io.sample import write_sample_clip

CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS, CLIP_SECONDS = 320, 240, 30.0, 2.0
"""Size and timing of the session clips (60 frames; the VFR clip has 40 over the same span)."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the `gpu` marker."""
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` when CUDA is not available (torch is imported only if such tests were collected)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test module's own seg-video cache folder (`SEG_VIDEO_CACHE` points there while the module runs), so its
    exports are made once and found by every test of the module."""
    folder = tmp_path_factory.mktemp("seg-video-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEG_VIDEO_CACHE", str(folder))
        yield folder


def _clip(factory: pytest.TempPathFactory, name: str, **options: Any) -> Path:
    """Write a session clip of the sample scene into its own temporary folder."""
    return write_sample_clip(factory.mktemp("media") / name, seconds=CLIP_SECONDS, width=CLIP_WIDTH,
                             height=CLIP_HEIGHT, fps=CLIP_FPS, **options)


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 320x240, 30 fps H.264 MP4 with an AAC tone track (read-only: tests must not change it)."""
    return _clip(tmp_path_factory, "sample.mp4")


@pytest.fixture(scope="session")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `sample_clip`, but frames last 1/30 s and 1/15 s in turn (variable frame rate)."""
    return _clip(tmp_path_factory, "vfr.mp4", vfr=True)


@pytest.fixture(scope="session")
def pcm_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `sample_clip`, but Matroska with 16-bit PCM audio (which MP4 outputs must re-encode)."""
    return _clip(tmp_path_factory, "pcm.mkv", audio_codec="pcm_s16le")


@pytest.fixture(scope="session")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `sample_clip`, without an audio stream."""
    return _clip(tmp_path_factory, "silent.mp4", audio=False)


@pytest.fixture
def udp_stream(sample_clip: Path) -> Iterator[UdpStream]:
    """The sample clip looped in real time over UDP on loopback (FFmpeg), stopped after the test."""
    need("ffmpeg", "ffmpeg")
    stream = UdpStream(sample_clip, free_port(socket.SOCK_DGRAM))
    stream.start()
    yield stream
    stream.stop()
