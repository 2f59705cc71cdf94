"""The float16 copy that a large insert into a float32 store walks, made for it and dropped after.

A store with a walk copy (``walk_copy=True``) builds faster because every distance of an
insert's walk reads a float16 row, half the bytes. A float32 store without one gets the same
walk for large batches: :meth:`HalfWalks.start` rounds the rows the walk can reach to float16
into an array of the store's capacity, the insert kernel runs over ``WalkRows(copy, data)``,
and :meth:`HalfWalks.stop` drops the copy. The walks read the copy; the neighbour heuristic
compares the float32 rows' distances (``kernels.refine.refine_links``), so the graph keeps the
float32 walk's recall. Searches, answers and saves read the float32 rows alone.

The copy is taken when the batch is large (``HALF_WALK_MIN`` new nodes, at least
``1 / HALF_WALK_SHARE`` of the rows the walk can reach: its O(rows) cost stays small against
the linking), the rows fit float16 and keep apart in it (``store.float16_resolves``), and the
copy fits in half the memory the system reports available. ``HNSW_NUMBA_HALF_WALK=0`` turns it off.

Concurrent writers keep it current: every row write under ``state.alloc`` (an insert's new
rows, a resurrected or updated key) calls :meth:`HalfWalks.written`, so a walk never reads
a row older than the float32 one it stands for. The copy spans the store's capacity (zeros,
which the system maps only when written), so any NodeId the walk meets is inside it; the
capacity cannot change while it is in use (growth takes the lock exclusively).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..kernels.layout import F32Rows, WalkRows
from . import hugepages
from .limits import physical_memory
from .store import fits_float16, float16_resolves

__all__ = ["HALF_WALK_MIN", "HALF_WALK_SHARE", "HalfWalks", "half_walk_enabled", "half_walk_like", "available_memory", "wants_half_walk",
           "copy_allowed"]

#: New nodes a batch must bring for its walk to read a float16 copy: the insert kernel over
#: the copy is a second specialisation (0.3-1.6 s to compile in an empty cache, a load from
#: a filled one), which a small build would not earn back.
HALF_WALK_MIN = 16_384
#: ... and at least this share of the rows the walk can reach (new ones included).
HALF_WALK_SHARE = 16
#: Rows converted at a time: the range check and conversion of one block stay in cache.
_BLOCK_BYTES = 1 << 20


def half_walk_enabled() -> bool:
    """False when the environment sets ``HNSW_NUMBA_HALF_WALK=0``."""
    return os.environ.get("HNSW_NUMBA_HALF_WALK", "1").strip() not in ("0", "false", "False", "no")


def available_memory() -> int:
    """Bytes the system reports available (``MemAvailable``), else a quarter of physical memory."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return physical_memory() // 4


def copy_allowed(rows: Any, reach: int) -> bool:
    """Whether a float16 copy of ``reach`` rows of ``rows`` may be made, whatever the batch:
    float32 rows, not switched off, and half the available memory holds it."""
    return type(rows) is F32Rows and half_walk_enabled() and reach * rows.data.shape[1] * 2 <= available_memory() // 2


def wants_half_walk(rows: Any, n_new: int, reach: int) -> bool:
    """Whether an insert of ``n_new`` new nodes over ``rows`` (``reach`` rows in all, new
    ones included) walks a float16 copy (before the rows are checked to fit float16)."""
    return n_new >= HALF_WALK_MIN and n_new * HALF_WALK_SHARE >= reach and copy_allowed(rows, reach)


def half_walk_like(rows: Any) -> WalkRows:
    """A ``WalkRows`` of the types :meth:`HalfWalks.start` makes over ``rows`` (to compile for)."""
    return WalkRows(np.zeros((1, rows.data.shape[1]), np.uint16), rows.data)


def _half_rows(data: np.ndarray, lo: int, hi: int, out: np.ndarray) -> bool:
    """Round ``data[lo:hi]`` into ``out[lo:hi]`` (float16); False if a value is beyond float16."""
    step = max(1, _BLOCK_BYTES // max(1, data.shape[1] * 4))
    for a in range(lo, hi, step):
        block = data[a : min(hi, a + step)]
        if not fits_float16(block):
            return False
        out[a : a + block.shape[0]] = block
    return True


class _Copy:
    """One float16 copy: the store and data array it stands for, its bits, who uses it, and
    the store's ``version`` it matches (None: unknown, never taken again)."""

    __slots__ = ("store", "data", "bits", "users", "held", "spoiled", "version")

    def __init__(self, store: Any, data: np.ndarray, bits: np.ndarray, held: bool) -> None:
        self.store, self.data, self.bits, self.users, self.held, self.spoiled = store, data, bits, 0, held, False
        self.version = getattr(store, "version", None)


class HalfWalks:
    """The float16 copies that inserts into one index are walking (see the module docstring).

    ``start`` and ``written`` run under the index's ``alloc`` lock (so no row is written while
    a copy is made); the list is also guarded by a lock of its own for ``stop`` and ``hold``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._copies: list[_Copy] = []
        self._holds: dict[int, list] = {}  # id(store) -> [nesting of hold() blocks, the rows did not fit float16]

    def start(self, store: Any, rows: Any, n_new: int, reach: int) -> Any:
        """The rows an insert of ``n_new`` new nodes walks, rows ``0 .. reach - 1`` written:
        ``WalkRows`` over a float16 copy (a new one, or one a :meth:`hold` keeps), else
        ``rows`` itself (see :func:`wants_half_walk`). Pass the result to :meth:`stop`."""
        with self._lock:
            hold = self._holds.get(id(store))
            for c in self._copies:
                if c.store is store and c.held:
                    if c.data is rows.data and not c.spoiled and c.version is not None and c.version == getattr(store, "version", None):
                        c.users += 1
                        return WalkRows(c.bits, c.data)
                    # the store grew, took a row beyond float16, or changed rows without
                    # written() (a compaction between two batches): not for new walks
                    c.held = False
            self._copies = [c for c in self._copies if c.users or c.held]
        allowed = wants_half_walk(rows, n_new, reach) if hold is None else not hold[1] and copy_allowed(rows, reach)
        if not allowed:
            return rows
        data = rows.data
        if not float16_resolves(data[:reach]):  # rows float16 would merge: the float32 walk
            if hold is not None:
                hold[1] = True
            return rows
        half = hugepages.zeros(data.shape, np.float16)  # zero pages: only the rows written are resident
        if not _half_rows(data, 0, reach, half):
            if hold is not None:
                hold[1] = True  # rows beyond float16: the held batches walk the float32 rows
            return rows
        c = _Copy(store, data, half.view(np.uint16), hold is not None)
        c.users = 1
        with self._lock:
            self._copies.append(c)
        return WalkRows(c.bits, data)

    def written(self, store: Any, ids: np.ndarray) -> None:
        """Round the rows ``ids`` of ``store``, just written, into every copy of it in use."""
        if not self._copies:
            return
        data = getattr(store.rows(), "data", None)
        with self._lock:
            copies = [c for c in self._copies if c.store is store and c.data is data]
        for c in copies:
            rows = c.data[ids]
            if not fits_float16(rows):
                c.spoiled = True  # no later insert takes it; one walking it reads the nearest finite values
            c.bits.view(np.float16)[ids] = np.clip(rows, -65504.0, 65504.0)
            now = getattr(store, "version", None)
            if c.version is not None and now == c.version + 1:  # this write's own bump; any other change keeps it stale
                c.version = now

    def stop(self, rows: Any) -> None:
        """An insert is done with ``rows`` (what :meth:`start` returned): a copy no insert uses
        and no :meth:`hold` keeps is dropped."""
        if type(rows) is not WalkRows:
            return
        with self._lock:
            for c in self._copies:
                if c.bits is rows.bits:
                    c.users -= 1
            self._copies = [c for c in self._copies if c.users or c.held]

    def predicts(self, store: Any, rows: Any, n_new: int, reach: int) -> bool:
        """Whether :meth:`start` would give a ``WalkRows`` (as far as is known before the rows
        are checked): what the insert kernel is compiled for ahead of a first batch."""
        return copy_allowed(rows, reach) if id(store) in self._holds else wants_half_walk(rows, n_new, reach)

    @contextmanager
    def hold(self, store: Any, n_new: int | None = None, reach: int | None = None) -> Iterator[None]:
        """Inserts into ``store`` inside the block walk one float16 copy, whatever their size:
        the first makes it, the rest find it current (row writes keep it so), growth of the
        store makes it again. For a build in batches (``hn.Index.add_from``); with ``n_new``
        new nodes in all (``reach`` rows then), only if one insert of them would walk a copy
        (see :func:`wants_half_walk`), so that the batches build the graph one insert builds."""
        if n_new is not None and not wants_half_walk(store.rows(), n_new, n_new if reach is None else reach):
            yield
            return
        with self._lock:
            self._holds.setdefault(id(store), [0, False])[0] += 1
        try:
            yield
        finally:
            with self._lock:
                hold = self._holds[id(store)]
                hold[0] -= 1
                if not hold[0]:
                    del self._holds[id(store)]
                    for c in self._copies:
                        if c.store is store:
                            c.held = False
                    self._copies = [c for c in self._copies if c.users or c.held]

    def active(self) -> int:
        """How many copies are in use or kept."""
        return len(self._copies)
