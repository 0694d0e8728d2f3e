"""glibc malloc thresholds for timing runs, so that page faults do not decide the timings.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves requests above its mmap
threshold (dynamic: 128 KiB, rising towards 32 MiB as large blocks are freed) with fresh pages
from the kernel, and hands heap memory above its trim threshold back to the kernel. A training
step frees and re-allocates dozens of full-size feature maps, and then, depending on the order of
earlier allocations, some steps fault tens of thousands of fresh pages in (measured: 0 to 90,000
faults per ResNet-50 step at 224px, about 0.1 s) and others none. Fixed thresholds (mmap at
glibc's 32 MiB maximum, trim at 2 GiB) keep freed memory in the heap for reuse. PyTorch's own
CPU launcher (``torch.backends.xeon.run_cpu``) gets the same effect by preloading jemalloc or
tcmalloc; this needs no preload.

It changes how the whole process allocates (it keeps up to the peak of its heap), so the benchmark
runners call it, and the library never does on import.
"""
from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "fix_malloc_thresholds"]

MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
_M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3


def fix_malloc_thresholds() -> dict[str, int] | None:
    """Fix glibc's mmap and trim thresholds for this process (see the module doc).

    Returns the thresholds set, or ``None`` where there is nothing to set: not Linux with glibc
    (macOS, Windows and musl allocate differently), or ``mallopt`` refused them.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting either threshold also stops glibc adjusting it
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
