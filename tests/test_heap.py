"""engine.heap: freed heap memory goes back to the operating system."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_diffir.engine.heap import _malloc_trim, release_free_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None,
                                reason="malloc_trim is glibc's")


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def test_freed_heap_holes_are_returned():
    # 200 MiB in 64 KiB blocks (below any mmap threshold: from the heap), every 16th kept, so
    # free() cannot give the holes back by shrinking the heap's top
    blocks = [np.ones(8192) for _ in range(3200)]
    base = _rss_mib()
    kept = blocks[::16]
    del blocks
    held = _rss_mib()
    release_free_memory()
    after = _rss_mib()
    assert base - held < 50, "free() alone gave the holes back: the premise of the test does not hold"
    assert held - after > 120, f"RSS {held:.0f} -> {after:.0f} MiB"
    assert all(float(b[0]) == 1.0 for b in kept)  # what is still in use is untouched
