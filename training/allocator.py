"""glibc's allocator, set for training on the CPU.

A training step allocates and frees the same large activations every step (a small model's upscaled 64x64 maps are
12 MiB each). glibc serves them with fresh memory that the OS maps page by page (its mmap threshold starts at 128 KiB
and its heap returns freed memory at its top), so every step pays the page faults again. `keep_freed_memory` raises
the mmap threshold to glibc's maximum (32 MiB on 64-bit) and stops trimming the heap: freed blocks are reused by the
next step. Measured on a CPU training step of the learning benchmark's model (ViT 96x6, 128 px, batch 8, 2 threads):
page faults 2.4x fewer, the step 3-5% shorter (docs/benchmarks/fast-paths.md). The process keeps its peak memory
(which a training step reaches again every step anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**31 - 1  # in effect never: freed memory at the top of the heap stays for the next step

_applied = False


def runs_on_glibc() -> bool:
    """Whether this process's C library is glibc (on Linux), whose allocator `keep_freed_memory` sets."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keeps_freed_memory() -> bool:
    """Whether `keep_freed_memory` has set this process's allocator."""
    return _applied


def keep_freed_memory() -> bool:
    """Set glibc's allocator for training (see the module docstring), once per process. Returns whether this process
    runs with the setting (False on other C libraries, where nothing is changed)."""
    global _applied
    if _applied:
        return True
    if not runs_on_glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # both: setting the trim threshold alone also turns off glibc's sliding mmap threshold, which then leaves every
    # block above 128 KiB mapped afresh (measured 1.5x slower steps)
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        logger.debug("mallopt refused the training allocator settings")
        return False
    _applied = True
    logger.debug("glibc allocator: mmap threshold %d bytes, heap not trimmed", MMAP_THRESHOLD_MAX)
    return True
