"""The `--display` sink: an OpenCV window showing every feed tiled in a grid, scaled to fit, with live overlays.

Each tile shows its source's name, fps, capture-to-render latency and dropped frames, and a banner with the source's
state unless all is well: amber while connecting, red while reconnecting, grey once ended. A source without a picture
yet has its name and "connecting..." in its tile. Keys: `q` or Esc quit, space pauses the picture (the pipelines keep
running, so resuming shows the present), `s` saves what is shown as a PNG. The window runs in the calling thread: Qt,
the GUI of opencv-contrib-python on Linux, wants all of it in one thread, and aborts the process when it finds no
display, so `check_display` looks first.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.io.paths import OutputGuard
from seg_video.live.feed import Feed, FeedStats

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

FIT = (1280, 720)
"""Largest size (w, h) the window opens at; it can be resized, and the picture scales with it."""
MAX_CANVAS = (1920, 1080)
"""Largest size (w, h) of the composed grid; bigger grids are scaled down tile by tile."""
PLACEHOLDER = (640, 360)
"""Tile size (w, h) before any source has given a frame."""
REFRESH_MS = 15
"""How long each pass waits for a key: the window's responsiveness."""
STATS_EVERY = 0.25
"""Seconds between redraws of the overlays when no new frame arrived (a stalled source still updates)."""
HEALTHY = ("live", "playing")
"""Source states that need no banner."""
CONNECTING = "connecting"
"""The state of a source never connected yet (retrying)."""
ENDED = "ended"
_RED, _AMBER, _GREY, _STRIP = (30, 30, 200), (0, 130, 220), (90, 90, 90), (40, 40, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
SYSTEM_FONTS = Path("/usr/share/fonts")
KEY_QUIT = (ord("q"), ord("Q"), 27)
KEY_PAUSE = ord(" ")
KEY_SNAPSHOT = (ord("s"), ord("S"))


class DisplayError(RuntimeError):
    """No window can open here; the one-line message says why and what to use instead."""


def check_display() -> None:
    """Raise `DisplayError` unless this OpenCV has a GUI and (on Linux) an X display answers."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if match is None or match.group(1).upper() == "NONE":
        raise DisplayError("this OpenCV has no GUI (a headless build): install opencv-contrib-python, "
                           "or watch in a browser with --serve [HOST:]PORT")
    if not sys.platform.startswith("linux"):
        return
    display = os.environ.get("DISPLAY")
    if not display:
        raise DisplayError("cannot open a window: no display (DISPLAY is not set); run it in a desktop session, "
                           "or watch in a browser with --serve [HOST:]PORT")
    if not _x_server_answers(display):
        raise DisplayError(f"cannot open a window: no X server answers at DISPLAY={display}; check DISPLAY, "
                           "or watch in a browser with --serve [HOST:]PORT")


def _x_server_answers(display: str) -> bool:
    """Whether an X server accepts connections at `display` (`:N`, `unix:N` or `host:N`, screen suffix allowed)."""
    host, _, rest = display.rpartition(":")
    number = rest.partition(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        targets: list[tuple[socket.AddressFamily, str | tuple[str, int]]] = [
            (socket.AF_UNIX, path), (socket.AF_UNIX, "\0" + path)]  # a socket file, or Linux's abstract one
    else:
        targets = [(socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in targets:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(address)
            except OSError:
                continue
            return True
    return False


def _lend_fonts_to_qt() -> None:
    """Point Qt at a folder of system fonts, unless told one: OpenCV's Qt ships none and warns on every window."""
    if "QT_QPA_FONTDIR" not in os.environ and SYSTEM_FONTS.is_dir():
        font = next(SYSTEM_FONTS.rglob("*.ttf"), None)
        if font is not None:
            os.environ["QT_QPA_FONTDIR"] = str(font.parent)


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of the most nearly square grid holding `count` tiles."""
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def letterbox(image: Image, width: int, height: int) -> Image:
    """`image` scaled to fit inside width×height, keeping its aspect, centred on black."""
    scale = min(width / image.shape[1], height / image.shape[0])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    tile = np.zeros((height, width, 3), np.uint8)
    x, y = (width - size[0]) // 2, (height - size[1]) // 2
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    tile[y:y + size[1], x:x + size[0]] = cv2.resize(image, size, interpolation=interpolation)
    return tile


def compose(frames: Sequence[Image | None], stats: Sequence[FeedStats]) -> Image:
    """The grid of tiles, each with its overlay; tiles take the largest frame's size, within `MAX_CANVAS`."""
    rows, columns = grid_shape(len(frames))
    shown = [f for f in frames if f is not None]
    width = max((f.shape[1] for f in shown), default=PLACEHOLDER[0])
    height = max((f.shape[0] for f in shown), default=PLACEHOLDER[1])
    shrink = min(1.0, MAX_CANVAS[0] / (columns * width), MAX_CANVAS[1] / (rows * height))
    width, height = max(1, round(width * shrink)), max(1, round(height * shrink))
    canvas = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, (frame, stat) in enumerate(zip(frames, stats, strict=True)):
        tile = letterbox(frame, width, height) if frame is not None else np.full((height, width, 3), 48, np.uint8)
        draw_overlay(tile, stat, waiting=frame is None)
        row, column = divmod(i, columns)
        canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = tile
    return canvas


def banner(status: str) -> tuple[str, tuple[int, int, int]] | None:
    """The banner (text, BGR colour) a tile shows for its source's `status`; None while the source is healthy."""
    if status in HEALTHY:
        return None
    if status == CONNECTING:
        return "connecting...", _AMBER
    return status, _GREY if status == ENDED else _RED


def draw_overlay(tile: Image, stats: FeedStats, *, waiting: bool = False) -> None:
    """The source's name and numbers top-left and its state's banner at the bottom; a tile `waiting` for its first
    picture says "connecting..." in the middle instead of the numbers (or "no picture" when it is down)."""
    scale = max(0.4, tile.shape[0] / 900)
    _text(tile, stats.name, 0, scale, _STRIP)
    if waiting:
        connecting = stats.status in (*HEALTHY, CONNECTING)
        _text(tile, "connecting..." if connecting else "no picture", None, scale * 1.5, _STRIP)
    else:
        _text(tile, stats.line(), 1, scale, _STRIP)
    shown = banner(stats.status)
    if shown is not None and not (waiting and stats.status == CONNECTING):  # the middle says so already
        _text(tile, shown[0], -1, scale, shown[1])


def _text(image: Image, text: str, row: int | None, scale: float, background: tuple[int, int, int]) -> None:
    """One line of white text on a filled strip, in line `row` from the top (negative: from the bottom; None:
    centred)."""
    thickness = max(1, round(scale * 1.6))
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, round(4 * scale))
    line = height + baseline + 2 * pad
    if row is None:
        top, left = (image.shape[0] - line) // 2, max(0, (image.shape[1] - width) // 2 - pad)
    else:
        top, left = row * line if row >= 0 else image.shape[0] + row * line, 0
    cv2.rectangle(image, (left, top), (min(image.shape[1], left + width + 2 * pad) - 1, top + line - 1), background,
                  cv2.FILLED)
    cv2.putText(image, text, (left + pad, top + pad + height), _FONT, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


class Window:
    """The live window over `feeds`; `run` shows it until a quit key, the window's close button, or `running()`
    turning false."""

    def __init__(self, feeds: Sequence[Feed], *, title: str = "seg-video", snapshot_dir: Path = Path("."),
                 guard: OutputGuard | None = None) -> None:
        self.feeds = feeds
        self.title = title
        self.snapshot_dir = snapshot_dir
        self._guard = guard or OutputGuard()
        self.paused = False
        self.shown: Image | None = None

    def run(self, running: Callable[[], bool]) -> None:
        """Show the feeds in this thread; raises `DisplayError` if no window can open."""
        check_display()
        _lend_fonts_to_qt()
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        seen: list[int] = []
        refreshed = 0.0
        try:
            while running():
                sequences = [feed.latest()[0] for feed in self.feeds]
                if not self.paused and (sequences != seen or time.monotonic() - refreshed > STATS_EVERY):
                    self._draw(first=self.shown is None)
                    seen, refreshed = sequences, time.monotonic()
                if not self.on_key(cv2.waitKey(REFRESH_MS)) or self._closed():
                    return
        finally:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)

    def on_key(self, key: int) -> bool:
        """Act on a key from `cv2.waitKey` (-1: none); False means quit."""
        key &= 0xFF
        if key in KEY_QUIT:
            return False
        if key == KEY_PAUSE:
            self.paused = not self.paused
            if self.paused and self.shown is not None:
                paused = self.shown.copy()
                _text(paused, "paused (space resumes)", -1, max(0.4, paused.shape[0] / 900), (120, 60, 0))
                cv2.imshow(self.title, paused)
        elif key in KEY_SNAPSHOT and self.shown is not None:
            self.snapshot()
        return True

    def snapshot(self) -> Path:
        """Save the picture shown now (overlays included) as a PNG in `snapshot_dir`; returns its path."""
        assert self.shown is not None
        now = time.time()
        path = self.snapshot_dir / f"seg-video-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-" \
                                   f"{int(now * 1000) % 1000:03d}.png"
        refusal = self._guard.refusal(path)
        if refusal is not None:
            log.error("could not write the snapshot %s: %s", path, refusal)
        elif not cv2.imwrite(str(path), self.shown):
            log.error("could not write the snapshot %s", path)
        else:
            log.info("snapshot saved: %s", path)
        return path

    def _draw(self, *, first: bool) -> None:
        frames = [None if frame is None else frame.image for _, frame in (feed.latest() for feed in self.feeds)]
        self.shown = compose(frames, [feed.stats() for feed in self.feeds])
        if first:
            scale = min(1.0, FIT[0] / self.shown.shape[1], FIT[1] / self.shown.shape[0])
            cv2.resizeWindow(self.title, round(self.shown.shape[1] * scale), round(self.shown.shape[0] * scale))
        cv2.imshow(self.title, self.shown)

    def _closed(self) -> bool:
        """Whether the user closed the window with its title-bar button."""
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
