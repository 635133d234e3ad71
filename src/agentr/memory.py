"""Handing freed heap memory back to the operating system between training and generation.

glibc's allocator keeps memory that Python frees on its heap for reuse, and it raises its mmap
threshold as large blocks are freed, so after a few steps even a training step's multi-megabyte
activations come from the heap. A finished training phase therefore leaves gigabytes freed but
still resident in the process, and a generation engine started next (in this process, or in a
process of its own) adds its weights and KV cache on top. `malloc_trim` releases those free
pages. It is cheap (it walks the free lists, not the live data), so agentr calls it wherever
training and generation hand the machine over to each other (`agentr.callbacks.GenerationCallback`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def return_freed_heap() -> bool:
    """Give the heap's free pages back to the operating system; whether any were released
    (False also where the C library cannot)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
