"""Where a result may be written, and how it appears there: never onto the input, never half.

Every writer goes through these rules, so the in-memory CLI path, the streaming path and the
widget's save agree. Paths are compared by identity (``os.path.samefile`` / ``realpath``), so a
symlink or a symlinked folder cannot make the output land on the input. A streaming run holds an
exclusive lock on its output for its whole life, so two runs into one output cannot both
proceed; the publish step re-checks the destination (a plain file is linked into place, which
fails if something appeared there meanwhile). New files get the permissions the umask gives any
tool; a replaced file keeps its mode.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat

__all__ = ["OutputBusyError", "OutputLock", "check_not_input", "check_output", "check_space", "file_mode",
           "publish_file"]


class OutputBusyError(FileExistsError):
    """Another run holds the lock on this output."""


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)).rstrip("/\\") or "/")


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip(os.sep) + os.sep)


def check_not_input(input: str, output: str) -> None:
    """Refuse an output that is the input (through any symlink), inside it, or contains it."""
    src, dst = _real(input), _real(output)
    same = src == dst
    if not same and os.path.exists(input) and os.path.exists(output):
        try:
            same = os.path.samefile(input, output)  # hard links, bind mounts
        except OSError:
            same = False
    if same:
        raise ValueError(f"OUTPUT {output!r} is the same as INPUT {input!r}; napari-diffir never "
                         "overwrites its input")
    if _inside(dst, src):
        raise ValueError(f"OUTPUT {output!r} lies inside INPUT {input!r}; write it elsewhere")
    if _inside(src, dst):
        raise ValueError(f"INPUT {input!r} lies inside OUTPUT {output!r}, which a replaced output "
                         "would delete; write it elsewhere")


def check_output(output: str, overwrite: bool, *, folder_ok: bool = False) -> None:
    """What can be known about ``output`` before any work: exists, a folder, unwritable place.

    :param folder_ok: whether the output format is a folder (Zarr), so an existing folder is an
        existing output rather than a mistake.
    """
    path = os.path.abspath(os.fspath(output))
    if os.path.isdir(path) and not folder_ok:
        raise IsADirectoryError(errno.EISDIR, "the output is an existing folder; name a file", output)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"Output {output!r} exists; pass --overwrite to replace it")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"Output folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write into the output folder", parent)


def check_space(output: str, nbytes: int) -> None:
    """Refuse a run whose output (``nbytes``) cannot fit in the free space of its folder."""
    folder = os.path.dirname(os.path.abspath(os.fspath(output)))
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise OSError(errno.ENOSPC, f"the output needs about {_size(nbytes)} but only {_size(free)} "
                      "are free there", folder)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def file_mode(replaced: str | None = None) -> int:
    """The mode a new file gets from the umask (0666 & ~umask), or the mode of the file it replaces."""
    if replaced is not None:
        try:
            return stat.S_IMODE(os.stat(replaced).st_mode)
        except OSError:
            pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish_file(tmp: str, dst: str, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``dst``: replace it only with ``overwrite``, else fail if it
    appeared while ``tmp`` was written (a link is created atomically or not at all)."""
    os.chmod(tmp, file_mode(dst if overwrite else None))
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise FileExistsError(f"Output {dst!r} appeared while this run was writing it (another "
                              "run?); it was left as it is, pass --overwrite to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # a file system without hard links: check, then rename
            raise FileExistsError(f"Output {dst!r} appeared while this run was writing it") from None
        os.replace(tmp, dst)
        return
    os.remove(tmp)


class OutputLock:
    """An exclusive lock on ``OUTPUT.lock`` for the life of a run writing ``OUTPUT``.

    The lock is an ``flock`` (released by the kernel if the process dies, so a crash leaves no
    stale lock); the file is removed on release.
    """

    def __init__(self, output: str) -> None:
        self.output = os.path.abspath(os.fspath(output)).rstrip("/\\")
        self.path = self.output + ".lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError(
                    f"Another napari-diffir run is writing {self.output!r} (it holds {self.path!r}); "
                    "wait for it to finish or choose another output") from None
            try:  # the holder before us may have removed the file after we opened it: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
