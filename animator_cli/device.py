"""The default torch device, answered without importing torch when the answer is certain.

Importing torch takes seconds; a fully cached rerun only needs the device's *type* for its cache key. On a Linux
machine without a CUDA driver library (and without ROCm's /dev/kfd) `torch.cuda.is_available()` can only be False,
so the answer is "cpu" without torch; anywhere else torch itself is asked, so the result is always torch's.
"""

from __future__ import annotations

import ctypes
import os
import sys


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch on a machine with no GPU driver."""
    if not _gpu_driver_possible():
        return False
    import torch

    return torch.cuda.is_available()


def _gpu_driver_possible() -> bool:
    """False only when no CUDA or ROCm device can be reached: Linux, no libcuda.so.1 to load and no /dev/kfd."""
    if sys.platform != "linux" or os.path.exists("/dev/kfd"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")  # what the CUDA runtime loads; it is part of the NVIDIA driver
    except OSError:
        return False
    return True


def default_device() -> str:
    """``cuda`` when torch can use a GPU, else ``cpu`` (the release's choice)."""
    return "cuda" if cuda_available() else "cpu"


def device_type(device: str) -> str:
    """``torch.device(device).type`` without torch: ``cuda:1`` → ``cuda``."""
    return device.split(":", 1)[0]
