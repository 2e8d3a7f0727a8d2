"""Live sources: cameras (OpenCV, V4L2 on Linux) and network streams (PyAV/FFmpeg), which never end on their own.

A `LiveSource` yields `Frame`s stamped with their capture time (`captured_at`, and `pts` in milliseconds since the
source started). When the camera or stream drops or stalls (no frame within the read timeout) it reconnects with
capped exponential backoff, forever, until the run's stop event is set; each outage is logged and kept in its
`SourceState`, which viewers show. `paced` plays a file (or any timed frames) at its own rate, like a camera.

Credentials never leave this module unmasked: names, log lines and errors go through `mask_credentials`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol, cast

import av
import av.container
import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.errors import MediaError
from seg_video.core.runner import Policy
from seg_video.core.text import mask_credentials, one_line
from seg_video.core.types import MILLISECONDS, Frame
from seg_video.io.video import DECODER_LIMITS, FALLBACK_FPS, VideoSource, rotate_upright

if TYPE_CHECKING:
    from seg_video.core.config import LiveSettings

log = logging.getLogger(__name__)

SourceKind = Literal["camera", "stream", "file"]
_CAMERA_PATH = re.compile(r"/dev/video\d+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
"""A URL scheme (RFC 3986): `rtsp`, `http`, and FFmpeg's nested ones such as `hls+http`."""


def source_kind(spec: str) -> SourceKind:
    """A camera (`0`, `/dev/video0`), a network stream (any `scheme://` but `file://`), or a file."""
    if (spec.isascii() and spec.isdigit()) or _CAMERA_PATH.fullmatch(spec):
        return "camera"
    scheme, sep, _ = spec.partition("://")
    return "stream" if sep and scheme.lower() != "file" and _SCHEME.fullmatch(scheme) else "file"


@dataclass
class SourceState:
    """What viewers show about a source besides its pictures: its state now and the outages so far (seconds)."""

    status: str = "live"
    gaps: list[float] = field(default_factory=list)


@dataclass
class LiveInput:
    """One source of a live run: its frames, the queue policy they get, and its (credential-free) name and state."""

    name: str
    frames: Iterable[Frame]
    policy: Policy
    fps: float | None = None
    state: SourceState = field(default_factory=SourceState)

    def close(self) -> None:
        """Release a connection that no pipeline took over (a no-op once the frames were iterated)."""
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()


class CaptureError(RuntimeError):
    """A camera cannot be opened or stopped giving frames; the message is one line."""


class _Connection(Protocol):
    """One open camera or stream: its pictures until it fails (raises) or ends (returns)."""

    fps: float | None

    def images(self) -> Iterator[npt.NDArray[np.uint8]]: ...

    def close(self) -> None: ...


class _CameraConnection:
    """A camera through OpenCV (V4L2 on Linux), asked for the configured size and rate, buffering one frame."""

    def __init__(self, device: str, settings: LiveSettings) -> None:
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        self._capture = cv2.VideoCapture(int(device) if device.isdigit() else device, backend)
        if not self._capture.isOpened():
            self._capture.release()
            raise CaptureError(f"cannot open camera {device}")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, settings.camera_width),
                            (cv2.CAP_PROP_FRAME_HEIGHT, settings.camera_height),
                            (cv2.CAP_PROP_FPS, settings.camera_fps), (cv2.CAP_PROP_BUFFERSIZE, 1)):
            if value:
                self._capture.set(prop, value)
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or None

    def images(self) -> Iterator[npt.NDArray[np.uint8]]:
        while True:
            ok, image = self._capture.read()
            if not ok:
                raise CaptureError("the camera stopped giving frames")
            yield cast(npt.NDArray[np.uint8], image)

    def close(self) -> None:
        self._capture.release()


class _StreamConnection:
    """A network stream through PyAV, opened for low delay, every blocking read bounded by the read timeout."""

    def __init__(self, url: str, settings: LiveSettings) -> None:
        options = {"fflags": "nobuffer", "flags": "low_delay", "analyzeduration": "1000000", "probesize": "1000000",
                   **DECODER_LIMITS}
        scheme = url.partition("://")[0].lower()
        if scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = settings.rtsp_transport
        elif scheme == "udp":
            options.update(overrun_nonfatal="1", fifo_size="100000")
        self._container: av.container.InputContainer = av.open(
            url, options=options, timeout=(settings.open_timeout, settings.read_timeout), metadata_errors="ignore")
        if not self._container.streams.video:
            self._container.close()
            raise CaptureError("the stream has no video")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.options = dict(DECODER_LIMITS)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None

    def images(self) -> Iterator[npt.NDArray[np.uint8]]:
        for frame in self._container.decode(self._stream):
            yield rotate_upright(cast(npt.NDArray[np.uint8], frame.to_ndarray(format="bgr24")), frame.rotation)

    def close(self) -> None:
        self._container.close()


class LiveSource:
    """A camera or network stream as an endless iterable of frames that reconnects after drops and stalls.

    `connect()` makes the first connection in the caller's thread, so a wrong address fails at once; later
    outages are retried after `reconnect_min`, doubling up to `reconnect_max` seconds, until `stop` is set.
    """

    def __init__(self, spec: str, settings: LiveSettings, *, stop: threading.Event,
                 max_frames: int | None = None) -> None:
        kind = source_kind(spec)
        if kind == "file":
            raise ValueError(f"not a camera or stream: {spec}")
        self.kind = kind
        self.name = f"camera {spec}" if kind == "camera" else mask_credentials(spec)
        self.state = SourceState(status="connecting")
        self.fps: float | None = None
        self._spec = spec
        self._settings = settings
        self._stop = stop
        self._max_frames = max_frames
        self._connection: _Connection | None = None

    def connect(self) -> None:
        """Open the first connection; raises `MediaError` with a one-line, credential-free reason."""
        try:
            self._connection = self._open()
        except (av.FFmpegError, OSError, CaptureError) as error:
            raise MediaError(f"cannot open {self.name}: {self._reason(error)}") from None
        self.fps = self._connection.fps
        self.state.status = "live"

    def close(self) -> None:
        """Close the connection opened by `connect` if iteration never took it over."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __iter__(self) -> Iterator[Frame]:
        """Frames as they arrive (reconnecting as needed) until stopped or `max_frames` were given."""
        started = last = time.monotonic()
        index = 0
        reason = "not connected"
        while not self._stop.is_set() and (self._max_frames is None or index < self._max_frames):
            connection = self._connection or self._reconnect(last, reason)
            self._connection = None
            if connection is None:
                return
            try:
                for image in connection.images():
                    last = time.monotonic()
                    yield Frame(index=index, image=image, pts=round((last - started) * 1000),
                                time_base=MILLISECONDS, source_id=self.name, captured_at=last)
                    index += 1
                    if index == self._max_frames:
                        return
                reason = "the stream ended"
            except (av.FFmpegError, OSError, CaptureError) as error:
                reason = self._reason(error)
            finally:
                connection.close()
            log.warning("%s: lost (%s); reconnecting", self.name, reason)

    def _reconnect(self, last_frame: float, reason: str) -> _Connection | None:
        """Reopen with capped exponential backoff; the gap since `last_frame` is logged and kept. None once stopped."""
        delay = self._settings.reconnect_min
        attempt = 0
        while True:
            attempt += 1
            self.state.status = f"reconnecting in {delay:.1f} s (attempt {attempt}): {reason}"
            if self._stop.wait(delay):
                return None
            try:
                connection = self._open()
            except (av.FFmpegError, OSError, CaptureError) as error:
                reason = self._reason(error)
                log.info("%s: reconnection attempt %d failed: %s", self.name, attempt, reason)
                delay = min(2 * delay, self._settings.reconnect_max)
                continue
            gap = time.monotonic() - last_frame
            self.state.gaps.append(gap)
            self.state.status = "live"
            log.warning("%s: reconnected after %.1f s without frames (%d attempt%s)", self.name, gap, attempt,
                        "" if attempt == 1 else "s")
            return connection

    def _open(self) -> _Connection:
        if self.kind == "camera":
            return _CameraConnection(self._spec, self._settings)
        return _StreamConnection(self._spec, self._settings)

    def _reason(self, error: BaseException) -> str:
        """An error as one line that names no credentials."""
        if isinstance(error, av.ExitError):
            return "no data within the timeout"
        return mask_credentials(one_line(error))


def paced(frames: Iterable[Frame]) -> Iterator[Frame]:
    """`frames` released at the rate of their timestamps, like a camera; each is stamped as captured when it was due.

    A consumer that falls behind gets the frames late but with their due times, as a camera's buffer would hand
    them over, so the latency it measures includes the wait.
    """
    clock: tuple[float, float] | None = None  # (wall time, frame time) of the first frame
    for frame in frames:
        seconds = frame.seconds if frame.seconds is not None else frame.index / FALLBACK_FPS
        if clock is None:
            clock = (time.monotonic(), seconds)
        start, origin = clock
        due = start + seconds - origin
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield replace(frame, captured_at=due)


def open_input(spec: str, settings: LiveSettings, *, policy: Literal["auto", "lossless", "live"],
               stop: threading.Event, max_frames: int | None = None) -> LiveInput:
    """One source of a live run, connected (cameras, streams) or probed (files); raises `MediaError`.

    `auto` gives cameras and streams the live policy and files the lossless one; files play at their own rate.
    """
    kind = source_kind(spec)
    chosen = Policy(policy) if policy != "auto" else (Policy.LOSSLESS if kind == "file" else Policy.LIVE)
    if kind == "file":
        video = VideoSource(spec, max_frames=max_frames)
        return LiveInput(name=spec, frames=paced(video), policy=chosen, fps=video.info.fps,
                         state=SourceState(status="playing"))
    source = LiveSource(spec, settings, stop=stop, max_frames=max_frames)
    source.connect()
    return LiveInput(name=source.name, frames=source, policy=chosen, fps=source.fps, state=source.state)


def open_inputs(specs: Sequence[str], settings: LiveSettings, *, policy: Literal["auto", "lossless", "live"],
                stop: threading.Event, max_frames: int | None = None) -> list[LiveInput]:
    """Every source of a live run, opened in turn; if one fails, those already open are closed again."""
    inputs: list[LiveInput] = []
    try:
        for spec in specs:
            inputs.append(open_input(spec, settings, policy=policy, stop=stop, max_frames=max_frames))
    except BaseException:
        for opened in inputs:
            opened.close()
        raise
    return inputs
