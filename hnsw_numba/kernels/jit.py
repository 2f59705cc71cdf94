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
Helpers and overloads compile without the CPython and C wrappers Numba otherwise generates and
optimises for every function it compiles (:class:`Helper`): only kernels are called from
Python, and a cold start (import, build 10,000 x 128, first answer) takes 4.7-4.8 s instead
of 5.6-5.8 s. Numba keys an overload's implementation by its caller's flags, so the few
overloads called both from a kernel and from a helper (``np.empty``, ``min``, the distance
loops) compile twice; without the wrappers the whole still takes a sixth less.
``fastmath`` is a flag set without ``nnan``/``ninf``: the kernels use ``inf`` as a sentinel,
and full fastmath would fold ``x < inf`` to true. ``error_model="numpy"`` drops the
division-by-zero checks Python semantics would insert.

Processes compiling side by side into one cache directory (Dask workers on one host) are safe:
a kernel's cache files are written under a file lock (:class:`LockedCacheFile`).
Numba's BLAS probe finds SciPy's BLAS module without importing ``scipy.linalg``
(:func:`_defer_blas_probe`). Set ``HNSW_NUMBA_CACHE=0`` to disable the on-disk cache (e.g.
on a read-only install without ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import itertools
import os
from functools import partial
from typing import Any

import numba
from numba.core.caching import IndexDataCacheFile
from numba.core.registry import CPUDispatcher

try:
    from fcntl import LOCK_EX, LOCK_UN
    from fcntl import flock as _flock
except ImportError:  # not POSIX: Numba's own (unlocked) cache files
    _flock = None
#: Whether kernels' cache files are written under a file lock (:class:`LockedCacheFile`; POSIX).
CACHE_LOCKED = _flock is not None

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("HNSW_NUMBA_CACHE", "1") != "0"


def _defer_blas_probe() -> None:
    """Numba's array implementations, loaded with the first function compiled or read from
    the cache, probe for BLAS by importing ``scipy.linalg.cython_blas`` (``scipy.linalg``
    whole: 0.06-0.15 s of every process that runs a kernel). The probe is answered by
    finding that module's file instead; Numba's linear algebra still imports it, through
    the original ``ensure_blas``, when code that uses BLAS compiles."""
    import sys
    from importlib.util import find_spec

    if "numba.np.arraymath" in sys.modules:
        return
    try:
        import numba.np.linalg as linalg

        original = linalg.ensure_blas
        scipy = find_spec("scipy")
    except Exception:  # another Numba version's internals, or no SciPy: the probe as it is
        return
    where = list(getattr(scipy, "submodule_search_locations", None) or ())
    if not where or not callable(original):
        return
    found = any(name.startswith("cython_blas.") and not name.endswith((".pyx", ".pxd")) for d in where for name in _listdir(os.path.join(d, "linalg")))

    def ensure_blas() -> None:
        linalg.ensure_blas = original  # one probe only: later callers get Numba's own
        if not found or sys._getframe(1).f_globals.get("__name__") != "numba.np.arraymath":
            original()

    linalg.ensure_blas = ensure_blas


def _listdir(path: str) -> list:
    try:
        return os.listdir(path)
    except OSError:
        return []


_defer_blas_probe()

_njit_kernel = partial(numba.njit, cache=CACHE, nogil=True, fastmath=FASTMATH, error_model="numpy")


def kernel(fn: Any) -> Any:
    """Compile ``fn`` as an entry point: cached on disk (:class:`LockedCacheFile`), GIL released."""
    dispatcher = _njit_kernel(fn)
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if type(cache_file) is IndexDataCacheFile and CACHE_LOCKED:
        cache_file.__class__ = LockedCacheFile
    return dispatcher

#: Options of helpers and overloads: no CPython or C wrappers (see :class:`Helper`).
JIT_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy", "nogil": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}


_WRAPPERLESS = ("no_cpython_wrapper", "no_cfunc_wrapper", "nopython")


class Helper(CPUDispatcher):
    """A function only kernels call, compiled without wrappers (see the module docstring).

    Called from Python (tests, a REPL) it runs ``python_twin``, the same function compiled
    with the wrappers by its first such call: a wrapper-less entry point called from Python
    would crash the interpreter.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        twin = self.__dict__.get("python_twin")
        if twin is None:
            options = {k: v for k, v in self.targetoptions.items() if k not in _WRAPPERLESS}
            twin = self.python_twin = numba.njit(locals=self.locals, **options)(self.py_func)
        return twin(*args, **kwargs)


def helper(fn: Any = None, **options: Any) -> Any:
    """Compile ``fn`` as a helper of kernels (:class:`Helper`; ``options`` as ``numba.njit``'s,
    e.g. ``locals``), as ``@helper`` or ``@helper(**options)``."""
    if fn is None:
        return partial(helper, **options)
    dispatcher = numba.njit(**JIT_OPTIONS, **options)(fn)
    dispatcher.__class__ = Helper
    return dispatcher


#: A driver with few callers: its IR is inlined into each caller, so Numba does not build,
#: optimise and emit it as a library of its own (see the module docstring).
inlined = partial(helper, inline="always")


class LockedCacheFile(IndexDataCacheFile):
    """Numba's cache index and data files, safe for processes compiling side by side.

    Numba adds an entry by reading a function's index, picking the first free data-file
    number, writing the index and then the data, with no lock: two processes compiling two
    specialisations of one kernel into one cache directory (Dask workers on one host, test
    workers) can both pick number 1, and one key is then paired with the other's machine
    code, which crashes the next process that loads it (numba#4807). Here a writer holds an
    exclusive ``flock`` on ``<index>.lock`` while it re-reads the index, picks the number and
    writes, and it writes the data before the index, so a reader (which takes no lock) never
    finds an entry whose data file is missing, half-written or another key's.
    """

    def save(self, key: Any, data: Any) -> None:
        """Add or replace the entry ``key`` under the directory's write lock."""
        os.makedirs(self._cache_path, exist_ok=True)
        with open(self._index_path + ".lock", "a+b") as lock:
            _flock(lock.fileno(), LOCK_EX)
            try:
                overloads = self._load_index()
                name = overloads.get(key)
                if name is None:
                    taken = set(overloads.values())
                    name = next(self._data_name(i) for i in itertools.count(1) if self._data_name(i) not in taken)
                self._save_data(name, data)
                if overloads.get(key) != name:
                    overloads[key] = name
                    self._save_index(overloads)
            finally:
                _flock(lock.fileno(), LOCK_UN)


def signature(dispatcher: Any, args: tuple) -> tuple:
    """The Numba signature a call of ``dispatcher`` with ``args`` compiles for."""
    return tuple(dispatcher.typeof_pyval(a) for a in args)


def cache_state(dispatcher: Any, args: tuple) -> str:
    """Where the specialisation of ``dispatcher`` for ``args`` is: ``"compiled"`` (in this
    process), ``"cached"`` (in the disk cache), ``"missing"`` (it must be compiled) or
    ``"unknown"``.

    Reads the index of Numba's disk cache (not a public API of Numba: any failure gives
    ``"unknown"``, never an error).
    """
    sig = signature(dispatcher, args)
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
    dispatcher.compile(signature(dispatcher, args))
