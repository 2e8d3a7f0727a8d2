"""The compositor: draws a `Segmentation` over its BGR frame — mask fills, outlines, boxes, labels, a class legend.

`Renderer.render` is stateless (safe to share between threads) and returns a new image. All masks and the label
map are blended in one pass: a colour layer and a coverage mask are built first (per-instance work limited to the
instance's box crop), then one `cv2.addWeighted` over their bounding rectangle, copied back through the coverage
mask, so uncovered pixels are never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.colors import Color, instance_color, voc_palette
from seg_video.core.types import ClassTable, InstanceMasks, Segmentation

if TYPE_CHECKING:
    from seg_video.core.config import RenderSettings

Image = npt.NDArray[np.uint8]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL: Color = (32, 32, 32)
_FPS_BACKGROUND: Color = (0, 0, 0)


_PALETTE_LUT = voc_palette(256).reshape(256, 1, 3)


@dataclass(frozen=True)
class _Style:
    """Line and text sizes for one frame size, so annotations keep their proportions at any resolution."""

    line: int
    font_scale: float
    font_thickness: int
    pad: int
    descent: int
    """Room below the baseline, the same for every label so that all labels are one height."""
    label_height: int

    @classmethod
    def for_frame(cls, height: int, width: int) -> _Style:
        """Sizes that read well at 720p (2 px lines, 0.6 font scale) and grow with the shorter side."""
        short = min(height, width)
        scale = max(0.4, short / 1200)
        thickness = max(1, round(scale * 1.5))
        pad = max(1, round(4 * scale))
        (_, text_height), descent = cv2.getTextSize("Ag", _FONT, scale, thickness)
        return cls(line=max(1, round(short / 360)), font_scale=scale, font_thickness=thickness, pad=pad,
                   descent=descent, label_height=text_height + descent + 2 * pad)

    def label_width(self, text: str) -> int:
        """Width of `text`'s padded background."""
        return cv2.getTextSize(text, _FONT, self.font_scale, self.font_thickness)[0][0] + 2 * self.pad


class Renderer:
    """Draws segmentations over frames as `settings` say; holds no per-frame state."""

    def __init__(self, settings: RenderSettings) -> None:
        settings.validate()
        self.settings = settings

    def render(self, image: Image, seg: Segmentation, *, fps: float | None = None) -> Image:
        """A new BGR image: `image` with `seg` drawn over it (and `fps`, when the overlay is on); `image` is kept."""
        if image.dtype != np.uint8 or image.shape != (seg.height, seg.width, 3):
            raise ValueError(f"image is {image.dtype} {image.shape}; the segmentation needs uint8 "
                             f"{(seg.height, seg.width, 3)}")
        settings = self.settings
        ids = None if seg.label_map is None else _uint8_ids(seg.label_map)
        out = _colorize(ids) if ids is not None and settings.semantic == "labels" else image.copy()
        style = _Style.for_frame(seg.height, seg.width)
        keys = range(len(seg)) if seg.track_ids is None else seg.track_ids
        colors = [instance_color(int(key)) for key in keys]
        self._fill(out, ids if settings.semantic == "overlay" else None, seg.masks, colors)
        for i, color in enumerate(colors):
            self._annotate(out, seg, i, color, style)
        if ids is not None and settings.legend:
            _draw_legend(out, ids, seg.classes, style)
        if fps is not None and settings.fps_overlay:
            _draw_label(out, f"{fps:.1f} fps", (0, 0), _FPS_BACKGROUND, style)
        return out

    def _fill(self, out: Image, overlay_ids: Image | None, masks: InstanceMasks | None,
              colors: Sequence[Color]) -> None:
        """Blend the label map's colours (ids other than 0) and every instance mask over `out`, in one pass."""
        if overlay_ids is None and (masks is None or not len(masks)):
            return
        if overlay_ids is None:
            layer = np.empty_like(out)
            covered = np.zeros(out.shape[:2], np.uint8)
        else:
            layer = _colorize(overlay_ids)
            covered = (overlay_ids != 0).view(np.uint8)
        if masks is not None:
            for box, crop, color in zip(masks.boxes, masks.crops, colors, strict=True):
                if crop.size:
                    inside = crop.view(np.uint8)
                    _paint(_crop(layer, box), inside, color)
                    region = _crop(covered, box)
                    cv2.bitwise_or(region, inside, dst=region)
        x, y, width, height = cv2.boundingRect(covered)
        if width and height:
            box = np.array([x, y, x + width, y + height])
            target = _crop(out, box)
            alpha = self.settings.alpha
            blended = cv2.addWeighted(target, 1 - alpha, _crop(layer, box), alpha, 0.0)
            cv2.copyTo(blended, _crop(covered, box), target)

    def _annotate(self, out: Image, seg: Segmentation, i: int, color: Color, style: _Style) -> None:
        """Instance `i`'s outline, box and label, as the settings ask."""
        settings = self.settings
        x1, y1, x2, y2 = (int(v) for v in np.rint(seg.boxes[i]))
        if settings.contours and seg.masks is not None and seg.masks.crops[i].size:
            region = _outline_region(seg.masks.boxes[i], style.line, seg.height, seg.width)
            mask = seg.masks.window(i, *region.tolist()).view(np.uint8)
            _paint(_crop(out, region), _edge_band(mask, style.line), color)
        if settings.boxes:
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, style.line)
        if settings.labels:
            track = "" if seg.track_ids is None else f"#{seg.track_ids[i]} "
            text = f"{track}{seg.classes.name(int(seg.class_ids[i]))} {seg.scores[i]:.2f}"
            _draw_label(out, text, (x1, y1), color, style)


def _uint8_ids(label_map: npt.NDArray[np.integer]) -> Image:
    """The label map as uint8, the type OpenCV's colour lookup takes; ids outside 0..255 are refused."""
    if label_map.dtype == np.uint8:
        return np.ascontiguousarray(label_map)
    low, high = int(label_map.min(initial=0)), int(label_map.max(initial=0))
    if low < 0 or high > 255:
        raise ValueError(f"label_map class ids must be 0..255 to be coloured; got {low}..{high}")
    return label_map.astype(np.uint8)


def _colorize(ids: Image) -> Image:
    """The label map in its classes' VOC colours."""
    return cast(Image, cv2.applyColorMap(ids, _PALETTE_LUT))


def _outline_region(box: npt.NDArray[np.int64], line: int, height: int, width: int) -> npt.NDArray[np.int64]:
    """The region to draw a mask's outline in: its box grown by the line's width, clipped to the frame (so the
    outline closes at the box's edges but not along the frame's)."""
    grown = box + np.array([-line - 1, -line - 1, line + 1, line + 1])
    return np.clip(grown, 0, [width, height, width, height]).astype(np.int64)


def _crop(array: npt.NDArray[np.generic], box: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """The xyxy `box` of `array`, as a uint8 view (a bool mask's pixels become 0/1)."""
    return array[box[1]:box[3], box[0]:box[2]].view(np.uint8)


def _paint(dst: Image, mask: Image, color: Color) -> None:
    """Set `dst` to `color` where `mask` is set; OpenCV's fill and masked copy are many times faster than numpy's
    broadcast fill and boolean assignment."""
    solid = np.empty_like(dst)
    cv2.rectangle(solid, (0, 0), (solid.shape[1], solid.shape[0]), color, cv2.FILLED)
    cv2.copyTo(solid, mask, dst)


def _edge_band(mask: Image, width: int) -> Image:
    """The pixels of `mask` within `width` px of its edge: its outline, drawn inside it (erosion leaves the crop's
    own border alone, so a mask cut by the frame gets no line along the frame edge)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cast(Image, cv2.subtract(mask, cv2.erode(mask, kernel)))


def _draw_label(image: Image, text: str, corner: tuple[int, int], background: Color, style: _Style) -> None:
    """`text` on a filled box with its top-left at `corner`, moved as needed to stay inside the image."""
    width, height = style.label_width(text), style.label_height
    x, y = corner
    x = max(0, min(x, image.shape[1] - width))
    y = max(0, min(y, image.shape[0] - height))
    cv2.rectangle(image, (x, y), (x + width - 1, y + height - 1), background, cv2.FILLED)
    blue, green, red = background
    ink = (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)
    cv2.putText(image, text, (x + style.pad, y + height - style.pad - style.descent), _FONT, style.font_scale, ink,
                style.font_thickness, cv2.LINE_AA)


def _draw_legend(image: Image, ids: Image, classes: ClassTable, style: _Style) -> None:
    """A key in the top-right corner: colour swatch and name of each class (other than background 0) in `ids`;
    rows that do not fit in the frame's height are left out."""
    present = np.flatnonzero(cv2.calcHist([ids], [0], None, [256], [0, 256]).ravel()[1:]) + 1
    row = style.label_height
    shown = present[: image.shape[0] // row]
    if not len(shown):
        return
    names = [classes.name(int(class_id)) for class_id in shown]
    swatch = row - 2 * style.pad
    width = style.pad + swatch + max(style.label_width(name) for name in names)
    left = max(0, image.shape[1] - width)
    cv2.rectangle(image, (left, 0), (left + width - 1, len(shown) * row - 1), _PANEL, cv2.FILLED)
    for k, (class_id, name) in enumerate(zip(shown, names, strict=True)):
        top = k * row
        color = tuple(int(c) for c in _PALETTE_LUT[class_id, 0])
        cv2.rectangle(image, (left + style.pad, top + style.pad),
                      (left + style.pad + swatch - 1, top + style.pad + swatch - 1), color, cv2.FILLED)
        _draw_label(image, name, (left + style.pad + swatch, top), _PANEL, style)
