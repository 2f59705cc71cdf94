"""The only place that configures Numba.

``kernel`` compiles entry points (cached on disk, GIL released); ``helper`` compiles the
small functions they call (their code is embedded in each caller's cache entry).
``fastmath`` is a flag set without ``nnan``/``ninf``: the kernels use ``inf`` as a sentinel,
and full fastmath would fold ``x < inf`` to true. ``error_model="numpy"`` drops the
division-by-zero checks Python semantics would insert.

Set ``HNSW_NUMBA_CACHE=0`` to disable the on-disk cache (e.g. on a read-only install
without ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import os
from functools import partial

import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("HNSW_NUMBA_CACHE", "1") != "0"

kernel = partial(numba.njit, cache=CACHE, nogil=True, fastmath=FASTMATH, error_model="numpy")
helper = partial(numba.njit, nogil=True, fastmath=FASTMATH, error_model="numpy")
JIT_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy", "nogil": True}
