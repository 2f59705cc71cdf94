"""Compile (or load from the disk cache) the kernels ahead of use.

Call it in a Docker build, a CI set-up step, or in a parent process before forking
workers, so the first real call does not pay for compilation.
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np

__all__ = ["warmup"]


def warmup(dtypes: Iterable[str] = ("float32",), metrics: Iterable[str] = ("l2",)) -> float:
    """Exercise insert (a large float32 batch's too), update, single and batch search, brute force and integrity checks once per store type.

    Parameters
    ----------
    dtypes : iterable of str
        Float store dtypes to compile for (``"float32"``, ``"float16"``, ``"bfloat16"``, or
        ``"float32+float16"``: float32 with a float16 walk copy).
    metrics : iterable of str
        Metric names; one per store type suffices (the metric is a runtime branch).

    Returns
    -------
    float
        Seconds spent.
    """
    from . import HnswConfig, Hnsw, InMemoryVectorStore
    from .core.metrics import metric_from_name

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    for dtype in dtypes:
        for name in metrics:
            idx = Hnsw(metric_from_name(name), HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=0))
            copy = dtype == "float32+float16"
            store = InMemoryVectorStore(8, 64, dtype="float32" if copy else dtype, walk_copy=copy)
            idx.insert_batch(store, np.arange(62), x[:62], num_threads=1)
            with idx.state.half_walks.hold(store):  # the walk of a large float32 batch (core.half_walk)
                idx.insert_batch(store, [62], x[62:63], num_threads=1)
            idx.set(store, 0, x[63])
            idx.search(store, x[0], 3)
            idx.search_batch(store, x[:2], 3, num_threads=1)
            idx.search_batch(store, x[:2], 3, exact=True, num_threads=1)
            idx.check_integrity()
    return time.perf_counter() - t
