"""The line that names the machine a benchmark ran on, in its printout and JSON (shared by the tools)."""

from __future__ import annotations

import platform

from seg_video.core.threads import available_cpus


def machine_line(*extra: str) -> str:
    """`x86_64, 2 cores, Python 3.11.7`, then `extra` (e.g. library versions): processor, the cores this process
    may use, Python."""
    return ", ".join([platform.processor() or platform.machine(), f"{available_cpus()} cores",
                      f"Python {platform.python_version()}", *extra])
