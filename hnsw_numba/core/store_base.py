"""What the index needs from a vector store, and the base of the built-in stores.

A store hands the kernels a ``*Rows`` NamedTuple (:mod:`hnsw_numba.kernels.layout`) through
``rows()``; anything that satisfies :class:`VectorStore` can be searched. The built-in
stores keep their vectors as per-NodeId arrays ("columns": the float store's ``data``, the
Qi8 store's ``codes`` / ``scale`` / ``zero_point``) plus a ``written`` mask, and share the
code that does not depend on the encoding (:class:`ColumnStore`): writing, growing,
compacting, memory reports. Persistence reads and fills ``columns()``.
"""

from __future__ import annotations

import math
import threading
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .config import MAX_NODES, check_int
from .errors import CapacityError, DimensionMismatchError, HnswError, IndexFormatError, InvalidParameterError, InvalidVectorError, nonfinite_error
from . import hugepages
from .interrupts import held_interrupts
from .limits import check_allocation

__all__ = ["VectorStore", "ColumnStore", "COLUMNS_LOCK", "decode_rows", "finite_rows", "real_array", "float32_array", "value_limit", "within_limit", "check_limit",
           "same_rows"]

#: Held while a built-in store replaces its columns and while ``rows()`` builds its tuple:
#: searches call ``rows()`` without the index's lock, and a tuple built between two column
#: assignments of a resize would pair new codes with old scales (or new vectors with the old
#: walk copy), whose shorter arrays a search reads past. Taken only when the arrays change.
#: Lock order: the index's lock, its ``alloc``, a store's :attr:`ColumnStore.row_lock`, this one.
COLUMNS_LOCK = threading.Lock()


def same_rows(a: tuple, b: tuple) -> bool:
    """Whether two ``rows()`` tuples hold the very same arrays (what a binding, a Filter's
    block or sketch, or a kept call was checked against is still what the store reads)."""
    return a is b or (len(a) == len(b) and all(x is y for x, y in zip(a, b)))
#: Bytes of bool temporary :func:`finite_rows` uses per block of rows.
FINITE_BLOCK_BYTES = 1 << 20
#: Values per block of rows :meth:`ColumnStore.unsearchable_row` widens to float32 at a time.
CHECK_BLOCK_VALUES = 1 << 22


def real_array(values: object) -> np.ndarray:
    """``values`` as an array of real numbers (float, int, unsigned, bool, bfloat16), not converted.

    Anything else raises :class:`InvalidVectorError`: ragged nesting and objects, and what NumPy
    would convert wrongly (it parses numeric text, drops the imaginary part of complex
    numbers and counts datetimes in ticks).
    """
    try:
        v = np.asarray(values)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise InvalidVectorError(f"cannot read vectors as float32: {exc}") from None
    if v.dtype.kind not in "fiub" and v.dtype.name != "bfloat16":
        raise InvalidVectorError(f"cannot read vectors as float32: dtype {v.dtype}")
    return v


def float32_array(values: object, unit: bool = False) -> np.ndarray:
    """``values`` as a float32 array (no copy when it is one); see :func:`real_array`.

    A finite value past float32's range (a float64 1e39) raises :class:`InvalidVectorError`
    naming its row: converted, it is inf, which the checks after would call NaN or inf.
    ``unit`` (a metric that normalises: only directions count): wider float rows whose largest magnitude is below 2**-100
    (float32 keeps few of their digits) or past float32's range are divided by it in that type first; others convert bit for bit.
    """
    v = real_array(values)
    if v.dtype.kind != "f" or v.dtype.itemsize <= 4:
        return np.asarray(v, dtype=np.float32)
    if unit and v.ndim and v.size:
        peak = np.abs(v).max(axis=-1, keepdims=True)  # NaN compares False: such a row stays NaN for the callers' checks
        odd = ((peak < 2.0**-100) | (peak > float(np.finfo(np.float32).max))) & (peak > 0)
        with np.errstate(invalid="ignore"):  # inf / inf: NaN, refused by those checks as the inf was
            v = v / np.where(odd, peak, 1.0) if odd.any() else v
    with np.errstate(over="ignore"):
        out = np.asarray(v, dtype=np.float32)
    over = np.isinf(out) & np.isfinite(v)
    if over.any():
        row = int(np.argmax(over.reshape(-1, v.shape[-1]).any(axis=1))) if v.ndim > 1 else 0
        raise InvalidVectorError(f"vector {row} has a value beyond float32's range (+-3.4e38)")
    return out


def value_limit(dim: int) -> float:
    """The largest magnitude a vector component may have at this dimension.

    The kernels accumulate distances in float32: beyond it a squared L2 distance (up to
    ``4 * dim * limit**2``) or a dot product could overflow to inf and tie, or give NaN.
    ``sqrt(FLT_MAX / (4 dim))`` less twice the float32 sum's rounding, ``(dim + 4) 2**-24``
    relative (at the bound itself, x and -x of 1,000 dimensions were inf apart).
    """
    dim = max(int(dim), 1)
    return math.sqrt(float(np.finfo(np.float32).max) / (4 * dim * (1 + (dim + 4) * 2.0**-23)))


def within_limit(v: np.ndarray) -> np.ndarray:
    """``bool[n]``: whether each row of the 2-D array ``v`` keeps every component within
    :func:`value_limit` (False for a row with NaN)."""
    if v.shape[0] == 0 or v.shape[1] == 0:
        return np.ones(v.shape[0], bool)
    lim = value_limit(v.shape[1])
    # in float64: the limit itself overflows float16 (and NaN compares False either way)
    return (v.max(axis=1).astype(np.float64) <= lim) & (v.min(axis=1).astype(np.float64) >= -lim)


def check_limit(v: np.ndarray, given: np.ndarray | None = None, change: str = "", nonfinite: bool = False) -> None:
    """InvalidVectorError unless every component of the rows ``v`` lies within :func:`value_limit` (past it float32
    distances overflow); NaN and inf count as past it, or with ``nonfinite`` are named as such. ``given``, ``change``: see :func:`limit_error`."""
    if v.size == 0 or (float(v.max()) <= (lim := value_limit(v.shape[1])) and float(v.min()) >= -lim):  # two passes (NaN fails both)
        return
    if nonfinite and not (finite := finite_rows(v)).all():  # the rows are searched only to name one
        raise nonfinite_error(int(np.argmin(finite)))
    ok = within_limit(v)
    if not ok.all():
        raise limit_error(int(np.argmin(ok)), v.shape[1], given, change)


def limit_error(row: int, dim: int, given: np.ndarray | None = None, change: str = "") -> InvalidVectorError:
    """The error for row ``row`` of a batch with a component past :func:`value_limit`; ``given``: the rows
    as the caller gave them, which a store keeps ``change``d ("rounded to bfloat16"), said when that moves the row past it."""
    pushed = given is not None and bool(within_limit(given[row : row + 1])[0])
    return InvalidVectorError(f"vector {row} has a component beyond +-{value_limit(dim):.3g}{f' once {change} (within it as given)' if pushed else ''}: "
                              "its distances would overflow float32 (scale the vectors down)")


def finite_rows(v: np.ndarray) -> np.ndarray:
    """``bool[n]``: whether each row of the 2-d array ``v`` is free of NaN and inf.

    Checks blocks of rows, so the temporary stays near ``FINITE_BLOCK_BYTES``: one
    ``(n, dim)`` bool temporary of a few MB, freed at once, stays in the heap glibc keeps
    (the process's resident memory grows by ~128 bytes per 128-d vector inserted).
    """
    n = v.shape[0]
    step = max(1, FINITE_BLOCK_BYTES // max(int(np.prod(v.shape[1:])), 1))
    if n <= step:
        return np.isfinite(v).all(axis=1)
    out = np.empty(n, bool)
    for start in range(0, n, step):
        out[start : start + step] = np.isfinite(v[start : start + step]).all(axis=1)
    return out


@runtime_checkable
class VectorStore(Protocol):
    """What the index needs from a vector store.

    Attributes
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Rows available; NodeIds ``0 .. max_nodes - 1`` can be written.
    kind : str
        ``"float"`` (read by ``L2``/``Cosine``/``InnerProduct``) or ``"qi8"`` (by the ``*Qi8`` metrics).

    Methods
    -------
    rows()
        The kernels' view: ``F32Rows(data)``, ``F16Rows(bits)``, ``BF16Rows(bits)`` or
        ``Qi8Rows(codes, scale, zero)``, each a C-contiguous array indexed by NodeId
        (a ``np.memmap`` opened in mode ``"r+"`` or ``"c"`` qualifies).
    encode(vectors)
        Validate float32 vectors (n, dim) and convert them to the storage form,
        raising :class:`InvalidVectorError` without changing anything.
    write(node_ids, encoded)
        Store encoded vectors at ``node_ids`` (int32[n]).
    vector(node_id)
        The stored vector in the store's dtype, or ``None`` if nothing was written.
    resize(max_nodes)
        Grow to ``max_nodes`` rows.

    The built-in stores also report their memory (``nbytes``, ``bytes_per_vector``, ``memory_report()``).
    """

    dim: int
    max_nodes: int
    kind: str

    def rows(self) -> NamedTuple: ...
    def encode(self, vectors: np.ndarray) -> Any: ...
    def write(self, node_ids: np.ndarray, encoded: Any) -> None: ...
    def vector(self, node_id: int) -> np.ndarray | None: ...
    def resize(self, max_nodes: int) -> None: ...


class ColumnStore:
    """Base of the built-in stores: per-NodeId arrays ("columns") and a written mask.

    A subclass sets ``kind``, ``COLUMNS`` (``(name, fill value)`` of each column, in the
    order :meth:`split_encoded` returns an encoded batch's parts), keeps each column in
    the attribute ``name`` and implements ``rows``, ``encode``, ``split_encoded`` and
    ``vector``.
    """

    kind: str = ""
    dim: int = 0
    COLUMNS: tuple[tuple[str, Any], ...] = ()
    #: Names :meth:`memory_report` gives columns, where they differ from the column names.
    REPORT_LABELS: dict[str, str] = {}
    written: np.ndarray  # uint8[max_nodes], 1 where a vector was written
    #: Bumped after every change of the stored rows (write, resize, compaction, new columns):
    #: copies of rows (a Filter's block of allowed rows) compare it to know they are current.
    version: int = 0

    # -- columns -------------------------------------------------------------------
    @property
    def row_lock(self) -> threading.Lock:
        """The store's lock over its rows, which every write of rows holds (:meth:`write` once a batch, compaction,
        reordering, :meth:`resize`) and a pickle copies them under (:meth:`__getstate__`); take no index lock under it."""
        return self.__dict__.get("_row_lock") or self.__dict__.setdefault("_row_lock", threading.Lock())  # one lock even when two threads ask first

    def columns(self) -> dict[str, np.ndarray]:
        """The per-NodeId arrays by name (the store's own arrays, not copies), ``written`` last."""
        cols = {name: getattr(self, name) for name, _ in self.COLUMNS}
        cols["written"] = self.written
        return cols

    def set_columns(self, columns: dict[str, np.ndarray]) -> None:
        """Replace every column at once (same names; the caller checked shapes and dtypes).

        ``rows()`` never returns a mix of old and new columns (see ``COLUMNS_LOCK``).
        """
        with COLUMNS_LOCK:
            for name, _ in self.COLUMNS:
                setattr(self, name, columns[name])
            self.written = columns["written"]
            self.version += 1

    def make_rows(self) -> NamedTuple:
        """The ``*Rows`` tuple of the current columns (a subclass's; see :meth:`publish_rows`)."""
        raise NotImplementedError

    def publish_rows(self) -> NamedTuple:
        """Build ``rows()``'s tuple from the columns as they are now, cache and return it.

        A subclass's ``rows()`` returns its cached tuple while that holds the current arrays
        and calls this otherwise: the tuple is built under ``COLUMNS_LOCK``, so from columns
        that all belong to one state of the store.
        """
        with COLUMNS_LOCK:
            self._rows = rows = self.make_rows()
        return rows

    @property
    def max_nodes(self) -> int:
        return int(self.written.shape[0])

    def unsearchable_row(self, n: int, unit: bool = False) -> int:
        """The first of rows ``0 .. n - 1`` a search could not rank, or -1.

        That is a row whose values (the ones it stands for, for float16, bfloat16 and Qi8
        rows) hold NaN or inf or go beyond :func:`value_limit`, a Qi8 row whose scale is
        not > 0, and with ``unit`` (the store of a cosine index, which keeps unit vectors) a
        row whose norm is neither 0 nor 1 within the rounding of its storage type. Loaders
        check what they read with it.
        """
        step = max(1, CHECK_BLOCK_VALUES // max(int(self.dim), 1))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 are what it looks for
                v = self.decode_range(lo, hi)
            bad = ~finite_rows(v) | ~within_limit(v) | self.invalid_rows(lo, hi)
            if unit:
                norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))
                bad |= (norms > 0) & ~(np.abs(norms - 1) <= self.unit_tolerance(lo, hi))
            if bad.any():
                return lo + int(np.argmax(bad))
        return -1

    def invalid_rows(self, lo: int, hi: int) -> np.ndarray | bool:
        """Rows ``lo .. hi - 1`` whose encoding is invalid beyond their values (no store's by default)."""
        return False

    def row_bytes(self) -> int:
        """Bytes per NodeId over every column (vector, per-vector fields, written flag)."""
        return sum(int(np.prod(a.shape[1:], dtype=np.int64)) * a.itemsize for a in self.columns().values())

    # -- protocol ------------------------------------------------------------------
    def split_encoded(self, encoded: Any) -> tuple[np.ndarray, ...]:
        """Validate an encoded batch (what :meth:`encode` returns) and return one array per column."""
        raise NotImplementedError

    def write(self, node_ids: np.ndarray, encoded: Any) -> None:
        """Store encoded rows at ``node_ids``; everything is validated before anything is written."""
        parts = self.split_encoded(encoded)
        ids = np.asarray(node_ids) if isinstance(node_ids, (np.ndarray, list, tuple, range)) else None
        if ids is None or ids.dtype.kind not in "iu" and ids.size:
            # bools, floats or strings as NumPy would take them would write other rows than meant
            raise InvalidParameterError(f"node_ids must be integers (an array, list or range), got {type(node_ids).__name__}"
                                        f"{'' if ids is None else ' of ' + str(ids.dtype)}")
        if ids.shape != (parts[0].shape[0],):
            raise DimensionMismatchError(f"{ids.shape} node ids for {parts[0].shape[0]} encoded rows")
        with self.row_lock:  # the capacity checked against the arrays written: a resize waits
            bad = (ids < 0) | (ids >= self.max_nodes)  # in the given type: a uint64 past int64 named as given, not wrapped
            if bad.any():
                raise CapacityError(f"store has {self.max_nodes} rows; NodeId {int(ids[np.argmax(bad)])} does not fit")
            ids = ids.astype(np.int64, copy=False)
            if ids.size > 1 and not (np.diff(ids) > 0).all() and np.unique(ids).size != ids.size:
                raise InvalidParameterError("node_ids repeat a NodeId: which row would it keep?")
            with held_interrupts():  # every column or none: a Qi8 row of one vector's codes and another's scale answers wrongly
                for (name, _), part in zip(self.COLUMNS, parts):
                    getattr(self, name)[ids] = part
                self.written[ids] = 1
                self.version += 1  # after the rows: a copy taken at the old version is never kept as current

    def resize(self, max_nodes: int) -> None:
        """Grow to (or shrink down to the written rows of) ``max_nodes`` rows.

        The rows are copied into new arrays under :attr:`row_lock` (a write meanwhile waits and lands in
        them); searches keep reading the old ones with the index's graph arrays, so an index with room for
        more NodeIds than the old rows must get new arrays before it inserts past them: ``Hnsw.resize``
        after this, or ``insert(..., grow=True)`` instead.
        """
        check_int("max_nodes", max_nodes, 1, MAX_NODES)
        max_nodes = int(max_nodes)
        check_allocation(max_nodes * self.row_bytes(), f"a store of {max_nodes:,} vectors")
        with self.row_lock:
            if max_nodes < self.max_nodes and self.written[max_nodes:].any():
                raise CapacityError("cannot shrink the store below its written rows")
            n, cols = min(max_nodes, self.max_nodes), {}
            for name, fill in (*self.COLUMNS, ("written", 0)):
                arr = getattr(self, name)
                cols[name] = hugepages.full((max_nodes,) + arr.shape[1:], fill, arr.dtype)
                cols[name][:n] = arr[:n]
            self.set_columns(cols)

    def compact_rows(self, keep: np.ndarray) -> None:
        """Move rows ``keep`` (ascending NodeIds) to the front, in place; clear the rest."""
        k = keep.shape[0]
        with self.row_lock:
            for name, fill in (*self.COLUMNS, ("written", 0)):
                arr = getattr(self, name)
                arr[:k] = arr[keep]
                arr[k:] = fill
            self.version += 1

    def permute_rows(self, order: np.ndarray) -> None:
        """Move row ``order[i]`` to row ``i`` for ``i < len(order)``, in place (rows past it stay)."""
        n = order.shape[0]
        with self.row_lock:
            for name, _ in (*self.COLUMNS, ("written", 0)):
                arr = getattr(self, name)
                arr[:n] = arr[order]
            self.version += 1  # copies of rows taken before (a Filter's block) go stale

    # -- pickling ------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Pickle through :meth:`columns`: rows up to the last written one, and the capacity.

        The unpickled store owns new writeable arrays of the same capacity (a memory-mapped
        store unpickles into memory), so pickle, ``copy.deepcopy`` and joblib work. The rows are copied under
        :attr:`row_lock` (the pickler reads them after the return): each is wholly as before or as after any write.
        """
        with self.row_lock:
            with COLUMNS_LOCK:  # columns and attributes of one moment: enable_walk_copy adds a column and names it under it
                cols, state = self.columns(), dict(self.__dict__)  # a copy (one C call): inserts may add attributes meanwhile
            written = np.flatnonzero(cols["written"])
            used = min(int(written[-1]) + 1 if written.shape[0] else 0, *(a.shape[0] for a in cols.values()))
            copies = {name: np.array(a[:used]) for name, a in cols.items()}
        attrs = {k: v for k, v in state.items() if k not in cols and k not in ("_rows", "_row_lock")}  # a cache, a lock
        return {"attrs": attrs, "max_nodes": int(cols["written"].shape[0]), "columns": copies}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`__getstate__` returned, checked as a load checks a file (a
        pickle carries no checksum): the columns' dtypes and shapes against a one-row store
        of the pickled kind (:meth:`pickle_template`), written flags 0 or 1 and rows a search
        can rank. Anything else raises IndexFormatError (a ValueError) naming it."""
        where = f"pickled {type(self).__name__}"
        try:
            attrs, n, parts = dict(state["attrs"]), state["max_nodes"], dict(state["columns"])
            template = self.pickle_template(attrs)
        except (HnswError, KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where}: {type(exc).__name__}: {exc}") from None
        if type(n) is not int or not 1 <= n <= MAX_NODES:
            raise IndexFormatError(f"{where}: max_nodes {n!r} is not an int in [1, {MAX_NODES}]")
        check_allocation(n * template.row_bytes(), f"a store of {n:,} vectors")
        specs, fills = template.columns(), dict((*template.COLUMNS, ("written", 0)))
        if set(parts) != set(specs):
            raise IndexFormatError(f"{where}: columns {sorted(parts)}, expected {sorted(specs)}")
        used = None
        cols = {}
        for name, ref in specs.items():
            part = parts[name]
            if (not isinstance(part, np.ndarray) or part.dtype != ref.dtype or part.shape[1:] != ref.shape[1:]
                    or part.shape[0] > n or (used is not None and part.shape[0] != used)):
                got = f"{part.dtype}{list(part.shape)}" if isinstance(part, np.ndarray) else type(part).__name__
                raise IndexFormatError(f"{where}: column {name} is {got}, expected {ref.dtype} rows of shape {list(ref.shape[1:])}")
            used = part.shape[0]
            cols[name] = full = np.full((n,) + part.shape[1:], fills[name], part.dtype)
            full[:used] = part
        if used and cols["written"][:used].max() > 1:
            raise IndexFormatError(f"{where}: written flags hold values other than 0 and 1")
        # the template's fields (dim, dtype, walk copy...), never arbitrary pickled attributes
        self.__dict__.update({k: v for k, v in template.__dict__.items() if k not in specs and k not in ("_rows", "_row_lock")})
        self.set_columns(cols)
        try:
            bad = self.unsearchable_row(used or 0)
        except InvalidVectorError as exc:  # a Qi8 scale that is not > 0
            raise IndexFormatError(f"{where}: {exc}") from None
        if bad < 0:
            bad = self.pickled_rows_mismatch(used or 0)
        if bad >= 0:
            raise IndexFormatError(f"{where}: vector {bad} cannot be searched (NaN or inf, a Qi8 scale that is not > 0, "
                                   "or a walk copy that differs from the vectors)")

    def pickle_template(self, attrs: dict[str, Any]) -> "ColumnStore":
        """A one-row store of the kind the pickled attributes ``attrs`` describe."""
        raise NotImplementedError

    def pickled_rows_mismatch(self, n: int) -> int:
        """The first of rows ``0 .. n - 1`` whose columns disagree with each other, or -1."""
        return -1

    # -- reporting -----------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held by every column, the written mask included."""
        return int(sum(a.nbytes for a in self.columns().values()))

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of one stored vector with its per-vector fields (not the written flag)."""
        return self.row_bytes() - self.written.itemsize

    def memory_report(self) -> dict[str, int]:
        """Bytes by column, ``total`` and ``per_vector``."""
        parts = {self.REPORT_LABELS.get(name, name): int(a.nbytes) for name, a in self.columns().items()}
        return {**parts, "total": self.nbytes, "per_vector": self.bytes_per_vector}


def decode_rows(store: Any, node_ids: np.ndarray) -> np.ndarray:
    """float32 ``(n, dim)`` vectors of ``node_ids`` as ``store`` holds them.

    A store with a ``decode(node_ids)`` method (the built-in ones) decodes in one step;
    any other :class:`VectorStore` is read row by row through ``vector()`` (a ``Qi8`` row
    is dequantized).
    """
    decode = getattr(store, "decode", None)
    if decode is not None:
        return decode(node_ids)
    out = np.zeros((node_ids.shape[0], store.dim), np.float32)
    for i, nid in enumerate(node_ids.tolist()):
        row = store.vector(nid)
        if row is not None:
            row = row.dequantize() if callable(getattr(row, "dequantize", None)) else row
            out[i] = np.asarray(row, np.float32)[: store.dim]
    return out
