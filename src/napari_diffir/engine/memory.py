"""How much memory a forward may take, and a gate that keeps a process's concurrent forwards
within it.

One estimate (:func:`forward_bytes`, from the restorer's declared bytes per pixel) and one
budget (:func:`tile_budget`, half the device's free memory) size the tiles in
:func:`~.plan.resolve_tile`; the same two let dask's tile tasks, which a threaded scheduler runs
several at a time, start only while their forwards fit together (:func:`memory_gate`). Tiles are
never shrunk for concurrency there, so a dask result stays equal to the in-memory one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..restorer import RestorerInfo
from . import device as _device

__all__ = ["MemoryGate", "forward_bytes", "memory_gate", "tile_budget"]


def tile_budget(device) -> float:
    """Bytes the forwards of one process may take together: half the free memory of ``device``."""
    return _device.free_memory_bytes(device) * 0.5


def forward_bytes(info: RestorerInfo, yx: tuple[int, int], whole_plane: bool = False) -> float:
    """The restorer's memory estimate for one forward over a (Y, X) input (``whole_plane``: a
    plane restored as one tile, ``info.plane_bytes_per_pixel`` where given)."""
    h, w = (-(-n // info.multiple_of) * info.multiple_of for n in yx)
    per_pixel = getattr(info, "bytes_per_pixel", 4096)
    if whole_plane:
        per_pixel = getattr(info, "plane_bytes_per_pixel", None) or per_pixel
    return h * w * info.scale**2 * per_pixel


class MemoryGate:
    """Admits work while the estimates of what runs add up to at most a budget; one piece of
    work is always admitted, so an estimate above the budget waits for the others, never forever.

    The budget is read when the gate is idle (nothing of ours running), so it is the memory
    the work can have, not what our own running forwards left.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._used = 0.0
        self._running = 0
        self._budget = 0.0
        self.peak_running = 0
        """The most pieces of work that ran at once (for tests and benchmarks)."""

    @contextmanager
    def hold(self, nbytes: float, budget) -> Iterator[None]:
        """Run the ``with`` body once ``nbytes`` fit beside what runs; ``budget()`` gives the bytes."""
        with self._cond:
            while self._running and self._used + nbytes > self._budget:
                self._cond.wait()
            if not self._running:
                self._budget = float(budget())
            self._running += 1
            self._used += nbytes
            self.peak_running = max(self.peak_running, self._running)
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._used -= nbytes
                self._cond.notify_all()


_gates: dict[str, MemoryGate] = {}
_gates_lock = threading.Lock()


def memory_gate(device) -> MemoryGate:
    """This process's gate for ``device`` (one per device: each has its own memory)."""
    with _gates_lock:
        return _gates.setdefault(str(device), MemoryGate())
