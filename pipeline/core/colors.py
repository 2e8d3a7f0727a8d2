"""The colours seg-video gives classes and instances, shared by the renderer and the label-map exports so that a
track or class has the same colour in the video and in the PNGs."""

from __future__ import annotations

import colorsys

import numpy as np
import numpy.typing as npt

Color = tuple[int, int, int]

_GOLDEN_RATIO = 0.6180339887498949
_FIRST_HUE = 0.45
"""Key 0's hue (teal), so the first keys (teal, orange, violet) differ from the pure reds, greens and blues common in
scenes (a red fill over a red object would not show)."""


def voc_palette(n: int = 256) -> npt.NDArray[np.uint8]:
    """The Pascal VOC colour map, (n,3) BGR: bits 0/1/2 of the class id, then 3/4/5…, fill R/G/B from the top."""
    ids = np.arange(n)
    rgb = np.zeros((n, 3), np.int64)
    for level in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((ids >> (3 * level + channel)) & 1) << (7 - level)
    return rgb[:, ::-1].astype(np.uint8)


UNTRACKED_COLOR: Color = (160, 160, 160)
"""Grey, for an object the tracker has not confirmed yet (track id 0): it gets its own colour with its id."""


def instance_color(key: int) -> Color:
    """A BGR colour per key; hues step by the golden ratio so neighbouring keys (e.g. track ids) look far apart."""
    red, green, blue = colorsys.hsv_to_rgb((_FIRST_HUE + int(key) * _GOLDEN_RATIO) % 1.0, 0.85, 0.95)
    return round(blue * 255), round(green * 255), round(red * 255)
