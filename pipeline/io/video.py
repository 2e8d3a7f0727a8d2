"""Video files in and out with PyAV: `probe`, the decoding `VideoSource`, the encoding `VideoSink`, and
`VideoWriter`, the one writer of every job (the file job's annotated copy, the live job's recordings).

`VideoSource` yields `seg_video.core.types.Frame`s (BGR, rotation metadata applied, pts/time_base as decoded).
`VideoSink` encodes them with those same timestamps, so the output has the input's frame count and timing
(variable frame rate included), and carries the input's audio along: stream-copied when the output container
takes its codec (`AUDIO_COPY`), re-encoded to AAC otherwise, interleaved with the video as frames arrive and
cut at the last written frame when the run stopped early.

Hostile input is bounded: pictures over `MAX_PIXELS` are refused (before decoding when the header states the
size, by the decoder otherwise), and a stream whose picture size changes part-way is scaled to its first size.
An output that fails mid-run (disk full, write permission lost, file or folder removed) keeps what reached the disk
when that plays, and is removed when nothing of it plays.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import av
import av.container
import av.stream
import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.errors import DecodeError, MediaError, UsageError, WriteError
from seg_video.core.text import one_line
from seg_video.core.threads import available_cpus
from seg_video.core.types import MILLISECONDS, Frame
from seg_video.io.paths import OutputGuard, identity

if TYPE_CHECKING:
    from seg_video.core.config import EncoderSettings

log = logging.getLogger(__name__)

MAX_SIDE = 16384
"""Largest width or height accepted (H.264's level limits stop well below it)."""
MAX_PIXELS = 8192 * 4352
"""Largest picture accepted (H.264 level 6.2's largest frame, 8K): bounds the memory a hostile header can claim."""
DECODER_LIMITS = {"max_pixels": str(MAX_PIXELS)}
"""FFmpeg options for every input's decoders: a picture over `MAX_PIXELS` fails to decode instead of filling memory."""
FALLBACK_FPS = 30.0
"""Rate used to invent timestamps for frames that have none when the stream states no rate either."""
CUT_SHORT = 1.0
"""Seconds of video missing at the end (against the stream's stated duration) that make a quiet stop an error."""
DECODE_ORDER_ONLY = frozenset({"avi"})
"""Container formats that keep decode timestamps only (see `_display_order`)."""
SAME_TIME = 2e-3
"""Seconds within which two timestamps count as the same instant (millisecond time bases round by up to 1 ms)."""
VANISHED = "the file was deleted or moved, or its folder removed, while it was written"
"""Why writing stops when the output is no longer where it was opened."""
_TS_NEGATIVE = 0x40000
"""AVFMT_TS_NEGATIVE: the container format can store negative timestamps (MP4/MOV edit lists)."""
AUDIO_COPY: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}),
    "ipod": frozenset({"aac", "alac"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
    "matroska": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "vorbis", "pcm_s16le", "pcm_s24le",
                           "pcm_f32le"}),
    "webm": frozenset({"opus", "vorbis"}),
    "avi": frozenset({"mp3", "ac3", "aac", "pcm_s16le"}),
    "mpegts": frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus"}),
}
"""Audio codecs (canonical names) each output container format carries as they are and players expect there.

FFmpeg's mp4 muxer also accepts PCM (as `ipcm`), which few players play; such audio is re-encoded instead.
"""


@dataclass(frozen=True)
class Container:
    """How seg-video writes one kind of video file: FFmpeg's muxer, the video encoder and pixel format it uses there
    by default, and the encoder for audio that cannot be copied (None: the file gets no audio)."""

    muxer: str
    codec: str
    pix_fmt: str
    audio: str | None


H264 = ("libx264", "yuv420p")
CONTAINERS = {
    ".mp4": Container("mp4", *H264, "aac"),
    ".m4v": Container("ipod", *H264, "aac"),
    ".mov": Container("mov", *H264, "aac"),
    ".mkv": Container("matroska", *H264, "aac"),
    ".avi": Container("avi", *H264, "aac"),
    ".ts": Container("mpegts", *H264, "aac"),
    ".webm": Container("webm", "libvpx-vp9", "yuv420p", "libopus"),
    ".gif": Container("gif", "gif", "rgb8", None),
}
"""The files seg-video writes video into, by extension (README: Usage has the table)."""
VP9_SPEED = {"ultrafast": 8, "superfast": 8, "veryfast": 7, "faster": 6, "fast": 5, "medium": 4, "slow": 3,
             "slower": 2, "veryslow": 1, "placebo": 0}
"""libvpx-vp9's `cpu-used` for each of x264's preset names (`output.preset`; 8: fastest)."""


@dataclass(frozen=True)
class OutputPlan:
    """What a video output will hold: its container, the video encoder with its pixel format and options."""

    container: Container
    codec: str
    pix_fmt: str
    options: dict[str, str]


def output_plan(path: Path, settings: EncoderSettings) -> OutputPlan:
    """How `path` will be written with `settings`; `UsageError` when its extension names no container seg-video
    writes, or the codec or pixel format asked for cannot go there."""
    container = CONTAINERS.get(path.suffix.lower())
    if container is None:
        kind = f"a {path.suffix} file" if path.suffix else "a file without an extension"
        raise UsageError(f"cannot write video into {kind}: {path} (seg-video writes {', '.join(CONTAINERS)})")
    codec = container.codec if settings.codec == "auto" else settings.codec
    if codec != container.codec:
        with av.open(str(path), "w", format=container.muxer) as probe:  # creates no file
            takes = probe.supported_codecs
        if codec not in takes:
            raise UsageError(f"{path.suffix} files cannot hold {codec} video; leave output.codec at auto "
                             f"({container.codec} there) or choose one of the container's")
    pix_fmt = container.pix_fmt if settings.pix_fmt == "auto" else settings.pix_fmt
    formats = [f.name for f in av.Codec(codec, "w").video_formats or ()]
    if formats and pix_fmt not in formats:
        raise UsageError(f"output.pix_fmt {pix_fmt!r} is not one {codec} takes ({', '.join(formats)})")
    return OutputPlan(container, codec, pix_fmt, _encoder_options(codec, settings))


def _encoder_options(codec: str, settings: EncoderSettings) -> dict[str, str]:
    """The encoder's quality and speed options from `crf` and `preset`."""
    if codec in ("libx264", "libx265"):
        return {"crf": str(settings.crf), "preset": settings.preset}
    if codec == "libvpx-vp9":
        speed = VP9_SPEED[settings.preset]
        return {"crf": str(settings.crf), "b": "0", "cpu-used": str(speed), "row-mt": "1",
                "deadline": "realtime" if speed >= 5 else "good"}
    return {}


_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned about a file's first video stream.

    `width`/`height` are as displayed (rotation applied); `rotation` is the display matrix's counterclockwise turn
    (a phone's portrait clip, which ffprobe shows as -90, reads 270); `duration` is the video stream's own, when
    the file states it; `frame_count` is the container's count, when it keeps one; `fps` the average rate.
    """

    path: str
    width: int
    height: int
    frame_count: int | None
    fps: float | None
    time_base: Fraction
    duration: float | None
    rotation: int
    codec: str
    audio_codec: str | None


def audio_fits(container_format: str, codec: str) -> bool:
    """Whether audio of `codec` goes into `container_format` unchanged (see `AUDIO_COPY`)."""
    return codec in AUDIO_COPY.get(container_format, frozenset())


def quarter_turns(rotation: float) -> int:
    """A display rotation in degrees as 0, 90, 180 or 270 (counterclockwise), the nearest quarter turn."""
    return round(rotation / 90) % 4 * 90


def rotate_upright(image: npt.NDArray[np.uint8], rotation: int) -> npt.NDArray[np.uint8]:
    """The picture as displayed: turned `rotation` degrees counterclockwise (0/90/180/270), contiguous."""
    code = _ROTATE.get(quarter_turns(rotation))
    return image if code is None else cast(npt.NDArray[np.uint8], cv2.rotate(image, code))


def fit(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """`image` scaled to `width`x`height` (aspect not kept), or itself when it already has that size."""
    if image.shape[:2] == (height, width):
        return image
    return cast(npt.NDArray[np.uint8], cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


def encoder_picture(image: npt.NDArray[np.uint8], pix_fmt: str | None) -> av.VideoFrame:
    """A BGR image as a frame for an encoder that takes `pix_fmt`. For yuv420p (even sizes) OpenCV converts it, with
    the same BT.601 limited-range matrix FFmpeg's scaler uses by default, at about a quarter of the scaler's CPU time
    (1280x720: 0.5 against 2.2 ms); other formats are left to the encoder's own conversion."""
    if pix_fmt == "yuv420p" and image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0:
        planes = cast(npt.NDArray[np.uint8], cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420))
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")
    return av.VideoFrame.from_ndarray(image, format="bgr24")


def _open_input(path: Path) -> av.container.InputContainer:
    """Open `path` for reading (probing decoders capped at `MAX_PIXELS`); every way that fails is a `MediaError`."""
    try:
        return av.open(str(path), metadata_errors="ignore", options=DECODER_LIMITS)
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise MediaError(f"not a file but a folder: {path}") from None
    except av.InvalidDataError:
        raise MediaError(f"not a media file: {path}") from None
    except (av.FFmpegError, OSError) as error:
        raise MediaError(f"cannot read {path}: {one_line(error)}") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first real video stream (cover pictures do not count), its decoder refusing pictures over `MAX_PIXELS`;
    else a `MediaError` listing what there is."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            stream.codec_context.options = dict(DECODER_LIMITS)
            return stream
    kinds = ["cover picture" if s.type == "video" else s.type for s in container.streams]
    raise MediaError(f"no video stream in {path} (it has: {', '.join(dict.fromkeys(kinds)) or 'no streams'})")


def probe(path: str | Path) -> VideoInfo:
    """Describe the file's video (decoding its first frame for size and rotation); raises `MediaError`."""
    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        if stream.width and stream.height:  # stated by the header: refuse a hostile size before decoding
            _check_size(stream.width, stream.height, path)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as error:
            hint = f" (pictures over {MAX_PIXELS:,} pixels are refused)" if isinstance(error, av.ArgumentError) else ""
            raise MediaError(f"cannot decode the video of {path}: {one_line(error)}{hint}") from None
        if first is None:
            raise MediaError(f"no decodable video frame in {path}")
        width, height, rotation = first.width, first.height, quarter_turns(first.rotation)
        _check_size(width, height, path)
        if rotation in (90, 270):
            width, height = height, width
        rate = stream.average_rate or stream.guessed_rate
        time_base = stream.time_base or Fraction(1, 90_000)  # demuxers always set one; the stubs allow None
        duration = float(stream.duration * time_base) if stream.duration is not None else _duration_tag(stream)
        audio = container.streams.audio[0].codec.canonical_name if container.streams.audio else None
        return VideoInfo(path=str(path), width=width, height=height, frame_count=stream.frames or None,
                         fps=float(rate) if rate else None, time_base=time_base, duration=duration,
                         rotation=rotation, codec=stream.codec.canonical_name, audio_codec=audio)


def _check_size(width: int, height: int, path: Path) -> None:
    """Raise `MediaError` for a picture size that is empty, over `MAX_SIDE` or over `MAX_PIXELS`."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise MediaError(f"unusable picture size {width}x{height} in {path}")
    if width * height > MAX_PIXELS:
        raise MediaError(f"picture size {width}x{height} in {path} is too large: over {MAX_PIXELS:,} pixels "
                         f"(8192x4352)")


def _duration_tag(stream: av.VideoStream) -> float | None:
    """Seconds in Matroska's per-stream DURATION tag ("HH:MM:SS.nnnnnnnnn"), None without a valid one."""
    parts = stream.metadata.get("DURATION", "").split(":")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])
    except ValueError:
        return None


class VideoSource:
    """The frames of a video file, decoded in order (threaded), upright, with their timestamps; re-iterable."""

    def __init__(self, path: str | Path, *, max_frames: int | None = None, source_id: str | None = None) -> None:
        self.info = probe(path)
        self.max_frames = max_frames
        self.source_id = source_id if source_id is not None else self.info.path

    def __iter__(self) -> Iterator[Frame]:
        """Decode from the start; raises `DecodeError` naming the frame where decoding failed.

        A damaged file can also make FFmpeg's demuxer stop quietly; when that leaves more than `CUT_SHORT` seconds
        of the stream's stated duration undecoded, that too is a `DecodeError`, raised after the last frame.
        Pictures of another size than the first (the stream changed resolution) are scaled to it, with one warning
        per change.
        """
        path = Path(self.info.path)
        container = _open_input(path)
        try:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            time_base = self.info.time_base
            ticks_per_frame = 1 / ((self.info.fps or FALLBACK_FPS) * time_base)
            decoded = _display_order(container, stream)
            index, end = 0, 0
            first: int | None = None
            upright: tuple[int, ...] = (self.info.height, self.info.width)
            size = upright
            while self.max_frames is None or index < self.max_frames:
                try:
                    timed = next(decoded, None)
                except av.FFmpegError as error:
                    raise DecodeError(f"decode error at frame {index} of {path}: {one_line(error)}") from error
                if timed is None:
                    self._check_complete(path, index, 0.0 if first is None else float((end - first) * time_base))
                    return
                frame, stamp = timed
                pts = stamp if stamp is not None else round(index * ticks_per_frame)
                first = pts if first is None else first
                end = pts + (frame.duration or 0)
                image = rotate_upright(cast(npt.NDArray[np.uint8], frame.to_ndarray(format="bgr24")), frame.rotation)
                if image.shape[:2] != size:
                    size = image.shape[:2]
                    if size != upright:
                        log.warning("%s: the picture size changes to %dx%d at frame %d; scaled to %dx%d, the first",
                                    path, size[1], size[0], index, self.info.width, self.info.height)
                image = fit(image, self.info.width, self.info.height)
                yield Frame(index=index, image=image, pts=pts, time_base=time_base, source_id=self.source_id)
                index += 1
        finally:
            container.close()

    def _check_complete(self, path: Path, frames: int, seconds: float) -> None:
        """Raise `DecodeError` if the `seconds` of video decoded fall short of the stated duration."""
        if self.info.duration is not None and seconds < self.info.duration - CUT_SHORT:
            raise DecodeError(f"decode error at frame {frames} of {path}: the video stops at {seconds:.2f} s "
                              f"of {self.info.duration:.2f} s (the file is damaged or cut short)")


def _display_order(container: av.container.InputContainer,
                   stream: av.VideoStream) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """The stream's frames as the decoder gives them (display order), each with its presentation time.

    Most containers store presentation times. AVI stores frames in decode order with a constant duration and no
    presentation times; FFmpeg invents them as decode time plus the B-frame reorder delay, which puts the first frame
    one frame late against the audio. For such containers (`DECODE_ORDER_ONLY`) the k-th frame shown is due at the
    k-th decode timestamp, taken smallest first."""
    by_decode_order = container.format.name in DECODE_ORDER_ONLY
    due: list[int] = []
    for packet in container.demux(stream):
        if by_decode_order and packet.dts is not None:
            heapq.heappush(due, packet.dts)
        for frame in packet.decode():
            yield frame, heapq.heappop(due) if due else frame.pts


ENCODER_THREADING = "FRAME"
"""Encoders thread across frames, x264's usual mode for files (slice threading, PyAV's default, suits low-latency
streaming; it also made the sample clip differ from run to run under CPU contention)."""


class VideoSink:
    """Encodes `Frame`s into a video file at their own timestamps, carrying the input's audio; always `close()` it.

    The container follows the path's extension. Pictures with a size the pixel format cannot hold (odd sizes in
    yuv420p) are padded by repeating their last row/column. After a failed write (disk full, file size limit, write
    permission lost) nothing more can be written: `close` then keeps the file if what reached the disk plays
    (Matroska does; an MP4 needs its index, written last) and removes it otherwise; `frames_written` then counts
    the frames the file holds. A file deleted or moved away (its folder removed) while written fails the next write.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, time_base: Fraction, fps: float | None,
                 settings: EncoderSettings, audio_from: str | Path | None = None,
                 guard: OutputGuard | None = None) -> None:
        self.path = Path(path)
        self.width, self.height, self.time_base, self.fps = width, height, time_base, fps
        self.settings = settings
        self.settings.validate()
        try:
            self._plan = output_plan(self.path, settings)
        except UsageError as error:  # the callers checked it up front; said as a write error all the same
            raise WriteError(str(error)) from None
        self.frames_written = 0
        self._failed = False
        self._last_pts: int | None = None
        self._step = max(1, round(1 / ((fps or FALLBACK_FPS) * time_base)))  # ticks of the latest frame
        self._closed = False
        self._audio: _AudioCarrier | None = None
        fresh = not os.path.lexists(self.path)
        (guard or OutputGuard()).claim(self.path)
        try:
            self._open(audio_from)
        except BaseException:
            if fresh:  # what the claim created: a run that could not start leaves nothing
                self.path.unlink(missing_ok=True)
            raise

    def _open(self, audio_from: str | Path | None) -> None:
        """Open the container with its streams and write its header; every failure is a `WriteError` (the file the
        claim made gone since: `VANISHED`)."""
        try:
            self._output = av.open(str(self.path), "w", format=self._plan.container.muxer)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise WriteError(f"cannot write {self.path}: {self._why(error)}") from None
        try:
            self._video = self._add_video_stream()
            audio = self._plan.container.audio
            if audio_from is not None and self.settings.audio and audio is not None:
                self._audio = _AudioCarrier.open(Path(audio_from), self._output, audio)
            self._output.start_encoding()  # fail here, not at the first frame, if the file cannot be written
            self._identity = identity(self.path)
            if self._identity is None:  # gone already: removed (or its folder) while it was being opened
                raise WriteError(f"cannot write {self.path}: {VANISHED}")
        except BaseException as error:
            self._release()
            if isinstance(error, (av.FFmpegError, OSError, ValueError)):
                raise WriteError(f"cannot write {self.path}: {self._why(error)}") from error
            raise

    def _why(self, error: BaseException) -> str:
        """The reason opening failed, as one line; `VANISHED` when the file is no longer there."""
        return VANISHED if identity(self.path) is None else one_line(error)

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_video_stream(self) -> av.VideoStream:
        """The output video stream: the plan's codec, in the input's time base, at a size the pixel format holds."""
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps else None
        stream = cast(av.VideoStream, self._output.add_stream(self._plan.codec, rate=rate))
        step_x, step_y = _chroma_steps(self._plan.pix_fmt)
        stream.width = -(-self.width // step_x) * step_x
        stream.height = -(-self.height // step_y) * step_y
        if (stream.width, stream.height) != (self.width, self.height):
            log.warning("%s: %dx%d is written as %dx%d (%s needs sizes in steps of %dx%d; the last column and row "
                        "are repeated); output.pix_fmt = \"yuv444p\" keeps the size", self.path, self.width,
                        self.height, stream.width, stream.height, self._plan.pix_fmt, step_x, step_y)
        stream.pix_fmt = self._plan.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        options: dict[str, object] = dict(self._plan.options)
        stream.options = options
        stream.thread_type = ENCODER_THREADING
        stream.codec_context.thread_count = available_cpus()  # not x264's 1.5 per core: see seg_video.core.threads
        return stream

    def write(self, frame: Frame) -> None:
        """Encode one BGR frame at its own timestamp, then mux the input's audio that plays until it ends."""
        if self._closed:
            raise WriteError(f"cannot write {self.path}: the output is already closed")
        if frame.image.shape != (self.height, self.width, 3):
            raise ValueError(f"frame {frame.index} is {frame.image.shape}; the output {self.path} takes "
                             f"{(self.height, self.width, 3)} BGR images")
        pts = self._pts_of(frame)
        pad = ((0, self._video.height - self.height), (0, self._video.width - self.width), (0, 0))
        image = np.pad(frame.image, pad, mode="edge") if any(p for _, p in pad) else frame.image
        picture = encoder_picture(image, self._plan.pix_fmt)
        picture.pts, picture.time_base = pts, self.time_base
        if identity(self.path) != self._identity:
            self._failed = True
            raise WriteError(f"cannot write {self.path}: {VANISHED}")
        try:
            self._output.mux(self._video.encode(picture))
            if self._last_pts is not None:
                self._step = pts - self._last_pts
            self._last_pts = pts
            self.frames_written += 1
            if self._audio is not None:
                self._audio.mux_until(self._seconds(pts + self._step))
        except (av.FFmpegError, OSError) as error:
            self._failed = True
            raise WriteError(f"cannot write {self.path}: {one_line(error)}") from error

    def _pts_of(self, frame: Frame) -> int:
        """The frame's pts in the output time base (invented from the rate if it has none), always rising."""
        if frame.pts is None or frame.time_base is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        else:
            pts = round(frame.pts * frame.time_base / self.time_base)
        return pts if self._last_pts is None else max(pts, self._last_pts + 1)

    def _seconds(self, pts: int) -> float:
        return float(pts * self.time_base)

    def close(self) -> None:
        """Flush the encoder, mux the remaining audio and finish the file; idempotent, and safe after errors (then
        only what reached the disk is kept, if it plays; see the class)."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                if not self._failed:
                    self._output.mux(self._video.encode(None))
                    if self._audio is not None and self._last_pts is not None:
                        self._audio.finish(self._seconds(self._last_pts), self._seconds(self._last_pts + self._step))
            finally:
                self._release()
        except (av.FFmpegError, OSError) as error:
            self._failed = True
            raise WriteError(f"cannot finish {self.path}: {one_line(error)}") from error
        finally:
            if self._failed:
                self._salvage()

    def _salvage(self) -> None:
        """After a failure: count the frames the closed file holds, and remove it (if it is still ours) when none
        play."""
        if identity(self.path) != self._identity:
            self.frames_written = 0
            return
        try:
            with av.open(str(self.path)) as written:
                packets = written.demux(video=0)
                self.frames_written = sum(1 for packet in packets if packet.size and not packet.is_corrupt)
        except (av.FFmpegError, OSError, IndexError):
            self.frames_written = 0
        if self.frames_written == 0 and not self.path.is_symlink():  # a link is the user's: only its target was ours
            self.path.unlink(missing_ok=True)

    def _release(self) -> None:
        """Close the audio reader and the output container (which writes the trailer once encoding started)."""
        try:
            if self._audio is not None:
                self._audio.close()
        finally:
            self._output.close()


class VideoWriter:
    """Encodes frames into `path`, opened at the first frame and finalized by `close` (idempotent).

    Timing: with a `time_base`, each frame keeps its own pts (a file's timing, variable frame rate included);
    without one, frames are stamped with their capture time in milliseconds since the first (live recordings).
    `audio_from` names a file whose audio is carried along.
    """

    def __init__(self, path: Path, settings: EncoderSettings, *, fps: float | None, time_base: Fraction | None = None,
                 audio_from: str | Path | None = None, guard: OutputGuard | None = None) -> None:
        self.path = path
        self._guard = guard
        self._settings = settings
        self._fps = fps
        self._time_base = time_base
        self._audio_from = audio_from
        self._sink: VideoSink | None = None
        self._origin = 0.0

    @property
    def frames_written(self) -> int:
        """Frames in the file so far (after a failed write: those that reached the disk)."""
        return 0 if self._sink is None else self._sink.frames_written

    def write(self, frame: Frame) -> None:
        """Encode one frame, opening the file on the first."""
        if self._sink is None:
            height, width = frame.size
            self._sink = VideoSink(self.path, width=width, height=height, time_base=self._time_base or MILLISECONDS,
                                   fps=self._fps, settings=self._settings, audio_from=self._audio_from,
                                   guard=self._guard)
            self._origin = frame.captured_at
        image = fit(frame.image, self._sink.width, self._sink.height)
        if self._time_base is None:
            frame = Frame(index=frame.index, image=image, pts=round((frame.captured_at - self._origin) * 1000),
                          time_base=MILLISECONDS, source_id=frame.source_id, captured_at=frame.captured_at)
        elif image is not frame.image:
            frame = Frame(index=frame.index, image=image, pts=frame.pts, time_base=frame.time_base,
                          source_id=frame.source_id, captured_at=frame.captured_at)
        self._sink.write(frame)

    def close(self) -> None:
        """Finish the file if it was opened."""
        if self._sink is not None:
            self._sink.close()


def _audio_rate(encoder: str, rate: int) -> int:
    """`rate`, or the nearest higher one `encoder` takes (Opus: 48 kHz for 44.1 kHz audio); PyAV resamples."""
    rates = sorted(av.Codec(encoder, "w").audio_rates or ())
    return rate if not rates or rate in rates else next((r for r in rates if r > rate), rates[-1])


def _chroma_steps(pix_fmt: str) -> tuple[int, int]:
    """(x, y) multiples a picture's size must be in `pix_fmt` (2, 2 for yuv420p: chroma is subsampled)."""
    fmt = av.VideoFormat(pix_fmt)
    return 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)


class _AudioCarrier:
    """The input's audio, read by a second demuxer and muxed into the output as the video advances.

    The demuxer also notes the input's video timestamps, so `finish` can tell a complete run (all audio goes in)
    from one that stopped early (audio is cut at the end of the last written frame). Audio before time 0 (AAC
    priming) is left out of containers that cannot store negative timestamps: FFmpeg would otherwise shift every
    stream, video included, to make them non-negative.
    """

    def __init__(self, source: av.container.InputContainer, video: av.VideoStream,
                 output: av.container.OutputContainer, encoder: str) -> None:
        self._source = source
        self._input = source.streams.audio[0]
        self._output = output
        self._negative_ok = bool(output.format.flags & _TS_NEGATIVE)
        self._copy = audio_fits(output.format.name, self._input.codec.canonical_name)
        rate, layout = _audio_rate(encoder, self._input.rate), f"{self._input.channels}c"  # the default layout
        self._stream = (output.add_stream_from_template(self._input) if self._copy
                        else cast(av.AudioStream, output.add_stream(encoder, rate=rate, layout=layout)))
        self._packets = source.demux(self._input, video)
        self._pending: deque[tuple[float, av.Packet]] = deque()  # audio read ahead, with start times (s)
        self._video_until = -math.inf  # latest video time (s) the demuxer has passed
        self._decode_order = source.format.name in DECODE_ORDER_ONLY  # video times as `_display_order` has them
        self._audio_end = 0.0  # where the audio read so far ends (s): an untimed packet goes there

    @classmethod
    def open(cls, path: Path, output: av.container.OutputContainer, encoder: str) -> _AudioCarrier | None:
        """A carrier for `path`'s first audio stream (re-encoded with `encoder` where the output cannot take it as
        it is), or None when it has none."""
        source = _open_input(path)
        if not source.streams.audio:
            source.close()
            return None
        try:
            return cls(source, _video_stream(source, path), output, encoder)
        except BaseException:
            source.close()
            raise

    def mux_until(self, limit: float) -> None:
        """Mux the audio packets that start before `limit` seconds."""
        while (start := self._next_start()) is not None and start < limit - SAME_TIME:
            self._mux(self._pending.popleft()[1])

    def finish(self, last_frame: float, end: float) -> None:
        """Mux the rest: all of it if `last_frame` (s) is the input's last video frame, else up to `end` (s)."""
        while self._video_until <= last_frame + SAME_TIME and self._read():
            pass
        self.mux_until(end if self._video_until > last_frame + SAME_TIME else math.inf)
        if not self._copy:
            self._emit(self._stream.encode(None))

    def close(self) -> None:
        """Close the input's second demuxer."""
        self._source.close()

    def _next_start(self) -> float | None:
        """Start time (s) of the next audio packet, reading on as needed; None at the end of the input."""
        while not self._pending:
            if not self._read():
                return None
        return self._pending[0][0]

    def _read(self) -> bool:
        """Demux one packet: keep it if audio, note its time if video; False at the end (or unreadable rest)."""
        try:
            packet = next(self._packets, None)
        except av.FFmpegError:
            return False
        if packet is None:
            return False
        if not packet.size:
            return True
        if packet.stream.type == "video":
            stamp = packet.dts if self._decode_order else packet.pts
            if stamp is not None:
                self._video_until = max(self._video_until, float(stamp * packet.time_base))
            return True
        stamp = packet.pts if packet.pts is not None else packet.dts
        start = self._audio_end if stamp is None else float(stamp * packet.time_base)  # untimed: right after the last
        self._audio_end = start + float((packet.duration or 0) * packet.time_base)
        self._pending.append((start, packet))
        return True

    def _mux(self, packet: av.Packet) -> None:
        """Copy or re-encode one input packet into the output."""
        if self._copy:
            packet.stream = self._stream
            self._emit([packet])
            return
        for frame in self._input.decode(packet):
            self._emit(self._stream.encode(frame))

    def _emit(self, packets: list[av.Packet]) -> None:
        """Mux output-ready packets, leaving out those before time 0 where the container cannot store them."""
        for packet in packets:
            if self._negative_ok or packet.pts is None or packet.pts >= 0:
                self._output.mux(packet)
