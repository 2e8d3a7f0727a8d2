"""Live sources: cameras (OpenCV, V4L2 on Linux) and network streams (PyAV/FFmpeg), which never end on their own.

A `LiveSource` yields `Frame`s stamped with their capture time (`captured_at`, and `pts` in milliseconds since its
frames began). When the camera or stream drops or stalls (no frame within the read timeout) it reconnects with
capped exponential backoff, forever, until the run's stop event is set; each outage is logged and kept in its
`SourceState`, which viewers show. `paced` plays a file (or any timed frames) at its own rate, like a camera.

`open_inputs` opens a run's sources: files are probed (a bad one fails at once), cameras and streams connect all
at the same time. One that cannot connect is logged and kept, "connecting" with the same backoff while the others
run, and joins when it comes up; only a run where nothing at all opened fails. A `SourceGroup` ties such a
source to the rest of its run: once every source that did start has ended, it stops trying.

Status stems, shown by the window and the web view: "connecting" (never connected yet), "live", "playing"
(files), "reconnecting in 2.0 s (attempt 3): <reason>", "ended" (set by the job).

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

GROUP_POLL = 0.2
"""Seconds between looks at whether a connecting source's group has ended, while it waits to retry."""
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


class SourceGroup:
    """The sources of one live run that keep it going: files, and cameras or streams once connected, until each
    ends. A source that never connected gives up when `ended` is set, so a dead camera cannot hold open a run whose
    other sources are all over (played to the end, `--max-frames` reached)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self.ended = threading.Event()
        """Set whenever no source of the group is running (after at least one was)."""

    def join(self) -> None:
        """Count one more source as running."""
        with self._lock:
            self._running += 1
            self.ended.clear()

    def leave(self) -> None:
        """One running source has ended."""
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self.ended.set()

    def running(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """`frames` of a source that joined, leaving the group when they end or are closed."""
        try:
            yield from frames
        finally:
            self.leave()


class LiveSource:
    """A camera or network stream as an endless iterable of frames that connects late and reconnects after drops.

    `connect()` makes the first connection in the caller's thread, so a wrong address fails at once. Iterating a
    source whose `connect` failed keeps trying ("connecting"); later outages ("reconnecting") are retried alike,
    after `reconnect_min`, doubling up to `reconnect_max` seconds, until `stop` is set. With a `group`, a source
    still connecting gives up once the group has ended.
    """

    def __init__(self, spec: str, settings: LiveSettings, *, stop: threading.Event,
                 max_frames: int | None = None, group: SourceGroup | None = None) -> None:
        kind = source_kind(spec)
        if kind == "file":
            raise ValueError(f"not a camera or stream: {spec}")
        self.kind = kind
        self.name = f"camera {spec}" if kind == "camera" else mask_credentials(spec)
        self.state = SourceState(status="connecting")
        self.fps: float | None = None
        self.open_error: str | None = None
        """Why `connect` failed (one line, credential-free); None if it worked or was not called."""
        self._spec = spec
        self._settings = settings
        self._stop = stop
        self._max_frames = max_frames
        self._group = group
        self._holding = False
        self._created = time.monotonic()
        self._connection: _Connection | None = None

    def connect(self) -> None:
        """Open the first connection; raises `MediaError` with a one-line, credential-free reason."""
        try:
            connection = self._open()
        except (av.FFmpegError, OSError, CaptureError) as error:
            self.open_error = self._reason(error)
            raise MediaError(f"cannot open {self.name}: {self.open_error}") from None
        self._connection = connection
        self._first_connected(connection)

    def close(self) -> None:
        """Close the connection opened by `connect` if iteration never took it over."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._let_go()

    def __iter__(self) -> Iterator[Frame]:
        """Frames as they arrive (connecting and reconnecting as needed) until stopped or `max_frames` were given."""
        try:
            connection = self._connection or self._first_connection()
            self._connection = None
            started = last = time.monotonic()
            index = 0
            while connection is not None:
                try:
                    for image in connection.images():
                        last = time.monotonic()
                        yield Frame(index=index, image=image, pts=round((last - started) * 1000),
                                    time_base=MILLISECONDS, source_id=self.name, captured_at=last)
                        index += 1
                        if index == self._max_frames or self._stop.is_set():
                            return
                    reason = "the stream ended"
                except (av.FFmpegError, OSError, CaptureError) as error:
                    reason = self._reason(error)
                finally:
                    connection.close()
                if self._stop.is_set():
                    return
                log.warning("%s: lost (%s); reconnecting", self.name, reason)
                connection = self._reconnect(last, reason)
        finally:
            self._let_go()

    def _first_connection(self) -> _Connection | None:
        """Keep trying a source that never connected (`connect` was attempt 1); None once stopped or given up."""
        opened = self._retry(self.open_error or "not connected", first=True)
        if opened is None:
            return None
        connection, _ = opened
        self._first_connected(connection)
        log.warning("%s: connected after %.1f s", self.name, time.monotonic() - self._created)
        return connection

    def _reconnect(self, last_frame: float, reason: str) -> _Connection | None:
        """Reopen after an outage; the gap since `last_frame` is logged and kept. None once stopped."""
        opened = self._retry(reason, first=False)
        if opened is None:
            return None
        connection, attempt = opened
        gap = time.monotonic() - last_frame
        self.state.gaps.append(gap)
        self.state.status = "live"
        log.warning("%s: reconnected after %.1f s without frames (%d attempt%s)", self.name, gap, attempt,
                    "" if attempt == 1 else "s")
        return connection

    def _retry(self, reason: str, *, first: bool) -> tuple[_Connection, int] | None:
        """Open again with capped exponential backoff, the state saying so; the connection and its attempt number,
        or None once stopped (or, while `first`, once the source's group has ended)."""
        verb = "connecting" if first else "reconnecting"
        delay = self._settings.reconnect_min
        attempt = 1 if first else 0  # a first connection's attempt 1 was `connect`
        while True:
            attempt += 1
            self.state.status = f"{verb} in {delay:.1f} s (attempt {attempt}): {reason}"
            if self._pause(delay, give_up=first):
                return None
            try:
                return self._open(), attempt
            except (av.FFmpegError, OSError, CaptureError) as error:
                reason = self._reason(error)
                # Outages are told attempt by attempt; a source down from the start was told once, by `open_inputs`.
                log.log(logging.DEBUG if first else logging.INFO, "%s: %s attempt %d failed: %s", self.name,
                        "connection" if first else "reconnection", attempt, reason)
                delay = min(2 * delay, self._settings.reconnect_max)

    def _pause(self, seconds: float, *, give_up: bool) -> bool:
        """Wait `seconds`; True as soon as the run stops or, with `give_up`, the source's group has ended."""
        deadline = time.monotonic() + seconds
        while not (give_up and self._group is not None and self._group.ended.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._stop.wait(min(left, GROUP_POLL)):
                return True
        return True

    def _first_connected(self, connection: _Connection) -> None:
        """Note the first connection: its rate, the state, and a place among the group's running sources."""
        self.fps = connection.fps
        self.state.status = "live"
        if self._group is not None:
            self._group.join()
            self._holding = True

    def _let_go(self) -> None:
        """Leave the group (once) when this source, having run, ends or is closed."""
        if self._holding and self._group is not None:
            self._group.leave()
            self._holding = False

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
    if source_kind(spec) == "file":
        return _file_input(spec, policy, max_frames, None)
    source = LiveSource(spec, settings, stop=stop, max_frames=max_frames)
    source.connect()
    return _stream_input(source, policy)


def open_inputs(specs: Sequence[str], settings: LiveSettings, *, policy: Literal["auto", "lossless", "live"],
                stop: threading.Event, max_frames: int | None = None) -> list[LiveInput]:
    """Every source of a live run, in order: files probed first (a missing or broken one is a `MediaError` at once:
    files don't appear later), then every camera and stream connected at the same time, a thread each.

    A camera or stream that cannot connect is logged in one line and returned all the same, "connecting": its
    frames come once it does, retried with the reconnect backoff while the others run. Only when none connected
    and no file is among the sources is it a `MediaError`.
    """
    group = SourceGroup()
    files: dict[int, LiveInput] = {}
    sources: dict[int, LiveSource] = {}
    try:
        for i, spec in enumerate(specs):
            if source_kind(spec) == "file":
                files[i] = _file_input(spec, policy, max_frames, group)
        sources = {i: LiveSource(spec, settings, stop=stop, max_frames=max_frames, group=group)
                   for i, spec in enumerate(specs) if i not in files}
        failures = _connect_all(list(sources.values()))
        if failures and len(failures) == len(sources) and not files:
            raise failures[0] if len(failures) == 1 else MediaError(
                f"no source could be opened ({'; '.join(str(failure) for failure in failures)})")
    except BaseException:
        for close in [opened.close for opened in files.values()] + [source.close for source in sources.values()]:
            close()
        raise
    for source in sources.values():
        if source.open_error is not None:
            log.warning("%s: cannot open (%s); retrying while the others run", source.name, source.open_error)
    return [files[i] if i in files else _stream_input(sources[i], policy) for i in range(len(specs))]


def _connect_all(sources: Sequence[LiveSource]) -> list[MediaError]:
    """Connect every source at the same time (N dead hosts cost one open timeout, not N); the failures."""
    failures: list[MediaError] = []

    def connect(source: LiveSource) -> None:
        try:
            source.connect()
        except MediaError as failure:
            failures.append(failure)

    threads = [threading.Thread(target=connect, args=(source,), name=f"connect-{i}", daemon=True)
               for i, source in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def _chosen(policy: Literal["auto", "lossless", "live"], kind: SourceKind) -> Policy:
    """The queue policy of a source: `auto` gives cameras and streams the live one and files the lossless one."""
    return Policy(policy) if policy != "auto" else (Policy.LOSSLESS if kind == "file" else Policy.LIVE)


def _file_input(spec: str, policy: Literal["auto", "lossless", "live"], max_frames: int | None,
                group: SourceGroup | None) -> LiveInput:
    """A file probed now (`MediaError` if it cannot be read) and played at its own rate, running in `group`."""
    video = VideoSource(spec, max_frames=max_frames)
    frames: Iterable[Frame] = paced(video)
    if group is not None:
        group.join()
        frames = group.running(frames)
    return LiveInput(name=spec, frames=frames, policy=_chosen(policy, "file"), fps=video.info.fps,
                     state=SourceState(status="playing"))


def _stream_input(source: LiveSource, policy: Literal["auto", "lossless", "live"]) -> LiveInput:
    """A camera or stream as a live run's input, connected or still connecting."""
    return LiveInput(name=source.name, frames=source, policy=_chosen(policy, source.kind), fps=source.fps,
                     state=source.state)
