"""Restreaming: each annotated live source published to an RTSP server (RECORD, as FFmpeg's RTSP muxer does) or
written as a live HLS playlist, without ever holding up the pipeline.

`Restream.write` only puts the frame into a small newest-wins queue; a thread of the `Restream` encodes it (H.264,
stamped with its capture time) into a NUT stream that a child process (`relay`) copies into FFmpeg's RTSP or HLS
muxer. The muxer runs in a process of its own because in-process it would stall the whole interpreter: PyAV
connects (`avformat_write_header`) and tears down (`av_write_trailer`) holding the GIL, and the RTSP muxer ignores
failed socket writes over TCP, so a receiver that stops reading is never reported (its `timeout` option,
microseconds per socket operation, only bounds each wait). The parent feeds the child through a non-blocking pipe:
a frame the child does not take within `io_timeout` means the receiver stalled, and the child is killed. A lost or
stalled connection is logged once, frames are dropped (counted) meanwhile, and a new child is started with
backoff; each connection starts with a keyframe. The target travels on the child's stdin, never on its command line.

Credentials never leave this module unmasked: names, log lines and statuses go through `mask_credentials`.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np
import numpy.typing as npt

from seg_video.core.config import X264_PRESETS
from seg_video.core.text import mask_credentials, one_line
from seg_video.core.types import MILLISECONDS, Frame
from seg_video.io.video import FALLBACK_FPS, H264, encoder_picture, fit

log = logging.getLogger(__name__)

HLS_PLAYLIST = "index.m3u8"
"""The playlist's name inside each source's HLS folder."""
HLS_SEGMENTS = "segment-%06d.ts"
"""The segments' names inside each source's HLS folder (FFmpeg's pattern)."""
RTSP_SCHEMES = ("rtsp", "rtsps")
LIVE = b"live\n"
"""What the child says on stdout once its muxer is open (connected, for RTSP)."""
UNPROBED = {"probesize": "32", "analyzeduration": "0"}
"""The relay's input options: take the stream's parameters from the NUT header and first frame, without reading
seconds of video ahead to probe it."""
CLOSE_GRACE = 1.0
"""Seconds `close` waits beyond `close_timeout` for the writer to clean up after killing a slow relay."""
RELAY = (sys.executable, "-c", "from seg_video.io.restream import relay; relay()")
"""The child process that copies the NUT stream into the target's muxer (`relay`)."""


@dataclass(frozen=True)
class RestreamSettings:
    """How restreams encode, cut HLS segments, time out and reconnect."""

    queue_size: int = 4
    """Frames waiting for the encoder; a full queue drops its oldest (newest wins)."""
    preset: str = "ultrafast"
    """x264 preset (tuned for zero latency: no B-frames, no look-ahead)."""
    crf: int = 23
    keyframe_interval: float = 1.0
    """Seconds between keyframes: how soon a new viewer gets a picture, and the HLS segments' granularity."""
    hls_segment: float = 1.0
    """Seconds of video per HLS segment (cut at the next keyframe)."""
    hls_list_size: int = 6
    """Segments the live playlist lists; older ones are deleted."""
    reconnect_min: float = 0.5
    """Seconds before the first reconnection attempt; each failed attempt doubles the wait..."""
    reconnect_max: float = 30.0
    """...up to this many seconds."""
    open_timeout: float = 10.0
    """Seconds to connect to the server (or open the playlist) before the attempt counts as failed."""
    io_timeout: float = 3.0
    """Seconds a frame may take to be taken by the receiver before the connection counts as stalled (also FFmpeg's
    bound on each socket operation of the RTSP muxer)."""
    close_timeout: float = 5.0
    """Seconds `close` waits for the last frames and the muxer's end (HLS: #EXT-X-ENDLIST; RTSP: TEARDOWN)."""

    def validate(self) -> None:
        """Raise `ValueError` naming the first setting that cannot work."""
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be 1 or more; got {self.queue_size}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {self.preset!r}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be 0..51; got {self.crf}")
        if self.hls_list_size < 1:
            raise ValueError(f"hls_list_size must be 1 or more; got {self.hls_list_size}")
        if min(self.keyframe_interval, self.hls_segment, self.open_timeout, self.io_timeout, self.close_timeout) <= 0:
            raise ValueError("keyframe_interval, hls_segment and the timeouts must be positive")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError(f"need 0 < reconnect_min <= reconnect_max; got {self.reconnect_min}, "
                             f"{self.reconnect_max}")


def rtsp_targets(url: str, count: int) -> list[str]:
    """The RTSP URL each of `count` sources publishes to: `url` itself for one; for more, `-0`, `-1`… appended to
    the URL's path (rtsp://host:8554/cam → rtsp://host:8554/cam-0 …), query kept; a URL without a path gets
    /stream-0 …"""
    if count == 1:
        return [url]
    parts = urlsplit(url)
    base = parts.path.rstrip("/") or "/stream"
    return [urlunsplit(parts._replace(path=f"{base}-{index}")) for index in range(count)]


def hls_dirs(root: Path, count: int) -> list[Path]:
    """Each source's HLS folder: root/0, root/1, … (always numbered, also for one source: the web page serves
    /hls/N/)."""
    return [root / str(index) for index in range(count)]


class _Down(Exception):
    """The connection is lost or cannot be made; the message says why in one credential-free line."""


class _Outbox:
    """Where the NUT muxer writes: bytes gathered for the child's pipe (PyAV calls `write`; it never blocks)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


class _Connection:
    """One publishing attempt: an H.264 encoder muxing NUT into the pipe of a relay child; every wait is bounded."""

    def __init__(self, job: dict[str, Any], *, width: int, height: int, fps: float | None,
                 settings: RestreamSettings) -> None:
        self._settings = settings
        self._child = subprocess.Popen(RELAY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stdin = cast(Any, self._child.stdin).fileno()
        self._stdout = cast(Any, self._child.stdout).fileno()
        os.set_blocking(self._stdin, False)
        self._outbox = _Outbox()
        self._outbox.data += json.dumps(job).encode() + b"\n"
        self._output = av.open(self._outbox, "w", format="nut", container_options={"flush_packets": "1"})
        self._video = self._add_stream(width, height, fps)
        self._last_pts: int | None = None

    def _add_stream(self, width: int, height: int, fps: float | None) -> av.VideoStream:
        """The H.264 stream: zero-latency x264, a keyframe every `keyframe_interval`, millisecond timestamps."""
        rate = Fraction(fps).limit_denominator(1001) if fps else None
        stream = cast(av.VideoStream, self._output.add_stream(H264[0], rate=rate))
        stream.width, stream.height, stream.pix_fmt = width, height, H264[1]
        stream.time_base = stream.codec_context.time_base = MILLISECONDS
        gop = max(1, round(self._settings.keyframe_interval * (fps or FALLBACK_FPS)))
        stream.options = {"preset": self._settings.preset, "tune": "zerolatency", "crf": str(self._settings.crf),
                          "g": str(gop)}
        return stream

    def open(self, image: npt.NDArray[np.uint8], pts: int, abort: Callable[[], bool]) -> None:
        """Hand the child its first frame (it reads the stream's parameters from it) and wait until it says its
        muxer is open; `_Down` after `open_timeout`, or at once when `abort()` turns true."""
        deadline = time.monotonic() + self._settings.open_timeout
        self._encode(image, pts)
        said = b""
        while LIVE not in said:
            left = deadline - time.monotonic()
            if abort():
                raise _Down("closed while connecting")
            if left <= 0:
                raise _Down(f"no connection within {self._settings.open_timeout:g} s")
            writing = [self._stdin] if self._outbox.data else []
            readable, writable, _ = select.select([self._stdout], writing, [], min(left, 0.1))
            if writable:
                self._write_some()
            if readable:
                chunk = os.read(self._stdout, 64)
                if not chunk:
                    raise _Down(self._exit_reason())
                said += chunk

    def send(self, image: npt.NDArray[np.uint8], pts: int) -> None:
        """Encode one frame and hand it to the child within `io_timeout`; `_Down` when the child is gone or the
        receiver takes no data."""
        self._encode(image, pts)
        self._flush(time.monotonic() + self._settings.io_timeout)

    def finish(self, timeout: float) -> None:
        """Flush the encoder, end the stream and let the child finish its muxer (HLS: #EXT-X-ENDLIST), waiting at
        most `timeout` seconds before it is killed."""
        deadline = time.monotonic() + timeout
        try:
            self._output.mux(self._video.encode(None))
            self._output.close()
            self._flush(deadline)
            cast(Any, self._child.stdin).close()
            self._child.wait(max(0.0, deadline - time.monotonic()))
        except (_Down, subprocess.TimeoutExpired) as error:
            log.warning("%s", mask_credentials(f"the relay did not finish within {timeout:g} s ({error}); killed"))
        finally:
            self.kill()

    def end_child(self) -> None:
        """Kill the child (from any thread): the writer's next pipe operation then fails and it cleans up."""
        self._child.kill()

    def kill(self) -> None:
        """End the child now and release everything (idempotent; the writer thread's)."""
        self._child.kill()
        self._child.wait()
        for stream in (self._child.stdin, self._child.stdout, self._child.stderr):
            if stream is not None:
                stream.close()
        self._output.close()

    def _encode(self, image: npt.NDArray[np.uint8], pts: int) -> None:
        """Encode and mux one frame into the outbox, its pts kept rising."""
        pts = pts if self._last_pts is None else max(pts, self._last_pts + 1)
        picture = encoder_picture(image, self._video.pix_fmt)
        picture.pts, picture.time_base = pts, MILLISECONDS
        self._output.mux(self._video.encode(picture))
        self._last_pts = pts

    def _flush(self, deadline: float) -> None:
        """Write the outbox into the child's pipe by `deadline`; `_Down` if the child is gone or too slow."""
        while self._outbox.data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Down(f"the receiver took no data for {self._settings.io_timeout:g} s (stalled)")
            _, writable, _ = select.select([], [self._stdin], [], left)
            if writable:
                self._write_some()

    def _write_some(self) -> None:
        """Write what the pipe takes now."""
        try:
            written = os.write(self._stdin, self._outbox.data)
        except BlockingIOError:
            return
        except BrokenPipeError:
            raise _Down(self._exit_reason()) from None
        del self._outbox.data[:written]

    def _exit_reason(self) -> str:
        """Why the child ended: the last line it logged, credentials masked."""
        try:
            self._child.wait(self._settings.io_timeout)
        except subprocess.TimeoutExpired:
            return "the relay stopped reading"
        said = cast(Any, self._child.stderr).read()  # a line or a few: the child logs nothing but its error
        lines = said.decode(errors="replace").strip().splitlines()
        return mask_credentials(lines[-1]) if lines else f"the relay exited ({self._child.returncode})"


class Restream:
    """One source's annotated frames pushed to an RTSP server (publishing) or written as a live HLS playlist, by a
    thread of its own behind a small newest-wins queue: `write` never blocks.

    The first frame fixes the picture size (made even for 4:2:0; later frames of another size are fitted) and the
    time origin: frames are stamped with their capture time since the first. `status`, `sent`, `dropped` and
    `reconnects` are the live job's numbers (read-only).
    """

    def __init__(self, target: str | Path, *, fps: float | None, settings: RestreamSettings | None = None,
                 name: str = "") -> None:
        self.settings = settings or RestreamSettings()
        self.settings.validate()
        if isinstance(target, str) and target.partition("://")[0].lower() not in RTSP_SCHEMES:
            raise ValueError(f"not an rtsp:// or rtsps:// URL: {mask_credentials(target)}")
        self.target = target
        self.fps = fps
        self.name = name or mask_credentials(str(target))
        self.status = "connecting"
        self.sent = 0
        self.dropped = 0
        self.reconnects = 0
        self._queue: deque[Frame] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._deadline = 0.0  # when close() stops waiting for the writer
        self._connection: _Connection | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the stream
        self._origin = 0.0
        self._opened = 0  # connections made so far
        self._thread = threading.Thread(target=self._run, name=f"restream {self.name}", daemon=True)
        self._thread.start()

    def write(self, frame: Frame) -> None:
        """Queue one frame for the writer thread; never blocks. A full queue drops its oldest frame, a closed
        restream the new one (both counted)."""
        with self._ready:
            if self._closing:
                self.dropped += 1
                return
            if len(self._queue) >= self.settings.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(frame)
            self._ready.notify()

    def close(self) -> None:
        """Encode what is queued and finish the stream (HLS: the playlist gets #EXT-X-ENDLIST) within `close_timeout`
        seconds; a writer stuck past that (and `CLOSE_GRACE`) is abandoned, its relay killed. Idempotent."""
        with self._ready:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + self.settings.close_timeout
            self._ready.notify()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + CLOSE_GRACE)
        if self._thread.is_alive():
            log.warning("%s: the restream did not finish within %.1f s; abandoned", self.name,
                        self.settings.close_timeout)
            connection = self._connection
            if connection is not None:
                connection.end_child()
        self.status = "closed"

    def _take(self) -> Frame | None:
        """The next queued frame, waiting for one; None once closing and the queue is empty."""
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            return self._queue.popleft() if self._queue else None

    def _drop(self, frames: int = 0) -> None:
        """Count `frames` dropped by the writer, and drop (and count) those queued up meanwhile."""
        with self._ready:
            self.dropped += frames + len(self._queue)
            self._queue.clear()

    def _run(self) -> None:
        """The writer thread: connect, send frames, and after a loss reconnect with backoff until closed."""
        delay = self.settings.reconnect_min
        down_since: float | None = None
        frame = self._take()
        while frame is not None:
            try:
                self._connection = self._connect(frame)
            except _Down as error:
                self._drop(1)
                if self._closing:
                    break
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("%s: cannot publish (%s); retrying, frames are dropped meanwhile", self.name, error)
                else:
                    log.debug("%s: reconnection failed: %s", self.name, error)
                self.status = f"reconnecting in {delay:.1f} s: {error}"
                with self._ready:
                    self._ready.wait_for(lambda: self._closing, delay)
                delay = min(2 * delay, self.settings.reconnect_max)
                self._drop()
                frame = self._take()
                continue
            if down_since is not None:
                self.reconnects += 1
                log.warning("%s: publishing again after %.1f s", self.name, time.monotonic() - down_since)
            self.status, delay, down_since = "live", self.settings.reconnect_min, None
            frame = self._stream(self._connection)
            self._connection = None
            if frame is not None:  # lost: the frame in hand is the first of the next connection
                down_since = time.monotonic()
        self._drop()
        self.status = "closed"

    def _connect(self, frame: Frame) -> _Connection:
        """Start a relay for the target and hand it `frame`; `_Down` if it cannot."""
        image, pts = self._picture(frame)
        width, height = cast(tuple[int, int], self._size)
        connection = _Connection(self._job(), width=width, height=height, fps=self.fps, settings=self.settings)
        try:
            connection.open(image, pts, lambda: self._closing)
        except BaseException:
            connection.kill()
            raise
        self._opened += 1
        self.sent += 1
        if self._opened == 1:
            log.info("%s: publishing %dx%d", self.name, width, height)
        return connection

    def _stream(self, connection: _Connection) -> Frame | None:
        """Send frames until closing (then finish the stream; None) or the connection is lost (the warning is logged;
        the next frame is returned)."""
        while (frame := self._take()) is not None:
            try:
                connection.send(*self._picture(frame))
            except _Down as error:
                connection.kill()
                self._drop(1)
                log.warning("%s: lost (%s); reconnecting, frames are dropped meanwhile", self.name, error)
                self.status = f"reconnecting: {error}"
                return self._take()
            self.sent += 1
        connection.finish(max(0.0, self._deadline - time.monotonic()))
        return None

    def _picture(self, frame: Frame) -> tuple[npt.NDArray[np.uint8], int]:
        """The frame's picture at the stream's size and its pts: milliseconds since the first frame's capture."""
        if self._size is None:
            height, width = frame.size
            self._size = (max(2, width - width % 2), max(2, height - height % 2))
            self._origin = frame.captured_at
        width, height = self._size
        return fit(frame.image, width, height), round((frame.captured_at - self._origin) * 1000)

    def _job(self) -> dict[str, Any]:
        """What the relay child opens: the muxer, its target and options."""
        settings = self.settings
        if isinstance(self.target, str):
            return {"format": "rtsp", "target": self.target,
                    "options": {"rtsp_transport": "tcp", "timeout": str(round(settings.io_timeout * 1e6))}}
        flags = "delete_segments+independent_segments+temp_file" + ("+append_list" if self._opened else "")
        return {"format": "hls", "target": str(self.target / HLS_PLAYLIST),
                "options": {"hls_time": str(settings.hls_segment), "hls_list_size": str(settings.hls_list_size),
                            "hls_flags": flags, "hls_segment_filename": str(self.target / HLS_SEGMENTS)}}


def _read_line(fd: int) -> bytes:
    """One line from `fd`, read byte by byte so that nothing after it is consumed."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


def relay() -> None:
    """The child process: copy the NUT stream on stdin into the muxer its first line names, saying `LIVE` on stdout
    once that muxer is open; an error ends it with one credential-free line on stderr."""
    logging.basicConfig(format="%(message)s")
    job = json.loads(_read_line(0))
    try:
        with av.open("pipe:0", format="nut", options=UNPROBED) as source:
            video = source.streams.video[0]
            with av.open(job["target"], "w", format=job["format"], container_options=job["options"]) as sink:
                stream = sink.add_stream_from_template(video)
                sink.start_encoding()
                os.write(1, LIVE)
                for packet in source.demux(video):
                    if packet.size:  # the demuxer ends with an empty packet
                        packet.stream = stream
                        sink.mux(packet)
    except (av.FFmpegError, OSError) as error:
        log.error("%s", mask_credentials(one_line(error)))

