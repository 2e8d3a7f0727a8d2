"""The heatmap of a run: where the chosen classes' masks were, accumulated frame by frame at a reduced size and, at
the end, colour-mapped over a picture of the scene (the median of a few frames spread over the run, so that what
moved through it fades out) with a cold … hot key."""

from __future__ import annotations

import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import InstanceMasks, Segmentation
from seg_video.stages.privacy import class_ids_of
from seg_video.stages.render import _PANEL, _draw_label, _Style

Image = npt.NDArray[np.uint8]
Grid = npt.NDArray[np.float32]

SCENE_FRAMES = 5
"""Frames kept for the scene picture (copies at full size, spread evenly over the run)."""
MAX_ALPHA = 0.7
"""Opacity of the colours at the hottest place; colder places show more of the scene, places never covered none."""
COLORMAP = cv2.COLORMAP_TURBO
KEY_BAR = 6
"""Length of the key's colour bar, in label heights."""


class Heatmap:
    """Accumulates, frame by frame, the share of each cell (`1/scale` pixels square) covered by the masks of the
    chosen classes (every class when none is named; for label maps the chosen classes' pixels, or every class but
    background 0; instances without masks are not counted); where instances overlap, a cell counts once. `add` and
    `picture` may run in different threads. Pass the frames after privacy masking, so the scene is masked too."""

    def __init__(self, classes: tuple[str, ...] = (), *, scale: float = 0.25) -> None:
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"heatmap scale must be in (0, 1]; got {scale}")
        self.classes = tuple(classes)
        self.step = max(1, round(1 / scale))
        self._lock = threading.Lock()
        self._grid: _Cells | None = None
        self._frames = 0
        self._scenes: list[Image] = []
        self._keep_every = 1

    @property
    def frames(self) -> int:
        """Frames added so far."""
        return self._frames

    def add(self, image: Image, segmentation: Segmentation) -> None:
        """Count `segmentation`'s chosen masks, and keep `image` now and then for the scene picture. Raises
        `ValueError` for an image of another size than the segmentation's or the run's, or an unknown class."""
        seg = segmentation
        if image.dtype != np.uint8 or image.shape != (seg.height, seg.width, 3):
            raise ValueError(f"image is {image.dtype} {image.shape}; the segmentation needs uint8 "
                             f"{(seg.height, seg.width, 3)}")
        wanted = class_ids_of(seg.classes, self.classes) if self.classes else None
        with self._lock:
            grid = self._grid = self._grid or _Cells.of(seg.height, seg.width, self.step)
            if (grid.height, grid.width) != (seg.height, seg.width):
                raise ValueError(f"the heatmap is of {grid.width}x{grid.height} frames; got a "
                                 f"{seg.width}x{seg.height} one")
            frame = np.zeros_like(grid.covered)
            if seg.masks is not None:
                chosen = range(len(seg)) if wanted is None else np.flatnonzero(np.isin(seg.class_ids, wanted))
                for i in chosen:
                    grid.raise_to_instance(frame, seg.masks, int(i))
            if seg.label_map is not None:
                labelled = seg.label_map != 0 if wanted is None else np.isin(seg.label_map, wanted)
                np.maximum(frame, grid.counts(labelled), out=frame)
            grid.covered += frame / grid.cells
            if self._frames % self._keep_every == 0:
                self._scenes.append(image.copy())
                if len(self._scenes) > SCENE_FRAMES:
                    self._scenes = self._scenes[::2]
                    self._keep_every *= 2
            self._frames += 1

    def heat(self) -> Grid:
        """The share of frames each pixel was covered in (0..1), at the frame's size, smoothed between cells."""
        with self._lock:
            if self._grid is None:
                raise RuntimeError("the heatmap has no frames yet")
            grid, share = self._grid, self._grid.covered / self._frames
        rows, cols = share.shape
        smooth = cv2.resize(share, (cols * self.step, rows * self.step), interpolation=cv2.INTER_LINEAR)
        return np.clip(smooth[:grid.height, :grid.width], 0.0, 1.0)

    def scene(self) -> Image:
        """A picture of the scene: the per-pixel median of the frames kept."""
        with self._lock:
            if not self._scenes:
                raise RuntimeError("the heatmap has no frames yet")
            kept = np.stack(self._scenes)
        return np.median(kept, axis=0).round().astype(np.uint8)

    def picture(self) -> Image:
        """The heatmap as a BGR picture of the frame's size: the heat, normalised to its peak and colour-mapped,
        blended over the scene (more opaque where hotter), with a key in the bottom-left corner."""
        heat, scene = self.heat(), self.scene()
        peak = float(heat.max())
        level = heat / peak if peak > 0 else heat
        colors = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), COLORMAP)
        alpha = (MAX_ALPHA * np.sqrt(level))[..., None]
        out = np.round(scene * (1.0 - alpha) + colors * alpha).astype(np.uint8)
        _draw_key(out, peak)
        return out

    def write(self, path: Path) -> None:
        """Write `picture()` to `path` as a PNG, whole or not at all (a temporary sibling renamed into place)."""
        ok, data = cv2.imencode(".png", self.picture())
        if not ok:
            raise ValueError(f"could not encode the heatmap of {path.name} as PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data.tobytes())
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise


@dataclass
class _Cells:
    """The accumulator over a `height`×`width` frame in `step`-pixel square cells (the last row and column of cells
    may stick out of the frame): each cell's in-frame pixels and its covered share summed over frames."""

    height: int
    width: int
    step: int
    cells: Grid
    covered: Grid

    @classmethod
    def of(cls, height: int, width: int, step: int) -> _Cells:
        """An empty accumulator for frames of this size."""
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        tall = np.minimum(step, height - step * np.arange(rows)).astype(np.float32)
        wide = np.minimum(step, width - step * np.arange(cols)).astype(np.float32)
        return cls(height, width, step, np.outer(tall, wide), np.zeros((rows, cols), np.float32))

    def raise_to_instance(self, frame: Grid, masks: InstanceMasks, i: int) -> None:
        """Raise `frame`'s per-cell covered pixel counts to those of mask `i`, within its box."""
        x1, y1, x2, y2 = masks.boxes[i].tolist()
        if x1 == x2:
            return
        step = self.step
        left, top, right, bottom = x1 // step, y1 // step, -(-x2 // step), -(-y2 // step)
        window = masks.window(i, left * step, top * step, right * step, bottom * step)
        region = frame[top:bottom, left:right]
        np.maximum(region, _sums(window, step), out=region)

    def counts(self, mask: npt.NDArray[np.bool_]) -> Grid:
        """Covered pixels per cell of a full-frame mask."""
        rows, cols = self.covered.shape
        padded = np.zeros((rows * self.step, cols * self.step), bool)
        padded[:self.height, :self.width] = mask
        return _sums(padded, self.step)


def _sums(mask: npt.NDArray[np.bool_], step: int) -> Grid:
    """Set pixels per `step`×`step` cell of `mask` (its sides multiples of `step`)."""
    rows, cols = mask.shape[0] // step, mask.shape[1] // step
    return mask.reshape(rows, step, cols, step).sum(axis=(1, 3), dtype=np.float32)


def _draw_key(image: Image, peak: float) -> None:
    """The colour key in the bottom-left corner: `cold`, the colour bar, `hot` with the peak's share of frames;
    left out where the frame is too small to hold it."""
    style = _Style.for_frame(image.shape[0], image.shape[1])
    row = style.label_height
    hot = f"hot: {peak:.0%} of frames"
    cold_width, bar_width = style.label_width("cold"), KEY_BAR * row
    if cold_width + bar_width + style.label_width(hot) > image.shape[1] or row > image.shape[0]:
        return
    top = image.shape[0] - row
    _draw_label(image, "cold", (0, top), _PANEL, style)
    left = cold_width
    cv2.rectangle(image, (left, top), (left + bar_width - 1, top + row - 1), _PANEL, cv2.FILLED)
    ramp = np.linspace(0, 255, bar_width).round().astype(np.uint8)[None, :]
    bar = cv2.applyColorMap(np.repeat(ramp, row - 2 * style.pad, axis=0), COLORMAP)
    image[top + style.pad:top + row - style.pad, left:left + bar_width] = bar
    _draw_label(image, hot, (left + bar_width, top), _PANEL, style)
