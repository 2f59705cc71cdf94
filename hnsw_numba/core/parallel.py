"""Run a nogil kernel on several threads that share an atomic work counter.

The calling thread always works too, and helpers only take what is left in the counter,
so a call completes even when the shared pool is busy (no nested-pool deadlock). Serial
kernels on a thread pool compile faster than ``parallel=True``, cache without caveats and
are safe to call from user threads and Dask (Numba's workqueue layer aborts on
concurrent entry).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .errors import InvalidParameterError

__all__ = ["available_cores", "check_threads", "resolve_threads", "run_parallel"]

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_threads(num_threads: Any) -> int | None:
    """A ``num_threads=`` argument as an int, or None (all cores).

    An int >= 1 or a NumPy integer, as ``k`` and ``ef`` take them; anything else (a bool,
    a float, 0) raises InvalidParameterError.
    """
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise InvalidParameterError(f"num_threads must be a positive int, got {num_threads!r}")
    return int(num_threads)


def resolve_threads(num_threads: int | None, n_items: int, min_per_thread: int = 1) -> int:
    """Threads to use: ``num_threads`` (default all cores; see :func:`check_threads`), at most
    one per ``min_per_thread`` items."""
    threads = check_threads(num_threads)
    return max(1, min(available_cores() if threads is None else threads, n_items // max(min_per_thread, 1)))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(available_cores(), 4), thread_name_prefix="hnsw_numba"
            )
        return _pool


def run_parallel(work: Callable[[], None], n_threads: int) -> None:
    """Call ``work()`` on ``n_threads`` threads (this one included) and wait for all.

    Always waits for every helper before returning or raising, even on Ctrl-C, so no
    kernel is still writing when the caller's locks are released.
    """
    if n_threads <= 1:
        work()
        return
    futures = [_executor().submit(work) for _ in range(n_threads - 1)]
    error: BaseException | None = None
    try:
        work()
    except BaseException as exc:
        error = exc
    for f in futures:
        while True:
            try:
                f.result()
                break
            except KeyboardInterrupt as exc:  # keep waiting, then re-raise
                error = error or exc
            except BaseException as exc:  # pragma: no cover - kernels do not raise
                error = error or exc
                break
    if error is not None:
        raise error
