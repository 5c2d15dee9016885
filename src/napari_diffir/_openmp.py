"""OpenMP worker threads that sleep at barriers instead of spinning.

With the OpenMP runtime's default policy, torch's idle worker threads spin; when the cores are
busy with other work, the spinning threads steal them from the ones doing the work, and 2
threads ran DiffIR 2.3-4x and an SRDiff step up to 20x slower than 1 thread (see
docs/performance.md, "Threads"). The runtime reads ``OMP_WAIT_POLICY`` once, when torch loads
it, so the package sets it on import, before any of its modules imports torch.
"""

from __future__ import annotations

import os
import sys

__all__ = ["PASSIVE_WAITING", "prefer_passive_waiting"]


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; return whether the
    policy in force is passive (False also when torch was imported first, with its own)."""
    torch_loaded = "torch" in sys.modules
    if not torch_loaded:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return not torch_loaded and os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


PASSIVE_WAITING = prefer_passive_waiting()
"""Whether this process's OpenMP threads wait passively (decided when the package was imported)."""
