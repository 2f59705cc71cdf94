"""Computing a sharded write's tasks: on the distributed client when there is one, else on
Dask's local scheduler; a failed write returns only once none of its tasks runs (a task
still running after the error would save its shard after the write's clean-up)."""

from __future__ import annotations

import concurrent.futures
import functools
import time
from concurrent.futures import Executor
from typing import Any

from .tasks import running_keys

__all__ = ["run_tasks", "current_client"]


def current_client() -> Any:
    """The distributed client that would run a compute now, or None (Dask's local scheduler).

    None also when ``dask.config`` names another scheduler (``scheduler="synchronous"``, ...).
    """
    import dask

    chosen = dask.config.get("scheduler", None)
    if chosen is not None and chosen not in ("dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def run_tasks(tasks: list, progress: bool | None) -> list:
    """Compute Dask tasks (on the distributed client when there is one); ``progress`` True
    shows :func:`distributed.progress` for them (the dashboard shows them either way)."""
    import dask

    client = current_client()
    if client is None:
        return _compute_local(tasks)
    futures = client.compute(tasks)
    try:
        if progress:
            from distributed import progress as show

            show(futures)
        return client.gather(futures)
    except BaseException:  # Ctrl-C or a failed shard: the queued tasks never start
        client.cancel(futures)
        # a cancelled task that is running saves its shard all the same: the clean-up waits for it
        _wait_running(client, {f.key for f in futures})
        raise


def _compute_local(tasks: list) -> list:
    """Compute ``tasks`` with Dask's local scheduler; a failure raises once no task runs.

    Dask's shared thread pool keeps running the other tasks after one fails, and one of
    them may save a shard after the write's clean-up: the threaded scheduler gets a pool
    of this call, shut down (queued tasks dropped, running ones awaited) before the error
    propagates; an Executor given as the scheduler has its futures of this call cancelled
    and awaited. The synchronous scheduler runs one task at a time, and the processes one
    waits for its own pool.
    """
    import dask
    import dask.threaded
    from dask.base import get_scheduler

    scheduler = get_scheduler(collections=tasks)
    configured = dask.config.get("scheduler", None)
    if isinstance(configured, Executor):
        return _compute_on(configured, tasks)
    if scheduler is not dask.threaded.get:
        return list(dask.compute(*tasks))
    pool = dask.threaded.ContextAwareThreadPoolExecutor(dask.config.get("num_workers", None) or dask.threaded.CPU_COUNT)
    try:
        return list(dask.compute(*tasks, scheduler=dask.threaded.get, pool=pool))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _compute_on(executor: Executor, tasks: list) -> list:
    """Compute ``tasks`` on a user's ``executor`` (``dask.config.set(scheduler=executor)``,
    as Dask would); a failure raises once none of this call's futures runs."""
    import dask
    import dask.local
    import dask.threaded

    futures: list = []

    def submit(fn: Any, *args: Any, **kwargs: Any) -> Any:
        future = executor.submit(fn, *args, **kwargs)
        futures.append(future)
        return future

    workers = getattr(executor, "_max_workers", None) or dask.config.get("num_workers", None) or dask.threaded.CPU_COUNT
    try:
        return list(dask.compute(*tasks, scheduler=functools.partial(dask.local.get_async, submit, workers)))
    except BaseException:
        for future in futures:
            future.cancel()
        concurrent.futures.wait(futures)
        raise


def _wait_running(client: Any, keys: set) -> None:
    """Return once no worker runs a task of ``keys`` (a dead or unreachable worker runs none)."""
    while True:
        try:
            busy = client.run(running_keys, keys, on_error="return")
        except Exception:  # the cluster is gone: nothing runs
            return
        if not any(isinstance(v, list) and v for v in busy.values()):
            return
        time.sleep(0.05)
