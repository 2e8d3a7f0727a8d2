"""Shared pieces of the live tests: an engine with a set cost, a synthetic camera, FFmpeg on loopback, waiting."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from seg_video.core.runner import Policy
from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.base import Engine
from seg_video.io.sample import SampleScene
from seg_video.io.streams import LiveInput, paced


class SlowEngine(Engine):
    """Finds nothing, taking `cost` seconds per call (asleep, like a GPU-bound model): the latency tests' load."""

    name = "slow"
    kind: ClassVar[Literal["instance", "semantic"]] = "instance"

    def __init__(self, cost: float) -> None:
        self.cost = cost

    @property
    def classes(self) -> ClassTable:
        return ClassTable(("thing",))

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        time.sleep(self.cost)
        return [Segmentation.empty(frame.size[0], frame.size[1], self.classes) for frame in frames]


def scene_frames(count: int, *, source_id: str = "0", fps: float = 30.0, width: int = 160,
                 height: int = 120) -> Iterator[Frame]:
    """`count` frames of the sample scene with timestamps at `fps` (not paced: see `camera`)."""
    scene = SampleScene(width, height, fps)
    for index in range(count):
        yield Frame(index=index, image=scene.render(index)[0], pts=index, time_base=Fraction(1, round(fps)),
                    source_id=source_id)


def camera(name: str, seconds: float, policy: Policy, **options: Any) -> LiveInput:
    """A synthetic 30 fps camera of the sample scene, delivering in real time for `seconds`."""
    return LiveInput(name=name, frames=paced(scene_frames(round(seconds * 30), source_id=name, **options)),
                     policy=policy, fps=30.0)


@dataclass
class Published:
    """What the publish stage saw: per frame, its source and index, when it was captured and published."""

    source: str
    index: int
    captured_at: float
    published_at: float

    @property
    def latency(self) -> float:
        return self.published_at - self.captured_at


class Recorder:
    """An `on_frame` callback that keeps a `Published` per frame (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[Published] = []
        self._lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        with self._lock:
            self.items.append(Published(frame.source_id, frame.index, frame.captured_at, time.monotonic()))

    def of(self, source: str) -> list[Published]:
        with self._lock:
            return [item for item in self.items if item.source == source]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on now (TCP, or UDP with `socket.SOCK_DGRAM`)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def need(binary: str, package: str) -> str:
    """The binary's path, or skip the test saying which Debian package provides it."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"needs {binary} (Debian package {package}; .ci/run installs it)")
    return path


class FfmpegStream:
    """FFmpeg sending `clip` in a loop, in real time, as H.264 in MPEG-TS to `target` (its `url` is what a source
    opens); restartable. Subclasses say where and how."""

    url: str
    target: str
    extra: tuple[str, ...] = ()

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [need("ffmpeg", "ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
             str(self.clip), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "15",
             "-f", "mpegts", *self.extra, self.target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None


class UdpStream(FfmpegStream):
    """The clip sent over UDP to 127.0.0.1:`port`."""

    def __init__(self, clip: Path, port: int) -> None:
        super().__init__(clip)
        self.port = port
        self.url = f"udp://127.0.0.1:{port}"
        self.target = f"{self.url}?pkt_size=1316"


class HttpStream(FfmpegStream):
    """The clip served over HTTP at 127.0.0.1:`port` to one client; nothing listens there before `start` (or after
    `stop`)."""

    extra = ("-listen", "1")

    def __init__(self, clip: Path, port: int) -> None:
        super().__init__(clip)
        self.url = self.target = f"http://127.0.0.1:{port}/live.ts"
