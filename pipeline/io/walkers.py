"""Synthetic clips of "walkers": filled shapes of a set size walking straight paths at set speeds over the sample
scene's static textured background, with the exact truth of every frame.

A walker's position is the bottom centre of its box (the watch stage's default anchor), so a test knows exactly
when it crosses a line or enters a zone; its mask is the shape's visible pixels (later walkers cover earlier ones),
so a test knows the exact area it covers. The background never changes and the shapes are solid colours far from
it, so background subtraction (the `motion` engine) segments them well. Used by the tests of lines and zones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.config import EncoderSettings
from seg_video.core.types import ClassTable, Frame, InstanceMasks, Segmentation
from seg_video.io.sample import COLOURS_BGR, SampleScene
from seg_video.io.video import VideoSink

Point = tuple[float, float]
Box = tuple[int, int, int, int]
Shape = Literal["rectangle", "ellipse"]


@dataclass(frozen=True)
class Walker:
    """A `size` (width, height) shape that appears at `path[0]` at `start` seconds, walks each leg of `path` at
    `speed` pixels per second, stands still for `pause` seconds at each inner point (on a line, say, before going
    on or back) and is gone once it reaches the last point. Points are where the bottom centre of its box is."""

    path: tuple[Point, ...]
    speed: float
    size: tuple[int, int] = (24, 48)
    start: float = 0.0
    pause: float = 0.0
    shape: Shape = "rectangle"
    colour: tuple[int, int, int] = COLOURS_BGR[0]
    class_name: str = "person"

    def __post_init__(self) -> None:
        if len(self.path) < 2 or self.speed <= 0 or min(self.size) < 1 or self.start < 0 or self.pause < 0:
            raise ValueError(f"a walker needs a path of 2 or more points, speed > 0, a size of at least 1x1 and "
                             f"start and pause >= 0; got {len(self.path)} points, speed {self.speed}, size "
                             f"{self.size}, start {self.start}, pause {self.pause}")

    @property
    def duration(self) -> float:
        """Seconds from its start to its last point, pauses included."""
        walked = sum(math.dist(a, b) for a, b in zip(self.path, self.path[1:], strict=False)) / self.speed
        return walked + self.pause * (len(self.path) - 2)

    def position(self, seconds: float) -> Point | None:
        """Where its bottom centre is at `seconds`, or None before its start and once it has arrived."""
        left = seconds - self.start
        if left < 0:
            return None
        for k, (a, b) in enumerate(zip(self.path, self.path[1:], strict=False)):
            leg = math.dist(a, b) / self.speed
            if left < leg:
                share = left / leg
                return a[0] + share * (b[0] - a[0]), a[1] + share * (b[1] - a[1])
            left -= leg
            if k < len(self.path) - 2:
                if left < self.pause:
                    return b
                left -= self.pause
        return None

    def box(self, seconds: float) -> Box | None:
        """Its integer xyxy box (x2, y2 exclusive; not clipped to the frame) at `seconds`, or None when gone."""
        point = self.position(seconds)
        if point is None:
            return None
        width, height = self.size
        left, bottom = round(point[0] - width / 2), round(point[1])
        return left, bottom - height, left + width, bottom


class WalkersScene:
    """Frame `index` of the walkers over the sample scene's background: the picture, and the truth as a
    `Segmentation` (boxes clipped to the frame, visible masks, track id k + 1 for walker k, class by name)."""

    def __init__(self, walkers: Sequence[Walker], width: int = 320, height: int = 240, fps: float = 30.0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0; got {fps}")
        self.walkers, self.width, self.height, self.fps = tuple(walkers), width, height, fps
        self.background = SampleScene(width, height, fps).background
        self.classes = ClassTable(tuple(dict.fromkeys(walker.class_name for walker in self.walkers)))

    def render(self, index: int) -> tuple[npt.NDArray[np.uint8], Segmentation]:
        """(BGR picture, truth) of frame `index` (at `index / fps` seconds)."""
        image = self.background.copy()
        masks: list[npt.NDArray[np.bool_]] = []
        boxes: list[Box] = []
        numbers: list[int] = []
        for number, walker in enumerate(self.walkers, start=1):
            box = walker.box(index / self.fps)
            if box is None:
                continue
            mask = np.zeros((self.height, self.width), np.uint8)
            _fill(mask, walker.shape, box, (1,))
            if not mask.any():  # out of the picture
                continue
            _fill(image, walker.shape, box, walker.colour)
            for earlier in masks:
                earlier &= ~mask.astype(bool)
            masks.append(mask.astype(bool))
            x1, y1, x2, y2 = box
            boxes.append((max(0, x1), max(0, y1), min(self.width, x2), min(self.height, y2)))
            numbers.append(number)
        ids = self.classes.ids_of([self.walkers[n - 1].class_name for n in numbers])
        truth = Segmentation(height=self.height, width=self.width, classes=self.classes,
                             boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.ones(len(boxes), np.float32),
                             class_ids=np.array(ids, np.int64),
                             masks=InstanceMasks.from_full(np.array(masks, bool).reshape(-1, self.height, self.width)),
                             track_ids=np.array(numbers, np.int64))
        return image, truth

    def truth(self, index: int) -> Segmentation:
        """The truth of frame `index` alone."""
        return self.render(index)[1]


def _fill(canvas: npt.NDArray[np.uint8], shape: Shape, box: Box, colour: tuple[int, ...]) -> None:
    """Fill `shape` over the xyxy `box` (x2, y2 exclusive) of `canvas`, clipped to it."""
    x1, y1, x2, y2 = box
    if shape == "rectangle":
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, thickness=cv2.FILLED)
    else:
        centre = ((x1 + x2 - 1) // 2, (y1 + y2 - 1) // 2)
        cv2.ellipse(canvas, centre, ((x2 - x1 - 1) // 2, (y2 - y1 - 1) // 2), 0, 0, 360, colour, thickness=cv2.FILLED)


def write_walkers_clip(path: str | Path, walkers: Sequence[Walker], seconds: float,
                       size: tuple[int, int] = (320, 240), fps: float = 30.0) -> WalkersScene:
    """Write `seconds` of the walkers' scene at `size` (width, height) and `fps` as a video (H.264 in an MP4; the
    container follows the extension) and return the scene, whose `render` gives each frame's truth."""
    scene = WalkersScene(walkers, *size, fps=fps)
    rate = Fraction(fps).limit_denominator(1001)
    with VideoSink(path, width=size[0], height=size[1], time_base=1 / rate, fps=fps,
                   settings=EncoderSettings(crf=18)) as sink:
        for index in range(round(seconds * fps)):
            sink.write(Frame(index=index, image=scene.render(index)[0], pts=index, time_base=1 / rate))
    return scene
