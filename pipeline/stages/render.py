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

from seg_video.core.colors import UNTRACKED_COLOR, Color, instance_color, voc_palette
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
        tracked = seg.track_ids is not None
        colors = [UNTRACKED_COLOR if tracked and not key else instance_color(int(key)) for key in _colour_keys(seg)]
        painted = [] if seg.masks is None else _paint_instances(seg.masks, colors, style.line)
        self._fill(out, ids if settings.semantic == "overlay" else None, painted)
        if settings.contours:
            for part in painted:
                part.outline(out, style.line)
        if not seg.regions:  # a region map is its fills and outlines alone
            taken: list[tuple[int, int, int, int]] = []
            for i, color in enumerate(colors):
                self._annotate(out, seg, i, color, style, taken)
        if ids is not None and settings.legend:
            _draw_legend(out, ids, seg.classes, style)
        if fps is not None and settings.fps_overlay:
            _draw_label(out, f"{fps:.1f} fps", (0, 0), _FPS_BACKGROUND, style)
        return out

    def _fill(self, out: Image, overlay_ids: Image | None, painted: Sequence[_Painted]) -> None:
        """Blend the label map's colours (ids other than 0) and every instance mask over `out`, in one pass."""
        if overlay_ids is None and not painted:
            return
        if overlay_ids is None:
            layer = np.empty_like(out)
            covered = np.zeros(out.shape[:2], np.uint8)
        else:
            layer = _colorize(overlay_ids)
            covered = (overlay_ids != 0).view(np.uint8)
        for part in painted:
            inside = (part.ids != 0).view(np.uint8)
            cv2.copyTo(part.colored, inside, _crop(layer, part.region))
            region = _crop(covered, part.region)
            cv2.bitwise_or(region, inside, dst=region)
        x, y, width, height = cv2.boundingRect(covered)
        if width and height:
            box = np.array([x, y, x + width, y + height])
            target = _crop(out, box)
            alpha = self.settings.alpha
            blended = cv2.addWeighted(target, 1 - alpha, _crop(layer, box), alpha, 0.0)
            cv2.copyTo(blended, _crop(covered, box), target)

    def _annotate(self, out: Image, seg: Segmentation, i: int, color: Color, style: _Style,
                  taken: list[tuple[int, int, int, int]]) -> None:
        """Instance `i`'s box and label, as the settings ask; a label that would cover one already drawn (`taken`)
        is left out, so labels never pile up."""
        settings = self.settings
        x1, y1, x2, y2 = (int(v) for v in np.rint(seg.boxes[i]))
        if settings.boxes:
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, style.line)
        if settings.labels:
            track = "" if seg.track_ids is None or not seg.track_ids[i] else f"#{seg.track_ids[i]} "
            score = f" {seg.scores[i]:.2f}" if seg.scored else ""
            text = f"{track}{seg.classes.name(int(seg.class_ids[i]))}{score}"
            place = _label_place(out, text, (x1, y1), style)
            if not any(_overlap(place, other) for other in taken):
                taken.append(place)
                _draw_label(out, text, (x1, y1), color, style)


@dataclass(frozen=True)
class _Painted:
    """Up to 255 instances drawn into one id map over the frame region their masks span (grown by the outline's
    width): 0 where none is, k for the k-th of them (later ones on top, as they are drawn), and the picture of their
    colours there."""

    region: npt.NDArray[np.int64]
    ids: Image
    colored: Image

    def outline(self, out: Image, line: int) -> None:
        """Draw each instance's outline inside its visible part, `line` px wide, where it meets anything else (the
        frame's own edge aside: erosion and dilation take the frame's outside as neutral)."""
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * line + 1, 2 * line + 1))
        edge = (self.ids != cv2.erode(self.ids, kernel)) | (self.ids != cv2.dilate(self.ids, kernel))
        cv2.copyTo(self.colored, (edge & (self.ids != 0)).view(np.uint8), _crop(out, self.region))


def _paint_instances(masks: InstanceMasks, colors: Sequence[Color], line: int) -> list[_Painted]:
    """The instance masks drawn in their colours, 255 instances per id map (the most a uint8 map holds)."""
    painted = []
    for start in range(0, len(masks), 255):
        boxes = masks.boxes[start:start + 255]
        shown = [k for k, crop in enumerate(masks.crops[start:start + 255]) if crop.size]
        if not shown:
            continue
        low, high = boxes[shown, :2].min(axis=0) - line - 1, boxes[shown, 2:].max(axis=0) + line + 1
        region = np.clip(np.concatenate([low, high]), 0, [masks.width, masks.height] * 2).astype(np.int64)
        ids = np.zeros((region[3] - region[1], region[2] - region[0]), np.uint8)
        for k in shown:
            x1, y1, x2, y2 = (boxes[k] - np.tile(region[:2], 2)).tolist()
            ids[y1:y2, x1:x2][masks.crops[start + k]] = k + 1
        palette = np.zeros((256, 1, 3), np.uint8)
        palette[1:len(boxes) + 1, 0] = colors[start:start + len(boxes)]
        painted.append(_Painted(region, ids, cast(Image, cv2.applyColorMap(ids, palette))))
    return painted


def _colour_keys(seg: Segmentation) -> Sequence[int]:
    """What each instance's colour follows: its track id; in a region map its class, when the engine has several
    (k-means clusters keep their colour from frame to frame); else its place in the list."""
    if seg.track_ids is not None:
        return seg.track_ids.tolist()
    if seg.regions and sum(name is not None for name in seg.classes.names) > 1:
        return seg.class_ids.tolist()
    return range(len(seg))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two xyxy rectangles share pixels."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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


def _crop(array: npt.NDArray[np.generic], box: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """The xyxy `box` of `array`, as a uint8 view (a bool mask's pixels become 0/1)."""
    return array[box[1]:box[3], box[0]:box[2]].view(np.uint8)


def _label_place(image: Image, text: str, corner: tuple[int, int], style: _Style) -> tuple[int, int, int, int]:
    """The xyxy rectangle `text`'s label takes with its top-left at `corner`, moved as needed to stay inside the
    image."""
    width, height = style.label_width(text), style.label_height
    x = max(0, min(corner[0], image.shape[1] - width))
    y = max(0, min(corner[1], image.shape[0] - height))
    return x, y, x + width, y + height


def _draw_label(image: Image, text: str, corner: tuple[int, int], background: Color, style: _Style) -> None:
    """`text` on a filled box with its top-left at `corner`, moved as needed to stay inside the image."""
    x, y, right, bottom = _label_place(image, text, corner, style)
    width, height = right - x, bottom - y
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
