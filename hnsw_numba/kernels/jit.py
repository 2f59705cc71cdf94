"""The only place that configures Numba.

``kernel`` compiles entry points (cached on disk, GIL released); ``helper`` compiles the
small functions they call (their code is embedded in each caller's cache entry);
``inlined`` marks the per-node drivers (``link_node``, ``connect``, ``search_one``, ...)
whose IR Numba inlines into each kernel that calls them.

Compile time (the first-ever compile is what a new user waits for) follows two rules.
Every helper Numba compiles separately is optimised and emitted as machine code of its
own and then optimised again inside each caller, so the drivers, which sit between a
kernel and the shared helpers and have one or few callers, are ``inlined`` (inlining the
shared helpers too compiles slower: 36 s instead of 18 s). And a helper called
with a literal constant (``f(x, 0)``, or a counter ``n = 0`` that only later becomes an
int64) is compiled once more for ``Literal[int](0)``: pass ``np.int64(0)``; ids go to the
distance kernels as ``np.uint32``. ``tests/kernels/test_compile_budget.py`` checks both.
``fastmath`` is a flag set without ``nnan``/``ninf``: the kernels use ``inf`` as a sentinel,
and full fastmath would fold ``x < inf`` to true. ``error_model="numpy"`` drops the
division-by-zero checks Python semantics would insert.

Set ``HNSW_NUMBA_CACHE=0`` to disable the on-disk cache (e.g. on a read-only install
without ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("HNSW_NUMBA_CACHE", "1") != "0"

kernel = partial(numba.njit, cache=CACHE, nogil=True, fastmath=FASTMATH, error_model="numpy")
helper = partial(numba.njit, nogil=True, fastmath=FASTMATH, error_model="numpy")
JIT_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy", "nogil": True}
#: A driver with few callers: its IR is inlined into each caller, so Numba does not build,
#: optimise and emit it as a library of its own (see the module docstring).
inlined = partial(numba.njit, nogil=True, fastmath=FASTMATH, error_model="numpy", inline="always")


def _signature(dispatcher: Any, args: tuple) -> tuple:
    return tuple(dispatcher.typeof_pyval(a) for a in args)


def cache_state(dispatcher: Any, args: tuple) -> str:
    """Where the specialisation of ``dispatcher`` for ``args`` is: ``"compiled"`` (in this
    process), ``"cached"`` (in the disk cache), ``"missing"`` (it must be compiled) or
    ``"unknown"``.

    Reads the index of Numba's disk cache (not a public API of Numba: any failure gives
    ``"unknown"``, never an error).
    """
    sig = _signature(dispatcher, args)
    if sig in dispatcher.overloads:
        return "compiled"
    try:
        cache = dispatcher._cache
        if not getattr(cache, "_enabled", False):
            return "missing"
        key = cache._index_key(sig, dispatcher.targetctx.codegen())
        return "cached" if key in cache._cache_file._load_index() else "missing"
    except Exception:  # another Numba version's internals
        return "unknown"


def compile_for(dispatcher: Any, args: tuple) -> None:
    """Compile (or load from the disk cache) the specialisation of ``dispatcher`` for ``args``."""
    dispatcher.compile(_signature(dispatcher, args))
