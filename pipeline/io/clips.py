"""Clips on events: a short annotated MP4 around each event of a live source that matches a trigger
(`--clips DIR --clip-on TYPE[:NAME] --pre-roll S --post-roll S`).

Every rendered frame is encoded once (H.264, zero latency, a keyframe every `KEYFRAME_INTERVAL` seconds of source
time) into a ring buffer of packets a few seconds long. A matching event opens a clip at the buffered keyframe at
or before (event time − pre-roll) and copies packets into it, never re-encoding, until `post_roll` seconds after the
last matching event. Times are the source's own clock, the one events are stamped with (`Event.time`: the frame's
pts in seconds); a frame without a pts is timed by its capture time since the first frame.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.container
import av.video.frame

from seg_video.core.errors import WriteError
from seg_video.core.text import mask_credentials, one_line
from seg_video.core.types import EVENT_TYPES, MILLISECONDS, Event, EventType, Frame
from seg_video.io.video import FALLBACK_FPS, H264, encoder_picture, fit

log = logging.getLogger(__name__)

KEYFRAME_INTERVAL = 1.0
"""Seconds of source time between keyframes: where a clip can start, so its pre-roll is at most this much longer."""
LATE_EVENTS = 2.0
"""Seconds of packets kept beyond the pre-roll, for events that reach `EventClips.event` after later frames."""
ENCODER_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23", "sc_threshold": "0"}
"""x264 options: each frame's packet comes out at once (no look-ahead, no B-frames), keyframes only where forced or
every `KEYFRAME_INTERVAL` (no scene-cut keyframes), cheap enough to run on every frame of every source."""
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
MAX_NAME_PART = 60
"""Characters kept of the source's and the line's or zone's name in a clip's file name."""


@dataclass(frozen=True)
class ClipTrigger:
    """Which events open a clip: every event of `type`, or only those of the line or zone called `name`."""

    type: EventType
    name: str | None = None

    def matches(self, event: Event) -> bool:
        """Whether `event` is one this trigger saves a clip of."""
        return event.type == self.type and (self.name is None or event.name == self.name)


def parse_trigger(text: str) -> ClipTrigger:
    """A trigger from its command-line form: `TYPE` (`zone_enter`) or `TYPE:NAME` (`line_cross:door`); a one-line
    `ValueError` otherwise."""
    kind, colon, name = text.strip().partition(":")
    if kind not in EVENT_TYPES:
        raise ValueError(f"clip trigger {text!r}: the type must be one of {', '.join(EVENT_TYPES)}")
    if colon and not name.strip():
        raise ValueError(f"clip trigger {text!r}: give the line's or zone's name after the colon, or no colon")
    return ClipTrigger(cast(EventType, kind), name.strip() if colon else None)


@dataclass(frozen=True)
class ClipSettings:
    """How much of the source a clip holds: `pre_roll` seconds before its first event (from the keyframe at or
    before then), `post_roll` seconds after its last, `max_clip` seconds at most in all."""

    pre_roll: float = 5.0
    post_roll: float = 5.0
    max_clip: float = 60.0

    def validate(self) -> None:
        """Raise `ValueError` naming the first setting that cannot work."""
        if not all(math.isfinite(value) for value in (self.pre_roll, self.post_roll, self.max_clip)):
            raise ValueError("pre_roll, post_roll and max_clip must be finite")
        if self.pre_roll < 0 or self.post_roll < 0:
            raise ValueError(f"pre_roll and post_roll must be 0 or more; got {self.pre_roll:g}, {self.post_roll:g}")
        if self.max_clip <= self.pre_roll + KEYFRAME_INTERVAL:
            raise ValueError(f"max_clip must exceed pre_roll + {KEYFRAME_INTERVAL:g} s (the keyframe interval), so "
                             f"that a clip reaches its event; got {self.max_clip:g} s")


@dataclass(frozen=True)
class _Coded:
    """One encoded frame in the ring: pts and dts in milliseconds since the source's first frame."""

    pts: int
    dts: int
    keyframe: bool
    data: bytes


class _Clip:
    """One clip being written: an MP4 whose stream copies the encoder's parameters, packets shifted to start at 0."""

    def __init__(self, path: Path, template: av.VideoStream, start: int, limit: int) -> None:
        self.path = path
        self.start = start
        self.until = start
        self.limit = limit
        self.last = start
        self.frames = 0
        self._output = av.open(str(path), "w", format="mp4")
        try:
            self._stream = self._output.add_stream_from_template(template)
            self._stream.time_base = MILLISECONDS
        except BaseException:
            self._output.close()
            raise

    def extend(self, until: int) -> None:
        """Hold packets up to `until` (ms), within the clip's limit."""
        self.until = max(self.until, min(until, self.limit))

    def add(self, coded: _Coded) -> None:
        """Mux one buffered packet (its bytes copied: the ring keeps its own for later clips)."""
        packet = av.Packet(coded.data)
        packet.pts, packet.dts = coded.pts - self.start, coded.dts - self.start
        packet.time_base = MILLISECONDS
        packet.is_keyframe = coded.keyframe
        packet.stream = self._stream
        self._output.mux(packet)
        self.last = coded.pts
        self.frames += 1

    def close(self) -> None:
        """Write the MP4's index (the file plays from here on)."""
        self._output.close()


class EventClips:
    """One live source's annotated frames, encoded once (H.264, keyframe every second) into a ring buffer of
    packets covering at least `pre_roll` seconds; each event matching a trigger opens a clip that starts at the
    keyframe at or before (event time − pre_roll) — copying buffered packets, no re-encoding — and continues until
    `post_roll` seconds after the last matching event (events during a clip extend it, up to max_clip), then
    finalizes the MP4 (faststart not needed; always a playable file, also at close/Ctrl-C).

    Clips are named `<source>-<type>[-<name>]-<UTC time of the event>.mp4` (`-2`, `-3`… added rather than replace
    a file). The first frame fixes the picture size (made even for 4:2:0; later frames are fitted to it). A clip
    that cannot be written (disk full) is logged and abandoned; the source and later clips go on. `write`, `event`
    and `close` may come from different threads; after `close` frames and events are ignored. `clips` lists the
    clips finished so far.
    """

    def __init__(self, folder: Path, triggers: Sequence[ClipTrigger], settings: ClipSettings, *, source: str,
                 fps: float | None) -> None:
        settings.validate()
        self.folder = folder
        self.triggers = tuple(triggers)
        self.settings = settings
        self.source = source
        self.fps = fps
        self.clips: list[Path] = []
        self._name = _safe(mask_credentials(source)) or "source"
        self._lock = threading.Lock()
        self._closed = False
        self._gops: deque[list[_Coded]] = deque()  # the ring: groups of packets, each from a keyframe on
        self._clip: _Clip | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the encoded pictures
        self._origin = 0.0  # source time (s) of the first frame: pts 0
        self._last_pts: int | None = None
        self._last_key: int | None = None
        self._capture_lag = 0.0  # the latest frame's capture time less its source time (s): events' wall clock
        self._encoder_output = av.open(os.devnull, "w", format="null")  # holds the encoder; never written to
        self._encoder = self._add_encoder()
        folder.mkdir(parents=True, exist_ok=True)

    def _add_encoder(self) -> av.VideoStream:
        """The H.264 encoder (its stream is each clip's template), millisecond timestamps, in-band parameter sets."""
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps else None
        stream = cast(av.VideoStream, self._encoder_output.add_stream(H264[0], rate=rate))
        stream.pix_fmt = H264[1]
        stream.time_base = stream.codec_context.time_base = MILLISECONDS
        gop = max(1, round(KEYFRAME_INTERVAL * (self.fps or FALLBACK_FPS)))
        stream.options = {**ENCODER_OPTIONS, "g": str(gop)}
        return stream

    def write(self, frame: Frame) -> None:
        """Encode one rendered frame into the ring, and into the open clip while it runs; raises `WriteError` only
        when the encoder fails."""
        with self._lock:
            if self._closed:
                return
            seconds = frame.captured_at if frame.seconds is None else frame.seconds
            if self._size is None:
                height, width = frame.size
                self._size = (max(2, width - width % 2), max(2, height - height % 2))
                self._encoder.width, self._encoder.height = self._size
                self._origin = seconds
            self._capture_lag = frame.captured_at - seconds
            pts = round((seconds - self._origin) * 1000)
            pts = pts if self._last_pts is None else max(pts, self._last_pts + 1)
            self._last_pts = pts
            picture = encoder_picture(fit(frame.image, *self._size), self._encoder.pix_fmt)
            picture.pts, picture.time_base = pts, MILLISECONDS
            if self._last_key is not None and pts - self._last_key >= KEYFRAME_INTERVAL * 1000 - 1:
                picture.pict_type = av.video.frame.PictureType.I
            self._encode(picture)

    def _encode(self, picture: av.VideoFrame | None) -> None:
        """Encode `picture` (None: flush the encoder) and take its packets."""
        try:
            packets = self._encoder.encode(picture)
        except av.FFmpegError as error:
            raise WriteError(f"cannot encode the clips of {self._name}: {one_line(error)}") from error
        for packet in packets:
            pts = packet.pts if packet.pts is not None else cast(int, self._last_pts)
            dts = packet.dts if packet.dts is not None else pts
            self._take(_Coded(pts, dts, packet.is_keyframe, bytes(packet)))

    def _take(self, coded: _Coded) -> None:
        """Keep one packet in the ring (dropping what is older than the pre-roll needs) and pass it to the open
        clip, which ends at the first packet after its `until`."""
        if coded.keyframe:
            self._last_key = coded.pts
            self._gops.append([])
        if not self._gops:  # no keyframe yet (the encoder always starts with one): nothing could start a clip
            return
        self._gops[-1].append(coded)
        horizon = coded.pts - round((self.settings.pre_roll + LATE_EVENTS) * 1000)
        while len(self._gops) > 1 and self._gops[1][0].pts <= horizon:
            self._gops.popleft()
        if self._clip is not None:
            if coded.pts > self._clip.until:
                self._finish()
            else:
                self._add(coded)

    def event(self, event: Event) -> None:
        """Take one event of this source: a matching one opens a clip, or extends the open one."""
        with self._lock:
            if self._closed or not any(trigger.matches(event) for trigger in self.triggers):
                return
            at = round((event.time - self._origin) * 1000)
            until = at + round(self.settings.post_roll * 1000)
            if self._clip is not None:
                self._clip.extend(until)
                return
            self._open(event, at, until)

    def _open(self, event: Event, at: int, until: int) -> None:
        """Start a clip for `event` (at `at` ms) with the buffered packets from the keyframe at or before its
        pre-roll (the oldest one if the ring does not reach back that far) up to `until`."""
        if not self._gops:
            log.warning("%s: no frame encoded yet; no clip for the %s event at %.3f s", self._name, event.type,
                        event.time)
            return
        begin = at - round(self.settings.pre_roll * 1000)
        gops = list(self._gops)
        first = next((i for i in range(len(gops) - 1, -1, -1) if gops[i][0].pts <= begin), 0)
        start = gops[first][0].pts
        try:
            path = self._claim(event)
        except OSError as error:
            log.warning("%s: cannot write a clip into %s: %s", self._name, self.folder, one_line(error))
            return
        try:
            clip = _Clip(path, self._encoder, start, start + round(self.settings.max_clip * 1000))
        except (av.FFmpegError, OSError) as error:
            log.warning("%s: cannot write the clip %s: %s", self._name, path, one_line(error))
            path.unlink(missing_ok=True)
            return
        clip.extend(until)
        self._clip = clip
        log.info("%s: %s event at %.3f s: saving %s", self._name, event.type, event.time, path)
        for coded in (coded for gop in gops[first:] for coded in gop):
            if self._clip is None:  # abandoned: it could not be written
                return
            if coded.pts > clip.until:
                self._finish()
                return
            self._add(coded)

    def _claim(self, event: Event) -> Path:
        """A new, unique file for `event`'s clip, created empty (an existing file is never replaced)."""
        wall = event.time + self._capture_lag + (time.time() - time.monotonic())
        stamp = datetime.fromtimestamp(wall, UTC).strftime("%Y%m%dT%H%M%SZ")
        label = "-".join(part for part in (self._name, event.type, _safe(event.name)) if part)
        suffix = 1
        while True:
            path = self.folder / f"{label}-{stamp}{f'-{suffix}' if suffix > 1 else ''}.mp4"
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            except FileExistsError:
                suffix += 1
                continue
            return path

    def _add(self, coded: _Coded) -> None:
        """Mux one packet into the open clip; a clip that cannot be written is abandoned (logged, file removed)."""
        clip = cast(_Clip, self._clip)
        try:
            clip.add(coded)
        except (av.FFmpegError, OSError) as error:
            self._clip = None
            log.warning("%s: the clip %s could not be written (%s); abandoned", self._name, clip.path,
                        one_line(error))
            with contextlib.suppress(av.FFmpegError, OSError):  # already failing: what is left is removed
                clip.close()
            clip.path.unlink(missing_ok=True)

    def _finish(self) -> None:
        """Finalize the open clip and list it."""
        clip = cast(_Clip, self._clip)
        self._clip = None
        try:
            clip.close()
        except (av.FFmpegError, OSError) as error:
            log.warning("%s: the clip %s could not be finished (%s); removed", self._name, clip.path,
                        one_line(error))
            clip.path.unlink(missing_ok=True)
            return
        self.clips.append(clip.path)
        log.info("%s: saved %s (%d frames, %.1f s)", self._name, clip.path, clip.frames,
                 (clip.last - clip.start) / 1000)

    def close(self) -> None:
        """Flush the encoder and finalize the open clip, if any, with what it holds so far; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._size is not None:
                    self._encode(None)
            finally:
                if self._clip is not None:
                    self._finish()
                self._encoder_output.close()


def _safe(text: str | None) -> str:
    """`text` as a file-name part: runs of anything but letters, digits, dots and dashes as `_`, trimmed."""
    return _UNSAFE.sub("_", text or "").strip("._-")[:MAX_NAME_PART]
