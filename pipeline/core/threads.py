"""How many threads the libraries inside a threaded run may start, so that they and the run's stages share the cores.

A file run keeps every stage busy at once, each on its own thread. OpenCV's parallel loops would split each call
over all the cores again, and x264's automatic thread count (1.5 threads per core, plus a lookahead thread) likewise:
on 2 cores the threads then outnumber the cores several times over and wait on each other. Measured on
bigbuckbunny (1280x720, played 3 times, motion engine, 2 cores), the whole run against the plain sequential loop:
1.41x with the libraries' defaults, 1.49x with OpenCV on one thread, 1.53x with x264 also on one thread per core.
Engines whose one stage is the bottleneck (threshold, edges, k-means, region) ran within 3 % either way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2

_lock = threading.Lock()
_runs = 0  # runs inside `opencv_threads` now
_before = 0  # OpenCV's thread count before the first of them


def available_cpus() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_left(own_threads: int, setting: int = 0) -> int:
    """OpenCV's threads for a run with `own_threads` busy threads: `setting` when given (> 0), else the threads
    OpenCV has now (the process's cores, or a batch worker's share) less the run's own, at least one."""
    return setting if setting > 0 else max(1, cv2.getNumThreads() - own_threads)


@contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's parallel loops use at most `count` threads while the block runs. The setting is process-wide: runs
    that overlap keep the first one's count, and the last to end restores what was there before."""
    global _runs, _before
    with _lock:
        if _runs == 0:
            _before = cv2.getNumThreads()
            cv2.setNumThreads(count)
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                cv2.setNumThreads(_before)
