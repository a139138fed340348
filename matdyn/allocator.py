"""Keep freed tensor memory in the process on glibc (Linux) CPUs.

glibc's ``malloc`` serves every request above its mmap threshold (adaptive, at most 32 MiB
on 64-bit systems; ``mallopt(3)``) with fresh pages from ``mmap`` and returns them to the
kernel on ``free``. PyTorch's CPU allocator is plain ``malloc``, so every activation of that
size is page-faulted and zeroed by the kernel again at each step: a [8, 256, 64, 64] float32
activation (32 MiB) of the 64 px critic, a [256, 64, 64, 64] one of batched generation.
Measured on the 2-core machine (issue 15, ``/proc`` minor faults; README, Performance):
138 k page faults per 64 px training step (batch 8, about 0.2 s of kernel time), 435 k per
64 px generation batch of 256; with :func:`reuse_freed_memory` 1.5 k and 0, and generation
31 % faster. TensorFlow and the CUDA caching allocator keep freed blocks for reuse too.

:func:`reuse_freed_memory` sets ``M_MMAP_MAX = 0`` (large blocks come from the heap) and a
trim threshold of 2 GiB, the largest ``mallopt`` takes (freed heap memory is kept for the
next step).
The cost: the process keeps its peak memory until it exits instead of returning it after
each step. It is called by the training, sweep, analysis and benchmark entry points;
library users can call it themselves. It does nothing (returns False) off glibc, when
``MATDYN_SYSTEM_MALLOC=1`` is set, or when the user tuned malloc through ``MALLOC_MMAP_MAX_``
/ ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (their choice wins).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["reuse_freed_memory"]

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers of glibc's <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top kept, not trimmed (mallopt takes an int)

_ENV_TUNED = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_state: dict[str, bool] = {}


def reuse_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse (module docstring). Idempotent; returns
    True when the setting is in effect in this process, False when not applied (not glibc,
    opted out, or malloc already tuned through the environment)."""
    if "on" in _state:
        return _state["on"]
    on = False
    if (sys.platform.startswith("linux") and os.environ.get("MATDYN_SYSTEM_MALLOC") != "1"
            and not any(k in os.environ for k in _ENV_TUNED)):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl and others have no mallopt
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            on = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))
    _state["on"] = on
    return on
