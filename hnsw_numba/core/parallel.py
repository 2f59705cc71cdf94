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
from typing import Callable

__all__ = ["available_cores", "resolve_threads", "run_parallel"]

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_threads(num_threads: int | None, n_items: int, min_per_thread: int = 1) -> int:
    """Threads to use: ``num_threads`` (default all cores), at most one per ``min_per_thread`` items."""
    from .errors import InvalidParameterError

    if num_threads is None:
        num_threads = available_cores()
    elif isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise InvalidParameterError(f"num_threads must be a positive int, got {num_threads!r}")
    return max(1, min(num_threads, n_items // max(min_per_thread, 1)))


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
