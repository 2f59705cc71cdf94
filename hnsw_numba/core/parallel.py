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
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .errors import HnswWarning, InvalidParameterError, is_thread_refusal
from .interrupts import held_interrupts

__all__ = ["available_cores", "check_threads", "resolve_threads", "run_parallel", "in_rounds", "ROUND_SECONDS", "MIN_ROUND",
           "MAX_ROUND"]

#: A long call runs in rounds of about this many seconds: Ctrl-C is taken between them
#: (a thread inside a nogil kernel runs no Python signal handler).
ROUND_SECONDS = 0.5
MIN_ROUND, MAX_ROUND = 256, 65536

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the pool's threads did not come along, yet the pool counts them as
    idle and would start none, so every helper submitted would wait for ever; start afresh."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


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


class _Helper:
    """``work`` for a pool thread, unless :meth:`cancel` comes first.

    ``ThreadPoolExecutor.submit`` queues its item before it starts a thread; a start the OS
    refuses leaves the item queued with no future to wait on, and the next thread the pool
    starts (in a later call) would run it after its caller released its locks. Cancelled,
    it does nothing. The lock is held while the work runs (one lock: ~0.4 us a helper).
    """

    __slots__ = ("_work", "_lock")

    def __init__(self, work: Callable[[], None]) -> None:
        self._work: Callable[[], None] | None = work
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            work, self._work = self._work, None
            if work is not None:
                work()

    def cancel(self) -> bool:
        """Keep the helper from running; False when a thread runs it now (see :meth:`wait`)."""
        if not self._lock.acquire(blocking=False):
            return False
        self._work = None
        self._lock.release()
        return True

    def wait(self) -> None:
        """Wait until the thread that runs the helper is done."""
        with self._lock:
            pass


def run_parallel(work: Callable[[], None], n_threads: int) -> None:
    """Call ``work()`` on ``n_threads`` threads (this one included) and wait for all.

    Always waits for every helper before returning or raising, even on Ctrl-C, so no
    kernel is still writing when the caller's locks are released. When the OS refuses a
    helper thread (memory or process limits), no more start: the threads running, this one
    included, take the rest of the work (every ``work`` claims its items from a shared
    counter), and an :class:`HnswWarning` says how many ran.
    """
    if n_threads <= 1:
        work()
        return
    waits: list = []  # futures, and a refused helper a pool thread took
    refused: RuntimeError | None = None
    error: BaseException | None = None
    try:
        # a Ctrl-C inside submit() (a thread starting) would leave a helper queued that is
        # in no list to wait for: it would link on after its caller released its locks
        with held_interrupts():
            for _ in range(n_threads - 1):
                helper = _Helper(work)
                try:
                    waits.append(_executor().submit(helper))
                except RuntimeError as exc:
                    if not is_thread_refusal(exc):
                        raise
                    refused = exc
                    if not helper.cancel():  # a pool thread took it before the refusal
                        waits.append(helper)
                    break
        work()
    except BaseException as exc:  # the helpers that started finish the work (they take what is left)
        error = exc
    for w in waits:
        while True:
            try:
                if isinstance(w, Future):
                    w.result()
                else:
                    w.wait()
                break
            except KeyboardInterrupt as exc:  # keep waiting, then re-raise
                error = error or exc
            except BaseException as exc:  # pragma: no cover - kernels do not raise
                error = error or exc
                break
    if error is not None:
        raise error
    if refused is not None:  # the work is done, on fewer threads: slower, not wrong
        warnings.warn(f"the OS refused a worker thread (memory or process limits): the work ran on {len(waits) + 1} "
                      f"of {n_threads} threads", HnswWarning, stacklevel=2)


def in_rounds(n: int, step: Callable[[int, int], None], first: int, update: Callable[[int], None] | None = None,
              least: int | None = None) -> None:
    """Call ``step(start, stop)`` over ``[0, n)`` in rounds of about :data:`ROUND_SECONDS`.

    The first round takes ``first`` items; each later one is aimed at ROUND_SECONDS by the
    rate measured so far (at most doubling: the first rounds may pay for compilation or a
    cold cache), never fewer than ``least`` (default :data:`MIN_ROUND`). A Ctrl-C surfaces
    when the round running then returns. ``update(count)`` is called after each round with
    the items it did.
    """
    least = max(1, MIN_ROUND if least is None else least)
    size = min(n, max(least, first))
    done = 0
    while done < n:
        stop = min(n, done + size)
        t0 = time.perf_counter()
        step(done, stop)
        elapsed = time.perf_counter() - t0
        if update is not None:
            update(stop - done)
        rate = (stop - done) / max(elapsed, 1e-6)
        size = int(min(MAX_ROUND, 2 * size, max(least, rate * ROUND_SECONDS)))
        done = stop
