"""The machine a GPU measurement ran on: device, driver and library versions (for bench_gpu's and gpu_check's
records). Imports nothing of seg_video, so it answers where the package itself cannot be imported."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import import_module, metadata

LIBRARIES = {"torch": "torch", "torchvision": "torchvision", "onnx": "onnx", "onnxruntime": "onnxruntime",
             "tensorrt": "tensorrt", "opencv": "cv2", "numpy": "numpy", "av": "av", "pycocotools": "pycocotools"}
"""Name in the record → module whose version it gives."""


def module_version(module: str) -> str:
    """The module's `__version__` (else its distribution's of the same name), or why it could not be imported."""
    try:
        found = getattr(import_module(module), "__version__", None)
    except Exception as error:  # noqa: BLE001 - a library that is missing or broken is a fact to record
        return f"not available ({type(error).__name__}: {error})"
    try:
        return str(found or metadata.version(module))
    except metadata.PackageNotFoundError:
        return "installed (no version)"


def gpu() -> dict[str, str]:
    """The first CUDA device as torch sees it (name, compute capability, memory, multiprocessors), CUDA and cuDNN
    versions, and the driver's version from nvidia-smi."""
    import torch

    if not torch.cuda.is_available():
        return {"gpu": "none (torch sees no CUDA device)"}
    properties = torch.cuda.get_device_properties(0)
    return {"gpu": properties.name, "compute_capability": f"{properties.major}.{properties.minor}",
            "gpu_memory_gib": f"{properties.total_memory / 2**30:.1f}",
            "multiprocessors": str(properties.multi_processor_count), "cuda": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version()), "driver": driver_version()}


def driver_version() -> str:
    """The NVIDIA driver's version (nvidia-smi), or why it is unknown."""
    try:
        answer = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown (nvidia-smi: {type(error).__name__})"
    return answer.stdout.strip().splitlines()[0] if answer.stdout.strip() else "unknown (nvidia-smi said nothing)"


def ort_providers() -> str:
    """ONNX Runtime's execution providers here (a CPU build lists only the CPU one)."""
    try:
        return ", ".join(import_module("onnxruntime").get_available_providers())
    except Exception as error:  # noqa: BLE001 - see module_version
        return f"none ({type(error).__name__})"


def environment() -> dict[str, str]:
    """Everything above in one flat record, with Python, the processor and its cores."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    record = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
              "cpu_cores": f"{os.cpu_count()} ({affinity} usable)"}
    record |= {name: module_version(module) for name, module in LIBRARIES.items()}
    record["onnxruntime_providers"] = ort_providers()
    return record | gpu()
