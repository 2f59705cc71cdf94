"""The float vector store: float32, float16 or bfloat16 vectors keyed by NodeId.

A float32 store may keep a float16 copy for the graph walk (``walk_copy=True``): searches
and inserts read half the bytes per row, answers carry the float32 distances.

A ``np.memmap`` wrapped with :meth:`InMemoryVectorStore.from_array` is a store too (no copy).
The protocol every store follows is :class:`~hnsw_numba.core.store_base.VectorStore`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..kernels.layout import BF16Rows, F16Rows, F32Rows, WalkRows
from ..kernels.refine import MERGED_MAX
from .config import MAX_DIM, MAX_NODES, check_int
from .errors import DimensionMismatchError, InvalidParameterError, InvalidVectorError, nonfinite_error
from . import hugepages
from .limits import check_allocation
from .store_base import COLUMNS_LOCK, ColumnStore, VectorStore, check_limit, finite_rows, float32_array, value_limit
from .validate import check_flag, refuse_masked

__all__ = ["VectorStore", "InMemoryVectorStore", "FLOAT_DTYPES", "resolve_float_dtype", "storage_dtype", "ml_dtypes", "HALF_LIMIT", "UNIT_TOLERANCE",
           "fits_float16", "float16_resolves", "HALF_RESOLUTION", "RESOLVE_MIN", "UNRESOLVED"]

#: How far from 1 the norm of a stored cosine row may be: rounding a unit float32 vector to
#: float16 / bfloat16 moves its norm by at most about 2**-11 / 2**-8.
UNIT_TOLERANCE = {"float32": 1e-3, "float16": 2e-3, "bfloat16": 1e-2}
#: A float32 value rounds to a finite float16 iff its magnitude is below this: float16's
#: largest value is 65504, and 65520, half-way to the next step, rounds (to even) to inf.
HALF_LIMIT = 65520.0


def fits_float16(values: np.ndarray) -> bool:
    """Whether every float32 value is finite and rounds to a finite float16.

    Two reductions: a check by conversion costs as much as the copy itself (20,000 x 384:
    31 ms against 8), and NaN fails both comparisons.
    """
    return values.size == 0 or bool(values.max() < HALF_LIMIT and values.min() > -HALF_LIMIT)


#: How far float16 rounding may move a row, as a share of the distance to its nearest
#: neighbour in a sample, for a float16 walk to keep float32's recall. 3,000 rows at 8, 32
#: and 128 dimensions, recall@10 at ef 64 against the float32 walk: equal up to a share of
#: 0.035 (normal data, offsets of 40 with spreads down to 0.3, scales down to 1e-6), 0.2-3 %
#: lower at 0.08-0.19, 6-93 % lower from 0.25 (40 +- 0.03, 1000 +- 1, 0 +- 1e-9). The
#: sample's neighbours lie farther apart than the whole set's, hence the margin.
HALF_RESOLUTION = 0.02
#: A row that float16 rounding moves by more than this share of its distance to another row
#: is merged with it (recall falls from a share of 0.25, above); a large group of merged rows
#: is a region no float16 walk can search (a tenth of the rows at 100 +- 0.002, 8-d: recall@10
#: 0.045 there, the median rule above passing).
HALF_COLLAPSE = 0.25
#: Merged rows a group may hold before it is refused: copies tie, and a walk copy re-scores a
#: whole group after its best k - 1 rows (``kernels.refine.refine_count``) on the float32 rows
#: (groups of 4-20 near copies of unit vectors: recall as float32's); 25-31 rows at 0.002
#: around spread centres found 0.82-0.90 of their top-10 at any ef, 120 rows 0.157.
HALF_GROUP = MERGED_MAX + 1
#: At most this many sample rows with a merged sample neighbour have their group counted,
#: over at most ``GROUP_ROWS`` evenly spaced rows (the count scaled up to all of them).
GROUP_SEEDS = 64
GROUP_ROWS = 65_536
#: Rows of the sample :func:`float16_resolves` compares (evenly spaced).
RESOLVE_SAMPLE = 512
#: A walk-copy store checks writes of at least this many rows with it, and a copy made of a
#: store's rows from this many written rows: fewer say little, and a check costs a small write 7-12 ms.
RESOLVE_MIN = 256
#: Why a walk copy refuses rows :func:`float16_resolves` rejects.
UNRESOLVED = ("the float16 walk copy cannot tell these vectors apart (rounding moves rows by more than "
              f"{HALF_RESOLUTION:.0%} of the distance to their nearest neighbours, or a group of {HALF_GROUP} rows or more "
              f"by more than {HALF_COLLAPSE:.0%})")


def float16_resolves(rows: np.ndarray, ids: np.ndarray | None = None, held: tuple[np.ndarray, np.ndarray] | None = None) -> bool:
    """Whether float16 keeps the float32 ``rows`` (those at ``ids``, when given) apart: the
    median rounding error of a row is at most ``HALF_RESOLUTION`` of the median distance to
    its nearest other sample row, and no sample row that float16 merges with another sample
    row (within ``HALF_COLLAPSE`` of its error) is merged with ``HALF_GROUP`` rows or more
    (a tight group among spread rows: the median alone passed it), counted over the rows
    and, with ``held`` (a store's ``(data, written)``), its written rows too (a group split
    over writes; a stored row equal to one of ``rows`` is the row rewritten, counted once).
    A group with fewer than two rows in the sample goes unseen. Rows closer than float16's
    resolution come out equal, and a walk over them sees ties everywhere (recall 0.09 at
    40 +- 0.01, 8-d). 512 rows: 7 ms at 128 dimensions, 12 at 384, 60 at 1,536.
    """
    if (n := rows.shape[0] if ids is None else ids.shape[0]) < 2:
        return True
    # distinct rows spread over every row: exact duplicates are equal in float32 already (their
    # zero distances as nearest neighbours refused 300 rows stored twice)
    pick = np.unique(np.linspace(0, n - 1, min(n, RESOLVE_SAMPLE)).astype(np.int64))
    s = np.unique(rows[pick if ids is None else ids[pick]], axis=0).astype(np.float64)
    if s.shape[0] < 2:
        return True
    with np.errstate(over="ignore"):  # a row beyond float16 errs by inf: it does not resolve
        err = np.sqrt(((s - s.astype(np.float16).astype(np.float64)) ** 2).sum(1))
    c = (s - s.mean(0)).astype(np.float32)  # centred: an offset does not cancel in the Gram matrix
    sq = (c.astype(np.float64) ** 2).sum(1)
    d2 = sq[:, None] + sq[None] - 2.0 * (c @ c.T)
    np.fill_diagonal(d2, np.inf)
    nn = np.argmin(d2, axis=1)
    near = np.sqrt(((s - s[nn]) ** 2).sum(1))  # the pair the Gram matrix found, measured exactly
    if not np.median(err) <= HALF_RESOLUTION * np.median(near):
        return False
    # sample rows merged with another sample row: their groups are counted over the rows
    radius2 = (err / HALF_COLLAPSE) ** 2
    seeds = np.flatnonzero((np.maximum(d2, 0.0) < radius2[:, None]).any(1))[:GROUP_SEEDS]
    if seeds.shape[0] == 0:
        return True
    written: set[bytes] = set()  # the write's rows in a group
    counts = _group_counts(rows, ids, s[seeds], radius2[seeds], written)
    if held is not None and counts.max() < HALF_GROUP:  # a write's group: the store may hold the rest
        counts += _group_counts(held[0], np.flatnonzero(held[1][: held[0].shape[0]]), s[seeds], radius2[seeds], written, True)
    return bool(counts.max() < HALF_GROUP)


def _group_counts(rows: np.ndarray, ids: np.ndarray | None, seeds: np.ndarray, radius2: np.ndarray, seen: set[bytes],
                  skip: bool = False) -> np.ndarray:
    """Rows of ``rows`` (those at ``ids``) within ``sqrt(radius2)`` of each of ``seeds``
    (float64), over at most ``GROUP_ROWS`` evenly spaced rows scaled up; distances in float64
    about the seeds' mean (an offset cancels exactly, so the tiny distances of a merged group
    survive). Rows counted add their bytes to ``seen``; with ``skip`` rows found there are not counted."""
    n = rows.shape[0] if ids is None else ids.shape[0]
    step = max(1, -(-n // GROUP_ROWS))
    mean = seeds.mean(0)
    f = seeds - mean
    fsq = (f * f).sum(1)
    counts = np.zeros(seeds.shape[0], np.int64)
    for a in range(0, n, 4096 * step):
        at = slice(a, a + 4096 * step, step)
        raw = rows[at] if ids is None else rows[ids[at]]
        x = raw.astype(np.float64) - mean
        d2 = (x * x).sum(1)[:, None] + fsq[None] - 2.0 * (x @ f.T)
        inside = d2 < radius2[None]
        for r in np.flatnonzero(inside.any(1)).tolist():  # a group's rows: few
            inside[r] &= not skip or raw[r].tobytes() not in seen
            seen.update(() if skip else (raw[r].tobytes(),))
        counts += inside.sum(0)
    return counts * step


def ml_dtypes() -> Any:
    """The ``ml_dtypes`` module, imported on first use: it takes ~0.1 s to import and only
    bfloat16 stores need it."""
    import ml_dtypes

    return ml_dtypes


class _FloatDtypes(Mapping):
    """Name -> dtype of the accepted float store dtypes; bfloat16's entry imports ml_dtypes
    when first read, so a float32 index never loads it."""

    _names = ("float32", "float16", "bfloat16")

    def __getitem__(self, name: str) -> np.dtype:
        if name == "float32":
            return np.dtype(np.float32)
        if name == "float16":
            return np.dtype(np.float16)
        if name == "bfloat16":
            return np.dtype(ml_dtypes().bfloat16)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


#: Accepted dtypes of float stores, by name (a read-only mapping).
FLOAT_DTYPES: Mapping[str, np.dtype] = _FloatDtypes()


def resolve_float_dtype(dtype: Any) -> np.dtype:
    """Map ``np.float32`` / ``"float16"`` / ``ml_dtypes.bfloat16`` ... to a supported dtype."""
    if isinstance(dtype, str) and dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is not None:
        if dt == np.float32 or dt == np.float16:
            return dt
        # a bfloat16 dtype object exists only once ml_dtypes is imported (by the caller)
        if dt.name == "bfloat16" and dt == FLOAT_DTYPES["bfloat16"]:
            return FLOAT_DTYPES["bfloat16"]
    raise InvalidParameterError(
        f"unsupported store dtype {dtype!r}; expected one of {sorted(FLOAT_DTYPES)}"
    )


def _check_walk_copy(walk_copy: Any, dtype: np.dtype) -> bool:
    if check_flag("walk_copy", walk_copy) and dtype != np.float32:
        raise InvalidParameterError(f"a walk copy serves float32 stores only, not {dtype.name}")
    return bool(walk_copy)


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """The array dtype a float store keeps: float32, or the uint16 bits of float16 / bfloat16."""
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.uint16)


class InMemoryVectorStore(ColumnStore):
    """Vectors in one NumPy array: float32, float16 or bfloat16 (kept as uint16 bits).

    Parameters
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Number of rows (NodeIds) allocated.
    dtype : numpy dtype or str
        ``np.float32`` (default), ``np.float16`` or ``ml_dtypes.bfloat16``; the strings
        ``"float32"``, ``"float16"``, ``"bfloat16"`` work too. Vectors are converted on
        write (round to nearest even); distances are computed in float32.
    walk_copy : bool
        float32 stores only: also keep every vector as float16 (half a row more memory),
        which the graph walks of searches and inserts read, so each distance of a walk
        reads half the bytes; the answers are re-scored on the float32 vectors, and exact
        and filtered searches read only those. Vectors must then fit float16
        (``|x| <= 65504``). See :meth:`enable_walk_copy`.
    """

    kind = "float"
    COLUMNS = (("data", 0),)
    REPORT_LABELS = {"data": "vectors"}
    _rows: NamedTuple | None = None  # rows() of the current arrays, made on first use

    walk_copy: bool = False

    def __init__(self, dim: int, max_nodes: int, dtype: Any = np.float32, walk_copy: bool = False):
        check_int("dim", dim, 1, MAX_DIM)
        check_int("max_nodes", max_nodes, 1, MAX_NODES)
        self.dtype = resolve_float_dtype(dtype)
        copy = _check_walk_copy(walk_copy, self.dtype)
        self.dim = int(dim)
        storage = storage_dtype(self.dtype)
        per_row = self.dim * (storage.itemsize + (2 if copy else 0))
        check_allocation(int(max_nodes) * per_row, f"a store of {max_nodes:,} x {dim} vectors")
        self.data = hugepages.zeros((max(int(max_nodes), 1), self.dim), storage)  # the walks' rows
        self.written = np.zeros(self.data.shape[0], np.uint8)
        if copy:
            self._add_walk(hugepages.zeros(self.data.shape, np.uint16))

    @classmethod
    def from_array(cls, data: np.ndarray, dtype: Any = np.float32, walk_copy: bool = False, check: bool = True) -> "InMemoryVectorStore":
        """Wrap an existing C-contiguous (n, dim) array without copying (e.g. ``np.memmap``).

        The store writes into it: ``set``, inserts and ``compact`` (which moves rows to the
        front) change the array, and the file of a memmap opened ``'r+'`` (``'c'`` keeps them in memory),
        until a resize (growth) copies the rows into new arrays in memory: save the index then.

        For float16 / bfloat16 pass the uint16 bit pattern (``arr.view(np.uint16)``). Every
        row counts as written. ``walk_copy``: as for the constructor (the copy is made in
        memory; :class:`InvalidVectorError` if a row does not fit float16). ``check``: refuse
        rows with NaN or inf (:class:`InvalidVectorError`; one pass over the array); a caller
        that checks them itself passes False.
        """
        self = cls.__new__(cls)
        self.dtype = resolve_float_dtype(dtype)
        copy = _check_walk_copy(walk_copy, self.dtype)
        storage = storage_dtype(self.dtype)
        arr = np.asarray(refuse_masked(data, "data"))  # a memmap becomes a plain ndarray view (one Numba type)
        if arr.ndim != 2 or arr.dtype != storage or not arr.flags.c_contiguous:
            raise InvalidParameterError(
                f"expected a C-contiguous 2-D {np.dtype(storage)} array, got "
                f"{arr.dtype}{list(arr.shape)}"
            )
        if not arr.flags.writeable:
            raise InvalidParameterError("the array must be writeable (open a memmap with mode 'r+' or 'c')")
        self.dim = int(arr.shape[1])
        self.data = arr
        self.written = np.ones(arr.shape[0], np.uint8)
        bad = self.unsearchable_row(arr.shape[0]) if check_flag("check", check) else -1
        if bad >= 0:
            raise InvalidVectorError(f"vector {bad} holds NaN or inf or a component beyond +-{value_limit(self.dim):.3g}: its distances would overflow float32")
        if copy:
            self.enable_walk_copy()
        return self

    def enable_walk_copy(self, strict: bool = True) -> bool:
        """Keep a float16 copy of every vector for the graph walks from now on (float32 stores).

        The copy is made from the stored rows; :class:`InvalidVectorError` (and nothing
        changes) if a row does not fit float16, or if float16 cannot keep the written rows
        apart (:func:`float16_resolves`, from ``RESOLVE_MIN`` written rows): with ``strict=False``
        such rows leave the store without the copy and the call returns False. Run it before
        searches start or under no mutation: a search already running keeps the rows it started with.
        """
        _check_walk_copy(True, self.dtype)
        strict = check_flag("strict", strict)
        if self.walk_copy:
            return True
        check_allocation(self.data.shape[0] * self.dim * 2, f"a float16 copy of {self.data.shape[0]:,} x {self.dim} vectors")
        half = self._half(self.data)
        if not self.written_resolve(self.data.shape[0]):
            if strict:
                raise InvalidVectorError(f"{UNRESOLVED}: keep the store without it (enable_walk_copy(strict=False) returns False instead)")
            return False
        self._add_walk(half)
        return True

    def written_resolve(self, n: int) -> bool:
        """Whether float16 keeps the written rows among the first ``n`` apart
        (:func:`float16_resolves`); True for fewer than ``RESOLVE_MIN`` written rows."""
        ids = np.flatnonzero(self.written[:n])
        return ids.shape[0] < RESOLVE_MIN or float16_resolves(self.data, ids)

    def _add_walk(self, walk: np.ndarray) -> None:
        with COLUMNS_LOCK:  # rows() builds WalkRows only from a walk copy of the data's shape
            self.walk = walk
            self.walk_copy = True
            self.COLUMNS = (("data", 0), ("walk", 0))
            self.REPORT_LABELS = {"data": "vectors", "walk": "walk copy"}
            self.version += 1

    @staticmethod
    def _half_range(rows: np.ndarray) -> None:
        """InvalidVectorError unless every value of the float32 ``rows`` is finite and rounds
        to a finite float16 (:func:`fits_float16`; the first row that does not is named)."""
        if not fits_float16(rows):
            fits = (rows.max(axis=1) < HALF_LIMIT) & (rows.min(axis=1) > -HALF_LIMIT)
            i = int(np.argmin(fits))
            if not np.isfinite(rows[i]).all():
                raise nonfinite_error(i)
            raise InvalidVectorError(f"vector {i} has values outside the range of the float16 walk copy (max 65504)")

    @staticmethod
    def _half(rows: np.ndarray) -> np.ndarray:
        """float16 bits of float32 rows; InvalidVectorError (see :meth:`_half_range`) first."""
        InMemoryVectorStore._half_range(rows)
        half = hugepages.zeros(rows.shape, np.float16)
        half[...] = rows  # converted in place: no temporary
        return half.view(np.uint16)

    # -- pickling ------------------------------------------------------------------
    def pickle_template(self, attrs: dict[str, Any]) -> "InMemoryVectorStore":
        walk = attrs.get("walk_copy", False)
        if type(walk) is not bool:
            raise InvalidParameterError(f"walk_copy must be a bool, got {walk!r}")
        return InMemoryVectorStore(attrs["dim"], 1, attrs["dtype"], walk_copy=walk)

    def pickled_rows_mismatch(self, n: int) -> int:
        """A walk copy is the float16 rounding of the vectors: the first row where it is not."""
        if not self.walk_copy or not n:
            return -1
        with np.errstate(over="ignore"):  # a row beyond float16 never had a walk copy: it differs
            half = self.data[:n].astype(np.float16).view(np.uint16)
        differ = (half != self.walk[:n]).any(axis=1)
        return int(differ.argmax()) if differ.any() else -1

    # -- protocol ------------------------------------------------------------------
    def rows(self) -> NamedTuple:
        # the same tuple while the array is the same: the single-query path compares
        # it by identity to know its cached validation still holds
        cached = self._rows
        if cached is not None and cached[-1] is self.data and cached[0] is (self.walk if self.walk_copy else self.data):
            return cached
        return self.publish_rows()

    def make_rows(self) -> NamedTuple:
        """``WalkRows`` (walk copy), else ``F32Rows`` / ``F16Rows`` / ``BF16Rows`` of the current arrays."""
        if self.walk_copy:
            return WalkRows(self.walk, self.data)
        if self.dtype == np.float32:
            return F32Rows(self.data)
        if self.dtype == np.float16:
            return F16Rows(self.data)
        return BF16Rows(self.data)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Validate vectors (n, dim) and convert them to the storage form.

        Any real input converts to float32 first, then (f16 / bf16) rounds to nearest even;
        the result is the uint16 bit pattern for the half-width types. NaN / inf, values
        that overflow the store's type (|x| > 65504 for float16) and rows a write refuses as
        stored (:meth:`split_encoded`: past value_limit once rounded) raise :class:`InvalidVectorError`.
        """
        v = float32_array(refuse_masked(vectors, "vectors"))
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        if self.dtype == np.float32 and not self.walk_copy:
            return self.split_encoded(v)[0]  # the write's checks: what encode returns, a write takes
        finite = finite_rows(v)
        if not finite.all():
            raise nonfinite_error(int(np.argmin(finite)))
        if self.dtype == np.float32:  # checked here (as a write checks it), before the index allocates anything
            self._half_range(v)
            if v.shape[0] >= RESOLVE_MIN and not float16_resolves(v, held=(self.data, self.written)):  # groups: with the stored rows
                raise InvalidVectorError(f"{UNRESOLVED}: store them without it (InMemoryVectorStore(walk_copy=False); hn.Index(dtype='f32'))")
            return v
        with np.errstate(over="ignore"):
            conv = v.astype(self.dtype)
        fits = np.isfinite(conv.astype(np.float32)).all(axis=1)
        if not fits.all():
            raise InvalidVectorError(
                f"vector {int(np.argmin(fits))} has values outside the range of {self.dtype.name} "
                f"(max {float(ml_dtypes().finfo(self.dtype).max):g})"  # np.finfo does not know bfloat16
            )
        return self.split_encoded(conv.view(np.uint16), v)[0]

    def split_encoded(self, encoded: Any, given: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Check an encoded batch (what :meth:`encode` returns): ``(data,)``, or ``(data, walk)`` with
        the float16 copy. Rows with NaN or inf or past value_limit (as stored, for float16 and bfloat16)
        raise :class:`InvalidVectorError`: a search could not rank them (``given``: the rows before rounding)."""
        enc = np.asarray(encoded)
        if enc.dtype != self.data.dtype or enc.ndim != 2 or enc.shape[1] != self.dim:
            raise InvalidVectorError(
                f"encoded rows must be {self.data.dtype}[n, {self.dim}] (from encode()), got {enc.dtype}{list(enc.shape)}"
            )
        if self.walk_copy:
            return enc, self._half(enc)
        values = enc if self.dtype == np.float32 else enc.view(self.dtype)
        check_limit(values, given, f"rounded to {self.dtype.name}", nonfinite=True)
        return (enc,)

    def decode_range(self, lo: int, hi: int) -> np.ndarray:
        """float32 ``(hi - lo, dim)`` values of rows ``lo .. hi - 1`` (a view for float32)."""
        rows = self.data[lo:hi]
        return rows if self.dtype == np.float32 else rows.view(self.dtype).astype(np.float32)

    def unit_tolerance(self, lo: int, hi: int) -> float:
        """How far from 1 a unit row's norm may be in this storage type (see :data:`UNIT_TOLERANCE`)."""
        return UNIT_TOLERANCE[self.dtype.name]

    def decode(self, node_ids: np.ndarray) -> np.ndarray:
        """float32 ``(n, dim)`` copies of rows ``node_ids`` (float16 / bfloat16 widened exactly)."""
        rows = self.data[np.asarray(node_ids, np.int64)]
        return rows if self.dtype == np.float32 else rows.view(self.dtype).astype(np.float32)

    def vector(self, node_id: int) -> np.ndarray | None:
        i = int(node_id)
        if not 0 <= i < self.max_nodes or not self.written[i]:
            return None
        row = self.data[i].copy()
        return row if self.dtype == np.float32 else row.view(self.dtype)

    def __repr__(self) -> str:
        copy = ", walk_copy=True" if self.walk_copy else ""
        return f"InMemoryVectorStore(dim={self.dim}, max_nodes={self.max_nodes}, dtype={self.dtype.name}{copy})"
