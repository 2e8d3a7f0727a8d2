"""`motion`: background subtraction (MOG2 / KNN) at reduced resolution, one instance per moving object.

The real-time CPU engine for fixed cameras: the background model learns from the frames it sees, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.classical._common import MAX_KERNEL, FrameEngine, InstanceParams, at_least, between
from seg_video.engines.classical._regions import ellipse, segmentation, shrink

CLASSES = ClassTable(("moving",))
MOVING = 255
"""What the subtractors mark as foreground (shadows are 127)."""
FRAGMENT = 0.25
"""A moving region smaller than this fraction of a larger one close by (see `merge`) is a fragment of it."""
STACKED = 0.5
"""Regions one above the other sharing at least this fraction of the narrower one's width are one object's parts."""
TEXTURE_VARIANCE = 16.0
"""Grey-level variance a neighbourhood needs before its texture is compared (flat areas have none to compare)."""
BACKGROUND_REFRESH = 10
"""Frames between fetches of the model's background picture (a few milliseconds each at 720p)."""
CLIPPED = 250
"""A channel value at or above this is taken as clipped: the camera's highlight, not a measure of the scene."""


@dataclass
class MotionParams(InstanceParams):
    """Background model, working resolution and mask clean-up."""

    method: Literal["mog2", "knn"] = "mog2"
    history: int = 0
    """Frames the background model remembers; 0: `history_seconds` of the video, at its frame rate."""
    history_seconds: float = 15.0
    """How long, in time, the model remembers: a walker passes long before it would fade into the background, a
    slow change of light is learnt within it."""
    var_threshold: float = 16.0
    """mog2: squared Mahalanobis distance beyond which a pixel is not background."""
    mixtures: int = 3
    """mog2: most Gaussians a pixel's model keeps (the background and two alternates, such as a flickering light
    or a swaying branch); each one more costs ~20 % of the model's time (OpenCV's default is 5)."""
    dist_threshold: float = 400.0
    """knn: squared colour distance beyond which a pixel is not background."""
    detect_shadows: bool = True
    """Tell shadows from objects (and drop them) at some cost."""
    learning_rate: float = -1.0
    """How fast the background adapts, 0..1; -1: fast during warm-up (OpenCV's 1 / (2 x frames seen)), then
    1 / history, so objects that pause for a few seconds are not taken into the background."""
    scale: float = 0.5
    """Model a copy of the frame resized by this factor; masks are upscaled (nearest) to frame size."""
    kernel: int = 3
    """Size (working pixels) of the elliptic kernel that opens away specks and closes holes."""
    warmup: int = 15
    """Frames the model only learns from before it reports anything."""
    light_cell: int = 16
    """Brightness compensation: the picture's brightness is compared with the background's in square cells this
    many working pixels wide; each frame is divided by the ratio (smoothed, cells holding objects overruled by their
    neighbours), so sun, clouds, gain and lights on any part of the scene do not read as motion (0: off)."""
    relearn: float = 0.25
    """When more than this fraction of the picture still reads as moving after compensation (a light switched, the
    camera's exposure jumped), the model re-learns at `relearn_rate` for that frame instead of reporting it."""
    relearn_rate: float = 0.2
    """How fast the model re-learns such a frame, 0..1."""
    texture: float = 0.8
    """Light-change check: a moving pixel whose neighbourhood correlates this well (0..1) with the background's is
    the background lit differently (sun, shadow edge), not an object (0: off)."""
    texture_window: int = 7
    """Side (working pixels) of that neighbourhood."""
    merge: int = 7
    """A small region (a head, a bag, a leg the model half missed) this close (working pixels) to a larger one is
    part of the larger one's object (0: every region its own instance)."""
    min_fraction: float = 0.0004
    """Specks: regions smaller than this fraction of the picture are dropped (as `min_area` pixels are)."""

    def validate(self) -> None:
        """Check the model settings, scale, kernel and warm-up."""
        super().validate()
        at_least("history", self.history, 0)
        between("history_seconds", self.history_seconds, 0.1, 86400.0)
        at_least("var_threshold", self.var_threshold, 0)
        between("mixtures", self.mixtures, 1, 8)
        at_least("dist_threshold", self.dist_threshold, 0)
        if self.learning_rate != -1 and not 0 <= self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be -1 (automatic) or between 0 and 1; got {self.learning_rate}")
        between("scale", self.scale, 0.01, 1.0)
        between("kernel", self.kernel, 1, MAX_KERNEL)
        at_least("warmup", self.warmup, 0)
        between("light_cell", self.light_cell, 0, 1024)
        between("relearn", self.relearn, 0.0, 1.0)
        between("relearn_rate", self.relearn_rate, 0.0, 1.0)
        between("texture", self.texture, 0.0, 1.0)
        between("texture_window", self.texture_window, 3, MAX_KERNEL)
        between("merge", self.merge, 0, MAX_KERNEL)
        between("min_fraction", self.min_fraction, 0.0, 1.0)


@dataclass(frozen=True)
class _Background:
    """The model's background picture (BGR, working size) with what the light check compares against: its grey
    levels and their mean and variance over the check's window."""

    picture: npt.NDArray[np.uint8]
    grey: npt.NDArray[np.float32]
    mean: npt.NDArray[np.float32]
    variance: npt.NDArray[np.float32]

    @classmethod
    def of(cls, picture: npt.NDArray[np.uint8], window: int) -> _Background:
        """Its grey levels' statistics over `window`-pixel squares."""
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY).astype(np.float32)
        mean = cast(npt.NDArray[np.float32], cv2.blur(grey, (window, window)))
        variance = cv2.blur(cv2.multiply(grey, grey), (window, window)) - cv2.multiply(mean, mean)
        return cls(picture, grey, mean, cast(npt.NDArray[np.float32], variance))


@dataclass(frozen=True)
class _Observed:
    """What the model saw in one frame, for `MotionEngine.finish`: the pixels it marks moving, the compensated
    picture, and the background to check them against (None: no light check)."""

    moving: npt.NDArray[np.bool_]
    image: npt.NDArray[np.uint8]
    background: _Background | None


class MotionEngine(FrameEngine):
    """Moving objects against a learnt background; score: the fraction of each region's pixels that the model itself
    marked as moving (clean-up fills holes and bridges gaps, so ragged or hollow detections score lower)."""

    name = "motion"
    summary = "background subtraction (MOG2/KNN), one instance per moving object; real-time surveillance"
    Params = MotionParams

    def __init__(self, params: MotionParams) -> None:
        self.params = params
        self._kernel = ellipse(params.kernel)
        self._merge = ellipse(params.merge) if params.merge else None
        self.reset()

    def reset(self) -> None:
        """A fresh background model: the next frame is the first of a new video."""
        params = self.params
        self._model: cv2.BackgroundSubtractor
        if params.method == "mog2":
            mog2 = cv2.createBackgroundSubtractorMOG2(params.history or 500, params.var_threshold,
                                                      params.detect_shadows)
            mog2.setNMixtures(params.mixtures)
            self._model = mog2
        else:
            self._model = cv2.createBackgroundSubtractorKNN(params.history or 500, params.dist_threshold,
                                                            params.detect_shadows)
        self._seen = 0
        self._first_time: float | None = None
        """The first frame's time (s): with the frames seen since, the video's frame rate."""
        self._reference: npt.NDArray[np.float32] | None = None
        """The background's brightness per cell, learnt during warm-up: what each frame is brought back to."""
        self._background: _Background | None = None
        """The model's background, fetched every BACKGROUND_REFRESH frames (it changes slowly by design)."""

    @property
    def classes(self) -> ClassTable:
        """One class, "moving"."""
        return CLASSES

    def prepare(self, frame: Frame) -> npt.NDArray[np.uint8]:
        """The frame at working resolution (stateless, so it runs ahead in the preprocess thread)."""
        return shrink(frame.image, self.params.scale)

    def segment(self, frame: Frame, prepared: npt.NDArray[np.uint8]) -> Segmentation:
        """Update the model with the frame; after warm-up, its moving objects (`observe`, then `finish`)."""
        return self.finish(frame, self._observe(frame, prepared))

    def observe(self, frames: Sequence[Frame], prepared: Sequence[npt.NDArray[np.uint8]]) -> list[_Observed | None]:
        """Update the model with each frame, in order (brightness compensated): the pixels it finds moving."""
        return [self._observe(frame, ready) for frame, ready in zip(frames, prepared, strict=True)]

    def finish(self, frame: Frame, observed: _Observed | None) -> Segmentation:
        """The moving pixels that are not the background relit, cleaned, as instances, fragments of one object
        together (nothing during warm-up or a re-learnt frame). Needs no other frame, so runs in a stage of its
        own."""
        if observed is None:
            return Segmentation.empty(*frame.size, CLASSES)
        params, moving = self.params, observed.moving
        if observed.background is not None:
            self._drop_relit(moving, observed.image, observed.background)
        opened = cv2.morphologyEx(moving.view(np.uint8), cv2.MORPH_OPEN, self._kernel)
        labels, boxes, areas = self._objects(cast(npt.NDArray[np.uint8], cv2.morphologyEx(opened, cv2.MORPH_CLOSE,
                                                                                            self._kernel)))
        count = len(areas)
        scores = np.bincount(labels[moving], minlength=count) / np.maximum(areas, 1)
        min_area = max(params.min_area, params.min_fraction * frame.size[0] * frame.size[1])
        return segmentation(labels, frame.size, CLASSES, np.zeros(count, np.int64), min_area=int(min_area),
                            max_instances=params.max_instances, score_of=scores, scored=False, boxes=boxes,
                            areas=areas)

    def _observe(self, frame: Frame, prepared: npt.NDArray[np.uint8]) -> _Observed | None:
        """Update the model with one frame; None while warming up or re-learning a changed scene."""
        params = self.params
        warming_up = self._seen < params.warmup
        self._seen += 1
        if self._first_time is None:
            self._first_time = frame.seconds
        rate = params.learning_rate if params.learning_rate >= 0 else -1.0 if warming_up else 1 / self._history(frame)
        image = self._compensated(prepared, warming_up)
        raw = self._model.apply(image, learningRate=rate)
        if warming_up:
            return None
        moving = raw == MOVING
        if np.count_nonzero(moving) > params.relearn * moving.size:  # the whole scene changed: learn it, quickly
            self._model.apply(image, learningRate=params.relearn_rate)
            self._background = None
            return None
        return _Observed(moving, image, self._background_image() if params.texture else None)

    def _objects(self, cleaned: npt.NDArray[np.uint8]
                 ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Label each moving object in the cleaned mask: (label map, each label's xyxy box, each label's pixel count;
        a label merged into another keeps no pixels). Regions within `merge` pixels of a larger one join it when
        they are a fragment of it (smaller than FRAGMENT of it) or stacked on it (sharing most of their width: an
        upright body split across); regions of like size side by side stay apart (two walkers)."""
        # Grana's block-based labelling: with statistics, well under half the time of OpenCV's default here
        count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(cleaned, 8, cv2.CV_32S, cv2.CCL_GRANA)
        left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        boxes = np.stack([left, top, left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]], axis=1)
        areas, width = stats[:, cv2.CC_STAT_AREA].astype(np.int64), stats[:, cv2.CC_STAT_WIDTH]
        areas[0] = 0
        if self._merge is None or count <= 2:
            return cast(npt.NDArray[np.int32], labels), boxes.astype(np.int64), areas
        group_count, groups = cv2.connectedComponents(cv2.dilate(cleaned, self._merge), connectivity=8,
                                                      ltype=cv2.CV_32S)
        pixels = np.flatnonzero(cleaned)
        group_of = np.zeros(count, np.int64)
        group_of[labels.ravel()[pixels]] = groups.ravel()[pixels]  # a region lies in one group
        best = np.zeros(group_count, np.int64)  # per group: its largest region, as area x count + region
        np.maximum.at(best, group_of[1:], areas[1:] * count + np.arange(1, count))
        main = best[group_of] % count
        shared = np.minimum(boxes[:, 2], boxes[main, 2]) - np.maximum(boxes[:, 0], boxes[main, 0])
        joins = (areas < FRAGMENT * areas[main]) | (shared >= STACKED * np.minimum(width, width[main]))
        joins[0] = False
        if joins.any():
            target = np.where(joins, main, np.arange(count))
            for side, grow in ((0, np.minimum), (1, np.minimum), (2, np.maximum), (3, np.maximum)):
                grow.at(boxes[:, side], target, boxes[:, side].copy())
            labels.ravel()[pixels] = target[labels.ravel()[pixels]]
            areas = np.bincount(target, weights=areas, minlength=count).astype(np.int64)
        return cast(npt.NDArray[np.int32], labels), boxes.astype(np.int64), areas

    def _drop_relit(self, moving: npt.NDArray[np.bool_], image: npt.NDArray[np.uint8], background: _Background) -> None:
        """Clear, in `moving`, where the picture shows the background's own texture only lit differently: the
        normalised correlation of the two over a small window is at least `texture` (and both have texture to
        compare). Only the moving pixels' bounding box is looked at."""
        half = self.params.texture_window // 2 + 1
        x, y, width, height = cv2.boundingRect(moving.view(np.uint8))
        if not width:
            return
        x0, y0 = max(0, x - half), max(0, y - half)
        x1, y1 = min(image.shape[1], x + width + half), min(image.shape[0], y + height + half)
        ours = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
        theirs, mean_theirs = background.grey[y0:y1, x0:x1], background.mean[y0:y1, x0:x1]
        var_theirs = background.variance[y0:y1, x0:x1]
        size = (self.params.texture_window,) * 2
        mean_ours = cv2.blur(ours, size)
        covariance = cv2.blur(cv2.multiply(ours, theirs), size) - cv2.multiply(mean_ours, mean_theirs)
        var_ours = cv2.blur(cv2.multiply(ours, ours), size) - cv2.multiply(mean_ours, mean_ours)
        textured = cv2.min(var_ours, var_theirs) > TEXTURE_VARIANCE
        relit = textured & (covariance >= self.params.texture * cv2.sqrt(cv2.max(cv2.multiply(var_ours, var_theirs),
                                                                                   1e-6)))
        moving[y0:y1, x0:x1] &= ~relit

    def _background_image(self) -> _Background:
        """The model's background, at most BACKGROUND_REFRESH frames old."""
        if self._background is None or self._seen % BACKGROUND_REFRESH == 0:
            picture = cast(npt.NDArray[np.uint8], self._model.getBackgroundImage())
            self._background = _Background.of(picture, self.params.texture_window)
        return self._background

    def _history(self, frame: Frame) -> float:
        """Frames the model remembers: `history`, or `history_seconds` at the rate the frames' times show (30 fps
        for frames without times)."""
        if self.params.history:
            return float(self.params.history)
        seconds = frame.seconds
        fps = 30.0
        if seconds is not None and self._first_time is not None and seconds > self._first_time:
            fps = (self._seen - 1) / (seconds - self._first_time)
        return max(1.0, self.params.history_seconds * fps)

    def _compensated(self, image: npt.NDArray[np.uint8], learning: bool) -> npt.NDArray[np.uint8]:
        """`image` with its brightness brought back to the background's, cell by cell (see `light_cell`); during
        warm-up the background's brightness is learnt instead."""
        cell = self.params.light_cell
        if not cell:
            return image
        height, width = image.shape[:2]
        cells = (max(1, width // cell), max(1, height // cell))
        covered = (min(width, cells[0] * cell), min(height, cells[1] * cell))  # whole cells: OpenCV's fast path for
        # averaging, ten times faster; the few rows and columns left over take their neighbours' correction
        brightness = cv2.resize(cv2.cvtColor(image[:covered[1], :covered[0]], cv2.COLOR_BGR2GRAY), cells,
                                interpolation=cv2.INTER_AREA)
        brightness = brightness.astype(np.float32) + 1.0
        if self._reference is None or learning:
            self._reference = brightness if self._reference is None else 0.8 * self._reference + 0.2 * brightness
            return image
        ratio = cv2.medianBlur(brightness / self._reference, 5 if min(cells) >= 5 else 3 if min(cells) >= 3 else 1)
        gain_map = cv2.copyMakeBorder(cv2.resize(ratio, covered, interpolation=cv2.INTER_LINEAR), 0,
                                      height - covered[1], 0, width - covered[0], cv2.BORDER_REPLICATE)
        gain = cv2.merge([gain_map] * 3)
        compensated = cv2.divide(image, gain, dtype=cv2.CV_8U)
        clipped = ((image >= CLIPPED) & (gain > 1)).view(np.uint8)
        if clipped.any():  # the scene there is at least image / gain: where the background agrees, it is that
            agreed = cv2.min(cv2.max(self._background_image().picture, compensated), image)
            cv2.copyTo(agreed, clipped, compensated)
        return cast(npt.NDArray[np.uint8], compensated)
