"""Where dask runs the blocks: ``threads``, ``processes``, a local cluster or a running scheduler.

``--scheduler`` on the command line maps to :func:`open_scheduler`:

- ``threads`` (default, unless a dask.distributed ``Client`` is already active in this process,
  which is then used): dask's thread pool in this process (one model shared by the threads).
- ``processes``: dask's process pool on this machine (one model per process).
- ``synchronous``: one block after another in this thread (debugging).
- ``local`` or ``local:N``: a ``distributed.LocalCluster`` with N single-threaded worker processes.
- ``tcp://host:port`` (or ``tls://``, ``ws://``, ``wss://``): a running dask.distributed
  scheduler, e.g. one started by dask-jobqueue on SLURM or by ``dask scheduler``; its workers
  must see the input and output paths and have napari-diffir installed.

:meth:`Scheduler.compute_each` runs a list of delayed tasks and calls back as each finishes,
which the streaming writer uses to record progress chunk by chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

REMOTE_PREFIXES = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")
LOCAL_KINDS = ("threads", "processes", "synchronous")


class Scheduler:
    """A resolved scheduler: ``kind`` and, for distributed ones, the ``client``."""

    def __init__(self, kind: str, client: Any = None, workers: int | None = None) -> None:
        self.kind = kind
        self.client = client
        self.workers = workers

    def __repr__(self) -> str:
        where = f" {self.client.scheduler.address}" if self.client is not None else ""
        return f"<Scheduler {self.kind}{where}>"

    def compute_each(self, tasks: Sequence[Any], on_done: Callable[[Any], None]) -> None:
        """Compute dask ``tasks``, calling ``on_done(result)`` in this thread as each finishes."""
        if not tasks:
            return
        if self.client is not None:
            self._distributed(tasks, on_done)
        else:
            self._local(tasks, on_done)

    def _local(self, tasks, on_done) -> None:
        import dask
        from dask.callbacks import Callback

        wanted = {t.key for t in tasks}

        class _Finished(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in wanted:
                    on_done(result)

        kwargs = {"num_workers": self.workers} if self.workers and self.kind != "synchronous" else {}
        with _Finished():
            dask.compute(*tasks, scheduler=self.kind, **kwargs)

    def _distributed(self, tasks, on_done) -> None:
        from distributed import as_completed

        futures = self.client.compute(list(tasks))
        try:
            for future in as_completed(futures):
                on_done(future.result())
        except BaseException:
            self.client.cancel(futures)
            raise


CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a remote scheduler before giving up with a clear message."""


@contextlib.contextmanager
def open_scheduler(spec: str | None = None, *, workers: int | None = None,
                   timeout: float | None = None) -> Iterator[Scheduler]:
    """Resolve ``spec`` to a :class:`Scheduler` that plain ``dask.compute`` calls inside the
    ``with`` block also use; clusters and clients are closed on exit."""
    import dask

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    if spec is None:
        client = _current_client()
        if client is not None:  # a Client the caller created (e.g. in a notebook) is used as is
            yield Scheduler("distributed", client)
            return
    name = (spec or "threads").strip()
    lower = name.lower()
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, but got {workers!r}")
    if lower in ("threads", "threading", "processes", "multiprocessing", "synchronous", "sync"):
        kind = {"threading": "threads", "multiprocessing": "processes", "sync": "synchronous"}.get(lower, lower)
        config = {"scheduler": kind, **({"num_workers": workers} if workers else {})}
        with contextlib.ExitStack() as stack:
            if kind == "processes":  # one pool for every compute: processes start (and import torch) once
                config["pool"] = stack.enter_context(_process_pool(workers))
            stack.enter_context(dask.config.set(config))
            yield Scheduler(kind, workers=workers)
        return
    if lower == "local" or lower.startswith("local:"):
        n = workers
        if ":" in lower:
            try:
                n = int(lower.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"--scheduler local:N needs an integer N, but got {spec!r}") from None
        Client, LocalCluster = _distributed_classes()
        with LocalCluster(n_workers=n or 2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster, set_as_default=False) as client:
            with dask.config.set(scheduler=client), client.as_current():
                yield Scheduler("distributed", client)
        return
    if lower.startswith(REMOTE_PREFIXES):
        Client, _ = _distributed_classes()
        try:
            client = Client(name, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"Cannot reach the dask scheduler at {name} within {timeout:g} s ({exc}). Check that "
                "`dask scheduler` (or your dask-jobqueue cluster) is running at that address and "
                "reachable from here, or use --scheduler threads / processes / local"
            ) from None
        try:
            with dask.config.set(scheduler=client), client.as_current():
                yield Scheduler("distributed", client)
        finally:
            client.close()
        return
    raise ValueError(
        f"Unknown scheduler {spec!r}; use threads, processes, synchronous, local[:N] "
        "or the address of a dask.distributed scheduler (tcp://host:port)"
    )


@contextlib.contextmanager
def _process_pool(workers: int | None):
    """The process pool dask's ``processes`` scheduler would create, kept for several computes."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from dask.multiprocessing import get_context, initialize_worker_process

    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        os.environ["PYTHONHASHSEED"] = "6640"  # what dask sets: consistent hashing in children
    n = workers or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // n)
    pool = ProcessPoolExecutor(
        n, mp_context=get_context(),
        initializer=partial(initialize_worker_process, user_initializer=partial(_share_cores, threads)),
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _share_cores(threads: int) -> None:
    """Give each worker process its share of the cores: oversubscribed OpenMP threads spin and
    can make torch many times slower (dask.distributed's nanny does the same with 1 thread)."""
    import os
    import sys

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _current_client():
    """The default dask.distributed Client of this process, if the caller made one."""
    import sys

    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].default_client()
    except ValueError:
        return None


def _distributed_classes():
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "This scheduler needs dask.distributed: pip install 'napari-diffir[distributed]'"
        ) from None
    return Client, LocalCluster
