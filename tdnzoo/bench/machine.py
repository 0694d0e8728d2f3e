"""What a benchmark ran on: machine, library versions, settings."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["machine_info", "malloc_description"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU/GPU model, core and thread counts, and versions of the libraries that matter."""
    import timm

    from ..version import __version__

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "tdnzoo": __version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def malloc_description(thresholds: dict[str, int] | None) -> str:
    """How CPU memory was allocated in a timing run, for its report (see :mod:`.allocator`)."""
    if thresholds is None:
        return "malloc as the process had it"
    return (f"glibc malloc thresholds fixed (mmap {thresholds['mmap_threshold'] / 2**20:.0f} MiB, "
            f"trim {thresholds['trim_threshold'] / 2**30:.0f} GiB)")
