"""The C allocator's settings for processes that handle a frame-sized buffer at a time.

Every stage allocates and frees several frame-sized arrays per frame (a decoded picture, ZeroMQ's
receive buffers, the merge's float strips and its output: 1–8 MB each at 720p). glibc serves
blocks that large with a fresh ``mmap`` each time and returns them with ``munmap``, so every page
is faulted in again on first touch: on the 2-core VM this project is measured on, that was about
half of the merge's time (7 ms of 14 for a 1280×720 frame). Raising ``M_MMAP_THRESHOLD`` to its
maximum (32 MiB) and ``M_TRIM_THRESHOLD`` keeps such blocks in the heap, where the next frame
reuses them. Memory stays bounded: a stage holds a fixed number of frames, so its heap stops
growing once it has room for them. Larger blocks (frames above ~10 MP) are still mapped per use.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's upper limit on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def reuse_freed_memory() -> bool:
    """Keep freed frame-sized blocks for reuse in this process (glibc only; elsewhere nothing
    changes). Returns True when the settings took effect. Call it early, before the first frame."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
