"""The progress manifest of a streaming run: which output blocks are finished, and for what run.

A block is recorded only after its data has been written completely, and the manifest file is
replaced atomically (write a temporary file, fsync, rename), so after any interruption it names
only blocks whose chunks are whole. A block that was being written when the run stopped is not
in it and is recomputed on resume. The ``signature`` (input, restorer, options, chunking, ...)
guards against resuming with different settings.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from typing import Any

import numpy as np

MANIFEST_NAME = "napari-diffir-progress.json"
FORMAT = 1


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never a mix."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class Manifest:
    """Finished blocks of a grid (a bitmap), the run's signature and values fixed at the start."""

    def __init__(self, path: str, grid: tuple[int, ...], signature: dict, state: dict | None = None,
                 done: np.ndarray | None = None) -> None:
        self.path = path
        self.grid = tuple(int(n) for n in grid)
        self.signature = signature
        self.state = dict(state or {})
        """Values decided once and reused on resume (seed, normaliser)."""
        self.done = np.zeros(self.grid, bool) if done is None else done.reshape(self.grid)

    @property
    def total(self) -> int:
        return int(self.done.size)

    @property
    def finished(self) -> int:
        return int(self.done.sum())

    def is_done(self, index: tuple[int, ...]) -> bool:
        return bool(self.done[tuple(index)])

    def mark(self, index: tuple[int, ...]) -> None:
        """Record that block ``index`` is completely written, and save at once."""
        self.done[tuple(index)] = True
        self.save()

    def save(self) -> None:
        bits = base64.b64encode(np.packbits(self.done.reshape(-1)).tobytes()).decode("ascii")
        doc = {"format": FORMAT, "grid": list(self.grid), "signature": self.signature,
               "state": self.state, "done": bits}
        atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True, default=_json_default))

    @classmethod
    def load(cls, path: str) -> Manifest | None:
        """The manifest at ``path``, or None if it is missing or unreadable (then trust nothing)."""
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            if doc.get("format") != FORMAT:
                return None
            grid = tuple(int(n) for n in doc["grid"])
            n = int(np.prod(grid))
            bits = np.frombuffer(base64.b64decode(doc["done"]), np.uint8)
            done = np.unpackbits(bits)[:n].astype(bool)
            if done.size != n:
                return None
            return cls(path, grid, doc["signature"], doc.get("state", {}), done)
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the progress manifest")


def differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` for every setting that changed."""
    old_n, new_n = json.loads(json.dumps(old, default=_json_default)), json.loads(json.dumps(new, default=_json_default))
    return [f"{k}: {old_n.get(k)!r} -> {new_n.get(k)!r}" for k in sorted(set(old_n) | set(new_n))
            if old_n.get(k) != new_n.get(k)]
