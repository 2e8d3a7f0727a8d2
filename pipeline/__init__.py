"""seg-video's pipeline: frame types, the threaded runner, video I/O, rendering, configuration and the CLI."""

# OpenCV before PyAV, whoever imports what: both wheels bundle X11 client libraries, and when PyAV's load first,
# OpenCV's Qt window (--display) hangs on its first call. Every entry point imports this package first.
import cv2  # noqa: F401

__version__ = "0.1.0"
