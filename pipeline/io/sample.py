"""A deterministic synthetic clip: coloured shapes gliding over a static textured background, with a tone melody.

The first half second shows the background alone (INTRO_SECONDS).

Used by `seg-video --make-sample`, the tests and the benchmark. The background never changes (background
subtraction can learn it); each shape is one solid colour, so its ground-truth mask is exact.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt

from seg_video.io.video import AUDIO_COPY, ENCODER_THREADING, audio_fits

COLOURS_BGR = ((40, 40, 220), (220, 110, 30), (40, 190, 60), (20, 210, 230), (200, 60, 200), (230, 230, 230))
"""Object colours (red, blue, green, yellow, magenta, white), far from the muted background."""
SHAPES = ("circle", "rectangle", "triangle")
AUDIO_RATE = 48_000
MELODY_HZ = (523.25, 659.25, 783.99, 1046.50)  # C5 E5 G5 C6, repeated
NOTE_SECONDS = 0.25
INTRO_SECONDS = 0.5
"""The scene starts empty for this long, as a surveillance camera would, so background models learn a clean
background before the shapes arrive."""


class SampleScene:
    """Renders frame `index` of the scene; the same index always gives the same picture and masks."""

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30.0, objects: int = 3) -> None:
        if width < 16 or height < 16 or fps <= 0 or objects < 1:
            raise ValueError(f"a sample scene needs at least 16x16 pixels, fps > 0 and one object; "
                             f"got {width}x{height}, {fps} fps, {objects} objects")
        self.width, self.height, self.fps, self.objects = width, height, fps, objects
        self.size = max(4, min(width, height) // 8)  # half the extent of each shape
        self.background = _background(width, height)

    def render(self, index: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
        """(BGR image, (n,H,W) bool masks); a mask holds the visible pixels (later objects cover earlier ones)."""
        image = self.background.copy()
        masks = np.zeros((self.objects, self.height, self.width), bool)
        if index / self.fps < INTRO_SECONDS:
            return image, masks
        for k in range(self.objects):
            centre = self._centre(k, index / self.fps)
            self._draw(image, k, centre, COLOURS_BGR[k % len(COLOURS_BGR)])
            self._draw(masks[k].view(np.uint8), k, centre, (1,))
            masks[:k] &= ~masks[k]
        return image, masks

    def _centre(self, k: int, seconds: float) -> tuple[int, int]:
        """Object k's centre at `seconds`: a Lissajous path of its own frequencies and phase, inside the frame."""
        phase = 2 * math.pi * k / self.objects
        reach_x, reach_y = self.width / 2 - self.size - 1, self.height / 2 - self.size - 1
        x = self.width / 2 + reach_x * math.sin(2 * math.pi * (0.21 + 0.06 * k) * seconds + phase)
        y = self.height / 2 + reach_y * math.cos(2 * math.pi * (0.15 + 0.05 * k) * seconds + 1.7 * phase)
        return round(x), round(y)

    def _draw(self, canvas: npt.NDArray[np.uint8], k: int, centre: tuple[int, int], colour: tuple[int, ...]) -> None:
        """Fill object k's shape (circle, rectangle or triangle, by k) around `centre` into `canvas`."""
        (x, y), s = centre, self.size
        shape = SHAPES[k % len(SHAPES)]
        if shape == "circle":
            cv2.circle(canvas, (x, y), s, colour, thickness=-1)
        elif shape == "rectangle":
            cv2.rectangle(canvas, (x - s, y - s * 2 // 3), (x + s, y + s * 2 // 3), colour, thickness=-1)
        else:
            cv2.fillPoly(canvas, [np.array([(x, y - s), (x + s, y + s), (x - s, y + s)], np.int32)], colour)


def _background(width: int, height: int) -> npt.NDArray[np.uint8]:
    """A smooth colour gradient with fixed low-amplitude noise (seeded, so every run draws the same one)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / width, ys / height
    planes = (70 + 50 * u, 80 + 40 * v, 95 + 35 * (u + v) / 2)
    noise = np.random.default_rng(0).normal(0.0, 3.0, (height, width, 3)).astype(np.float32)
    return np.clip(np.stack(planes, axis=2) + noise, 0, 255).astype(np.uint8)


def melody(start: int, count: int) -> npt.NDArray[np.float32]:
    """Samples [start, start+count) of the tone track at AUDIO_RATE: sine notes with short fades (no clicks)."""
    n = np.arange(start, start + count)
    note_len = int(NOTE_SECONDS * AUDIO_RATE)
    freq = np.asarray(MELODY_HZ)[(n // note_len) % len(MELODY_HZ)]
    pos = n % note_len
    fade = np.minimum(1.0, np.minimum(pos, note_len - pos) / (0.01 * AUDIO_RATE))
    return (0.3 * fade * np.sin(2 * np.pi * freq * n / AUDIO_RATE)).astype(np.float32)


def frame_ticks(seconds: float, fps: float, vfr: bool) -> list[tuple[int, int]]:
    """(pts, duration) of each frame in ticks of 1/fps; VFR alternates 1- and 2-tick frames (1/30 s, 1/15 s at 30)."""
    total = round(seconds * fps)
    ticks: list[tuple[int, int]] = []
    pts = 0
    while pts < total:
        step = 1 + len(ticks) % 2 if vfr else 1
        ticks.append((pts, step))
        pts += step
    return ticks


def write_sample_clip(
    path: str | Path,
    *,
    seconds: float = 6.0,
    width: int = 640,
    height: int = 360,
    fps: float = 30.0,
    audio: bool = True,
    audio_codec: str = "aac",
    video_codec: str = "libx264",
    vfr: bool = False,
) -> Path:
    """Write the sample scene as a clip (container from the extension) and return its path."""
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    scene = SampleScene(width, height, fps)
    with av.open(str(path), "w") as container:  # the file is created at the first mux, so errors leave none
        kind = container.format.name
        if audio and not audio_fits(kind, av.Codec(audio_codec, "w").canonical_name):
            carried = ", ".join(sorted(AUDIO_COPY.get(kind, ()))) or "nothing"
            raise ValueError(f"a {kind} file cannot carry {audio_codec} audio (it carries: {carried}); try .mkv")
        video = cast(av.VideoStream, container.add_stream(video_codec, rate=rate))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = 1 / rate
        video.options = {"crf": "18", "preset": "veryfast"}
        video.thread_type = ENCODER_THREADING  # the same clip every time (see ENCODER_THREADING)
        sound = None
        if audio:
            sound = cast(av.AudioStream, container.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono"))
        written = 0
        for index, (ticks, step) in enumerate(frame_ticks(seconds, fps, vfr)):
            frame = av.VideoFrame.from_ndarray(scene.render(index)[0], format="bgr24")
            frame.pts = ticks
            container.mux(video.encode(frame))
            if sound is not None:
                until = round((ticks + step) / rate * AUDIO_RATE)
                chunk = av.AudioFrame.from_ndarray(melody(written, until - written)[None], format="flt",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, written, Fraction(1, AUDIO_RATE)
                container.mux(sound.encode(chunk))
                written = until
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))
    return path
