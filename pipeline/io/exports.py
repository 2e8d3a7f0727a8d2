"""Annotation exports: a COCO-style JSON file (masks as compressed RLE) and palette PNG label maps, one per frame.

Both are sinks of the pipeline's export stage, fed each frame and its (tracked) segmentation in frame order. A sink
creates its output at the first frame, so a run that fails before any frame leaves nothing, and the stage's
teardown always closes it (end of input, Ctrl-C, an error upstream).

The COCO file is a complete JSON document after every frame, however the process ends (a power cut, which may lose
writes not yet synced to disk, aside). It is laid out as

    {"info": …, "videos": […], "categories": […],
    "images": [
    {image}, …, {image}<reserve: spaces>
    ],
    "annotations": [
    {annotation}, …
    ]}

A frame writes its image entry into the reserve (in place), then its annotations and the closing `]}` over the old
closing `]}` at the end, each in one flushed write: between any two writes the file parses, and no annotation
refers to an image not yet listed. When the reserve runs out, the file is rewritten with a reserve twice the
images' size (to a temporary file, renamed over the old one), so rewrites cost O(total size). Closing rewrites it
once more without the reserve and with `"status": "closed"`; a file still saying `"writing"` is what a killed run
left, valid up to its last frame.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image
from pycocotools import mask as mask_utils

from seg_video.core.colors import instance_color, voc_palette
from seg_video.core.types import ClassTable, Frame, InstanceMasks, Segmentation
from seg_video.core.version import __version__
from seg_video.io.paths import OutputGuard

FRAME_FILE = "%06d.png"
"""File name of frame N's label map (printf style, as FFmpeg's image2 muxer takes); COCO images use it too."""
LEGEND_FILE = "legend.json"
"""The legend written next to the label maps."""
MIN_RESERVE = 64 * 1024
"""Smallest space (bytes) kept free for image entries in a COCO file being written: some 500 frames."""
_NEXT_ANNOTATIONS = '\n],\n"annotations": ['
_CLOSING = "\n]}\n"


class Export(Protocol):
    """A sink for segmented frames, written in frame order and closed once."""

    def write(self, frame: Frame, seg: Segmentation) -> None:
        """Add one frame's segmentation."""

    def close(self) -> None:
        """Finish the output (if any frame created it)."""


def categories(classes: ClassTable) -> list[dict[str, Any]]:
    """COCO categories: each named class, its class id as category id."""
    return [{"id": i, "name": name} for i, name in enumerate(classes.names) if name is not None]


def coco_annotations(seg: Segmentation) -> list[dict[str, Any]]:
    """One frame's COCO annotations (without ids): each instance (its mask as RLE, when it has one), then each named
    class of the label map."""
    found = []
    for i in range(len(seg)):
        x1, y1, x2, y2 = (float(v) for v in seg.boxes[i])
        shape = ({"area": round((x2 - x1) * (y2 - y1), 2)} if seg.masks is None
                 else _rle(seg.masks.crops[i], seg.masks.boxes[i], seg.height, seg.width))
        track = None if seg.track_ids is None or not seg.track_ids[i] else int(seg.track_ids[i])  # 0: no id yet
        found.append({**shape, "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                      "score": round(float(seg.scores[i]), 4), "category_id": int(seg.class_ids[i]),
                      "track_id": track, "iscrowd": 0})
    if seg.label_map is not None:
        named = {category["id"] for category in categories(seg.classes)}
        for class_id in np.unique(seg.label_map):
            if class_id not in named:
                continue
            pixels = InstanceMasks.from_full((seg.label_map == class_id)[None])
            region = _rle(pixels.crops[0], pixels.boxes[0], seg.height, seg.width)
            bbox = [round(float(v), 2) for v in mask_utils.toBbox(region["segmentation"])]
            found.append({**region, "bbox": bbox, "score": 1.0, "category_id": int(class_id), "track_id": None,
                          "iscrowd": 0})
    return found


def _rle(crop: npt.NDArray[np.bool_], box: npt.NDArray[np.int64], height: int, width: int) -> dict[str, Any]:
    """`segmentation` (COCO's compressed RLE, counts as text) and `area` of a mask given as its `crop` over `box`
    (xyxy, x2/y2 exclusive) in a `height`×`width` frame.

    The same RLE as `pycocotools.mask.encode` of the full mask, counted only over the columns the mask occupies:
    RLE runs down the columns, so only that band is laid out in column order."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if not crop.any():
        counts = [height * width]
    else:
        band = np.zeros((height, x2 - x1), bool)
        band[y1:y2] = crop
        strip = band.ravel(order="F")
        edges = np.flatnonzero(strip[1:] != strip[:-1]) + 1
        counts = np.diff(np.concatenate(([0], edges, [strip.size]))).tolist()
        if strip[0]:
            counts.insert(0, 0)  # runs alternate, starting with background
        counts[0] += x1 * height  # the empty columns before and after
        tail = (width - x2) * height
        if not strip[-1]:
            counts[-1] += tail
        elif tail:
            counts.append(tail)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
            "area": int(sum(counts[1::2]))}


class CocoWriter:
    """Streams a COCO-style results file for one video; see the module docstring for its crash-safe layout."""

    def __init__(self, path: Path, *, video_name: str, fps: float | None, engine: str,
                 guard: OutputGuard | None = None) -> None:
        self.path = path
        self.frames = 0
        self._guard = guard or OutputGuard()
        self._target = path
        """Where the file is written: `path`, or the file a link there points to (the link is kept)."""
        self._video: dict[str, Any] = {"id": 1, "name": video_name, "fps": fps, "frame_pattern": FRAME_FILE}
        self._info: dict[str, Any] = {"description": f"seg-video annotations of {video_name}", "engine": engine,
                                      "version": __version__, "status": "writing"}
        self._categories: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = None
        self._images_start = self._images_end = self._reserve_end = self._closing_at = 0
        self._annotations = 0

    def write(self, frame: Frame, seg: Segmentation) -> None:
        """Append the frame's image entry and annotations; the file is valid JSON afterwards."""
        if self._file is None:
            self._open(frame, seg.classes)
        assert self._file is not None
        image_id = frame.index + 1
        seconds = frame.seconds
        image = {"id": image_id, "video_id": 1, "frame_index": frame.index, "file_name": FRAME_FILE % frame.index,
                 "pts": None if seconds is None else round(seconds, 6), "width": seg.width, "height": seg.height}
        entry = (",\n" if self.frames else "\n").encode() + json.dumps(image).encode()
        if self._images_end + len(entry) > self._reserve_end:
            self._rewrite(reserve=max(MIN_RESERVE, 2 * (self._images_end - self._images_start) + len(entry)))
        self._put(self._images_end, entry)
        self._images_end += len(entry)
        self.frames += 1
        lines = []
        for annotation in coco_annotations(seg):
            self._annotations += 1
            lines.append(("\n" if self._annotations == 1 else ",\n")
                         + json.dumps({"id": self._annotations, "image_id": image_id, **annotation}))
        if lines:
            added = "".join(lines).encode()
            self._put(self._closing_at, added + _CLOSING.encode())
            self._closing_at += len(added)

    def close(self) -> None:
        """Rewrite the file without its reserve, marked closed."""
        if self._file is None:
            return
        self._info["status"] = "closed"
        self._video["frames"] = self.frames
        try:
            self._rewrite(reserve=0)
        finally:
            self._file.close()
            self._file = None

    def _open(self, frame: Frame, classes: ClassTable) -> None:
        self._video.update(width=frame.size[1], height=frame.size[0])
        self._info["date_created"] = datetime.now(UTC).isoformat(timespec="seconds")
        self._categories = categories(classes)
        self._guard.check(self.path)
        self._target = Path(os.path.realpath(self.path))
        self._file = open(self._target, "w+b")  # noqa: SIM115 - kept open across frames, closed in close()
        head = self._head()
        self._put(0, head + b" " * MIN_RESERVE + (_NEXT_ANNOTATIONS + _CLOSING).encode())
        self._images_start = self._images_end = len(head)
        self._reserve_end = len(head) + MIN_RESERVE
        self._closing_at = self._reserve_end + len(_NEXT_ANNOTATIONS)

    def _head(self) -> bytes:
        """Everything before the first image entry."""
        head = {"info": self._info, "videos": [self._video], "categories": self._categories}
        return (json.dumps(head)[:-1] + ',\n"images": [').encode()

    def _put(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset`, through to the operating system."""
        assert self._file is not None
        self._file.seek(offset)
        self._file.write(data)
        self._file.flush()

    def _rewrite(self, reserve: int) -> None:
        """Write the file anew (head, image entries, `reserve` spaces, the rest) and rename it over the old one."""
        assert self._file is not None
        old = self._file
        head = self._head()
        temporary = self._target.with_name(f".{self._target.name}.tmp")
        self._guard.check(temporary)
        self._guard.check(self._target)
        try:
            with open(temporary, "wb") as new:
                new.write(head)
                _copy(old, new, self._images_start, self._images_end)
                new.write(b" " * reserve)
                _copy(old, new, self._reserve_end)
                new.flush()
                os.fsync(new.fileno())
            os.replace(temporary, self._target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        old.close()
        self._file = open(self._target, "r+b")  # noqa: SIM115 - see _open
        entries, rest = self._images_end - self._images_start, self._closing_at - self._reserve_end
        self._images_start, self._images_end = len(head), len(head) + entries
        self._reserve_end = self._images_end + reserve
        self._closing_at = self._reserve_end + rest


def _copy(source: IO[bytes], target: IO[bytes], start: int, stop: int | None = None) -> None:
    """Bytes `start`..`stop` (the end when None) of `source` appended to `target`."""
    source.seek(start)
    if stop is None:
        shutil.copyfileobj(source, target)
        return
    left = stop - start
    while left > 0:
        chunk = source.read(min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"{source.name} ended {left} bytes early")
        target.write(chunk)
        left -= len(chunk)


@dataclass
class _Instance:
    """What the legend says of one track: its class and the frames it appears in."""

    class_id: int
    first_frame: int
    last_frame: int
    frames: int = 1


class LabelMapWriter:
    """One palette PNG label map per frame in `folder` (FRAME_FILE names) and a JSON legend (LEGEND_FILE).

    Semantic engines: pixel = class id, in the renderer's VOC colours. Instance engines: pixel = track id (instance
    number 1, 2, … in its frame when untracked; 0 background), in the colour the video gives that track; where masks
    overlap, the later instance wins, as in the video. A frame with an id above 255 is written as a 16-bit greyscale
    PNG instead (same values, no palette).
    """

    def __init__(self, folder: Path, guard: OutputGuard | None = None) -> None:
        self.folder = folder
        self.frames = 0
        self._guard = guard or OutputGuard()
        self._classes: ClassTable | None = None
        self._semantic = False
        self._tracked = False
        self._instances: dict[int, _Instance] = {}

    def write(self, frame: Frame, seg: Segmentation) -> None:
        """Save the frame's label map."""
        if self._classes is None:
            self.folder.mkdir(exist_ok=True)
            self._classes, self._semantic = seg.classes, seg.label_map is not None
        if self._semantic and seg.label_map is not None:
            picture = _picture(seg.label_map, _SEMANTIC_PALETTE)
        else:
            picture = _picture(_instance_map(seg), _INSTANCE_PALETTE)
            self._note_tracks(frame.index, seg)
        path = self.folder / (FRAME_FILE % frame.index)
        self._guard.check(path)
        picture.save(path, format="PNG")
        self.frames += 1

    def close(self) -> None:
        """Write the legend (atomically), if any frame was written."""
        if self._classes is None:
            return
        legend: dict[str, Any] = {"kind": "semantic" if self._semantic else "instance",
                                  "frame_pattern": FRAME_FILE, "frames": self.frames}
        if self._semantic:
            legend["values"] = "class id (0: background)"
            legend["classes"] = [{**c, "color": _rgb(_SEMANTIC_PALETTE, c["id"])} for c in categories(self._classes)]
        else:
            legend["values"] = ("track id (0: background, or an object not confirmed yet)" if self._tracked
                                else "instance number in its frame (0: background)")
            legend["classes"] = categories(self._classes)
        if self._tracked:
            legend["instances"] = [
                {"id": key, "class_id": item.class_id, "class": self._classes.name(item.class_id),
                 "color": _rgb(_INSTANCE_PALETTE, key) if key < 256 else None, "first_frame": item.first_frame,
                 "last_frame": item.last_frame, "frames": item.frames}
                for key, item in sorted(self._instances.items())]
        temporary, final = self.folder / f".{LEGEND_FILE}.tmp", self.folder / LEGEND_FILE
        self._guard.check(temporary)
        self._guard.check(final)
        temporary.write_text(json.dumps(legend, indent=1), encoding="utf-8")
        os.replace(temporary, final)

    def _note_tracks(self, index: int, seg: Segmentation) -> None:
        """Record, for the legend, the class and frames of each track in frame `index`."""
        if seg.track_ids is None:
            return
        self._tracked = True
        for key, class_id in zip(seg.track_ids.tolist(), seg.class_ids.tolist(), strict=True):
            if not key:  # not confirmed yet: no id to list
                continue
            seen = self._instances.get(key)
            if seen is None:
                self._instances[key] = _Instance(class_id, index, index)
            else:
                seen.last_frame, seen.frames = index, seen.frames + 1


def _instance_map(seg: Segmentation) -> npt.NDArray[np.int64]:
    """(H,W) track ids (instance numbers from 1 when untracked) under each mask, later masks on top; 0 elsewhere."""
    ids = np.zeros((seg.height, seg.width), np.int64)
    if seg.masks is None:
        return ids
    keys = np.arange(1, len(seg) + 1) if seg.track_ids is None else seg.track_ids
    for crop, key, (x1, y1, x2, y2) in zip(seg.masks.crops, keys, seg.masks.boxes.tolist(), strict=True):
        ids[y1:y2, x1:x2][crop] = key
    return ids


def _instance_palette() -> npt.NDArray[np.uint8]:
    """(256,3) RGB: 0 black, then each key's `instance_color`."""
    colors = np.zeros((256, 3), np.uint8)
    colors[1:] = [instance_color(key)[::-1] for key in range(1, 256)]
    return colors


_SEMANTIC_PALETTE = voc_palette(256)[:, ::-1].copy()
_INSTANCE_PALETTE = _instance_palette()


def _picture(ids: npt.NDArray[np.integer], palette: npt.NDArray[np.uint8]) -> Image.Image:
    """`ids` as a palette image, or as a 16-bit greyscale one when an id does not fit in 8 bits."""
    if int(ids.max(initial=0)) > 255:
        return Image.fromarray(ids.astype(np.uint16))
    picture = Image.fromarray(ids.astype(np.uint8))
    picture.putpalette(palette.tobytes())
    return picture


def _rgb(palette: npt.NDArray[np.uint8], key: int) -> list[int]:
    return [int(v) for v in palette[key]]
