"""seg-video: real-time video segmentation. The Python API (see `seg_video.api`):

    import seg_video
    for frame, seg in seg_video.segment("clip.mp4", engine="motion"):
        print(frame.index, len(seg), seg.track_ids)

`segment`, `annotate`, `load_engine`, `draw`; the types `Frame`, `Segmentation`, `ClassTable`, `Engine`; counting
lines and zones over tracked segmentations (`Line`, `Zone`, `Watch`, `WatchSettings`, and the `Event`s they
report); the errors (`SegVideoError` and its kinds). The command line is `seg-video` (or `python -m seg_video`).
"""

# OpenCV before PyAV, whoever imports what: both wheels bundle X11 client libraries, and when PyAV's load first,
# OpenCV's Qt window (--display) hangs on its first call. Every import of seg_video runs this first.
import cv2  # noqa: F401

from seg_video.api import annotate, draw, load_engine, segment
from seg_video.core.errors import (
    ConfigError,
    DecodeError,
    EngineError,
    MediaError,
    SegVideoError,
    StageFailed,
    StageTimeout,
    UsageError,
    WriteError,
)
from seg_video.core.types import ClassTable, Event, Frame, Segmentation, SegmentationError
from seg_video.core.version import __version__
from seg_video.engines.base import Engine
from seg_video.jobs.annotate import RunSummary
from seg_video.jobs.segment import Segments
from seg_video.stages.watch import Line, Watch, WatchSettings, Zone

__all__ = [
    "ClassTable", "ConfigError", "DecodeError", "Engine", "EngineError", "Event", "Frame", "Line", "MediaError",
    "RunSummary", "SegVideoError", "Segmentation", "SegmentationError", "Segments", "StageFailed", "StageTimeout",
    "UsageError", "Watch", "WatchSettings", "WriteError", "Zone", "__version__", "annotate", "draw", "load_engine",
    "segment",
]
