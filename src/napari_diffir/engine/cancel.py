"""Cancel that a restorer cannot ignore.

A cooperative restorer calls ``ctx.step()``, which raises :class:`RestorationCancelled` within
one sampling step. One that never calls it (a third-party model with a single long forward
pass, or a loop that forgets) would keep the caller waiting for the whole tile. So when a
caller can cancel, each tile runs in a helper thread while the caller's thread watches the
cancel flag: on cancel the caller gets :class:`RestorationCancelled` within
:data:`POLL_SECONDS` and nothing of the run is returned. The helper thread is told to stop too
(``RestorationCancelled`` is raised in it at its next Python instruction); a native call it is
inside (one torch operation) runs to its end in the background and its result is dropped. The
helper is a daemon thread, so it never holds up the interpreter's exit.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..restorer import RestorationCancelled

__all__ = ["POLL_SECONDS", "call_cancellable", "check_cancel", "is_cancelled"]

POLL_SECONDS = 0.05
"""How often the caller's thread looks at the cancel flag while a tile runs."""

T = TypeVar("T")


def is_cancelled(cancel: Any) -> bool:
    """Whether ``cancel`` (an event with ``is_set()``, a callable, or ``None``) says stop."""
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def check_cancel(cancel: Any) -> None:
    """Raise :class:`RestorationCancelled` if ``cancel`` says stop."""
    if is_cancelled(cancel):
        raise RestorationCancelled("restoration cancelled")


def call_cancellable(fn: Callable[[], T], cancel: Any, poll: float = POLL_SECONDS) -> T:
    """``fn()``, or :class:`RestorationCancelled` within ``poll`` seconds of a cancel.

    Without a ``cancel`` the call runs in the caller's thread, as before. ``fn`` runs in a new
    thread otherwise: thread-local torch state (``inference_mode``, autocast) must be entered
    inside ``fn``.
    """
    if cancel is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            try:
                box["value"] = fn()
            except RestorationCancelled:
                box["cancelled"] = True
            except BaseException as exc:  # handed to the caller, raised there
                box["error"] = exc
            finally:
                done.set()
        except RestorationCancelled:  # the stop arrived just as fn returned
            pass

    worker = threading.Thread(target=target, name="napari-diffir-tile", daemon=True)
    worker.start()
    while not done.wait(poll):
        if is_cancelled(cancel):
            _stop(worker, done)
            raise RestorationCancelled("restoration cancelled")
    if "error" in box:
        raise box["error"]
    if box.get("cancelled"):
        raise RestorationCancelled("restoration cancelled")
    return box["value"]


def _stop(worker: threading.Thread, done: threading.Event) -> None:
    """Raise RestorationCancelled inside ``worker`` at its next Python instruction."""
    if done.is_set() or worker.ident is None:
        return
    set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc
    n = set_async(ctypes.c_ulong(worker.ident), ctypes.py_object(RestorationCancelled))
    if n > 1:  # never expected: undo rather than disturb other threads
        set_async(ctypes.c_ulong(worker.ident), None)
