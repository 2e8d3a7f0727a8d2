"""How the process's allocator treats the large buffers a video pipeline allocates and frees for every frame.

Decoded pictures, rendered copies and masks are megabytes each. By default glibc serves such sizes with a fresh
`mmap` and returns them with `munmap`, so every frame touches new pages: on the virtual machines seg-video was
measured on, those page faults cost more than the work (rendering 30 instances at 720p: 16 ms, against 5 ms with
the buffers reused). `reuse_large_buffers` makes the allocator keep freed buffers for the next frame instead.

A live run's sources each have a thread per stage, and with glibc's default of a heap (arena) per thread each kept
its own freed frames: four sources through FCN on a CPU peaked 73 MB higher. `share_heaps` makes all threads share
a few; the file run keeps the default, where the stages' own heaps are faster (the motion pipeline on 720p ran
about 12 % slower on two shared heaps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import cast

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
"""glibc `mallopt` parameters (malloc.h)."""
ARENAS = 2
"""Heaps the threads share."""
KEEP_BYTES = 512 << 20
"""Blocks up to this size come from the heap, and this much freed memory stays there for reuse."""


def reuse_large_buffers() -> bool:
    """Serve and keep large blocks on the heap (glibc only; elsewhere nothing changes); True when it applied.
    A process-wide setting: the command line calls it once at start, as do batch workers."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def share_heaps() -> bool:
    """Let all threads share ARENAS heaps (glibc only); True when it applied. Process-wide, for heaps made from
    then on: the live run calls it before its threads start."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, ARENAS))


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt`, or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        return cast("Callable[[int, int], int]", ctypes.CDLL(name).mallopt)
    except (OSError, AttributeError, TypeError):
        log.debug("no glibc mallopt here (%s): allocator left as it is", name)
        return None
