"""Hand the memory a finished step freed back to the operating system (glibc only).

glibc keeps what a thread frees in that thread's heap (arena) for its next allocations, and for
blocks under its adaptive mmap threshold (up to 32 MiB, which covers a tile's activations) it
returns almost none of it. A model forward frees hundreds of MiB when it ends, so in a run with
several worker threads each thread's arena stays as large as the largest step it ever ran: the
thread that computed a plane's DiffIR statistics kept ~0.6 GiB that the tiles running beside it
could not use, and a 4096² stream with 2 workers peaked above 2 GiB. ``malloc_trim`` gives the
free pages of every arena back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no libc found, or one without malloc_trim (musl)
        return None


def release_free_memory() -> None:
    """Return the free pages of every malloc arena to the OS (a no-op off glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
