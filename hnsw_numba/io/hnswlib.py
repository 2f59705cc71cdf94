"""Open index files written by the C++ hnswlib (``save_index``), read-only and zero-copy.

``load_hnswlib(metric, dim, source)`` maps the file (or views bytes; copies a buffer its owner can write): ``(Hnsw, store)`` views it:

* the vectors: the kernels get a C-contiguous ``float32`` view with one row per element
  whose row stride is hnswlib's element size S (see :class:`HnswlibVectorStore`);
* level 0: a strided ``int32[N, maxM0 + 1]`` view. hnswlib's ``[count|flags, ids...]``
  block is exactly our ``links0`` row (the kernels read the count as ``w & COUNT_MASK``, so
  the delete mark in bit 16 is ignored there); the deleted flags are a strided ``uint8``
  view of that byte;
* the upper levels: the file's record region viewed as ``int32``. Every
  ``[count, maxM ids]`` block is our block layout, so only ``upper_start`` is computed.

Read-only arrays are their own Numba types, so the kernels a mapped index uses compile
once more (once per environment: the disk cache keeps them). The level-0 view costs
nothing on top (its layout ``A`` only adds to that same specialisation, and measured as
fast as a contiguous copy), so level 0 is not copied. Copied are ``levels`` (1 byte per
element), ``upper_start`` (8) and the label look-up table (12; 8 for increasing labels;
none for hnswlib's default labels ``0 .. N-1``). Everything is validated with vectorised
NumPy (:mod:`hnsw_numba.io.hnswlib_format`) before a kernel sees it; a bad file raises
:class:`~hnsw_numba.core.errors.LegacyFormatError`.

``materialize`` (or ``load_hnswlib(..., writable=True)``, which reads the file rather than
mapping it) copies the index into ordinary in-memory arrays: the migration path to an index
that supports every operation and :func:`hnsw_numba.save`.

A mapped file must not be truncated or rewritten while the index is in use (as with any
memory map, the process would read the new bytes, or get SIGBUS past the new end): C++
hnswlib's ``saveIndex`` rewrites its file in place, so a file it may be saving is loaded
with ``writable=True`` (or ``mapped=False``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Hashable, Iterable, NamedTuple

import numpy as np

from .hnswlib_format import (
    HEADER_BYTES,
    Header,
    check_entry,
    check_flag_bits,
    check_labels,
    check_finite,
    graph_check,
    parse_header,
    walk_upper,
)
from ..core.config import MAX_DIM, HnswConfig, check_int
from ..core.errors import InvalidParameterError, LegacyFormatError, ReadOnlyIndexError, persist_errors
from ..core.index import Hnsw
from ..core.metrics import Metric, metric_from_name
from ..core.validate import check_flag
from ..kernels.layout import (
    H_DELETED,
    H_ENTRY,
    H_M,
    H_MAX_LEVEL,
    H_NODES,
    H_UPPER_USED,
    HEADER_SIZE,
    F32Rows,
    GraphArrays,
)
from ..core.materialize import materialize
from .hnswlib_source import open_source
from .localfiles import clean_leftovers
from .places import through_link

__all__ = ["load_hnswlib", "materialize", "HnswlibVectorStore", "HnswlibKeyMap"]

_I64_MAX = 2**63 - 1
_READ_ONLY = "this index is a read-only view of an hnswlib file; call materialize() for a writable copy"


# ---------------------------------------------------------------------------- store
class HnswlibVectorStore:
    """Read-only vector store over the vectors inside an hnswlib file.

    ``vectors`` is the honest strided view ``float32[rows, dim]`` (row stride S, hnswlib's
    ``size_data_per_element_``). The kernels get ``rows().data``, a C-contiguous
    ``float32[rows, S / 4]`` view of the same bytes whose row i *starts* at vector i and
    runs on over the label and the next element's links: the distance loops stop at the
    query's length, so they read only the vector, and a contiguous row type lets LLVM
    vectorise them (a layout-``A`` view measured 3-5x slower searches).

    Attributes
    ----------
    header : Header
        The file's header fields.
    source : str
        Where the file came from (path or buffer type), for messages.
    """

    kind = "float"
    dtype = np.dtype(np.float32)

    def __init__(self, wide: np.ndarray, count: int, header: Header, source: str):
        self._rows = F32Rows(wide)
        self._count = count
        self.dim = header.dim
        self.vectors = wide[:, : self.dim]
        self.header = header
        self.source = source

    @property
    def max_nodes(self) -> int:
        return int(self._rows.data.shape[0])

    @property
    def source_capacity(self) -> int:
        """hnswlib's ``max_elements``: the default capacity of a writable copy (:func:`materialize`)."""
        return int(self.header.max_elements)

    def rows(self) -> F32Rows:
        return self._rows

    def vector(self, node_id: int) -> np.ndarray | None:
        """A copy of the stored vector (cosine files hold it normalised), or None."""
        i = int(node_id)
        return self.vectors[i].copy() if 0 <= i < self._count else None

    def encode(self, vectors: np.ndarray) -> Any:
        raise ReadOnlyIndexError(_READ_ONLY)

    def write(self, node_ids: np.ndarray, encoded: Any) -> None:
        raise ReadOnlyIndexError(_READ_ONLY)

    def resize(self, max_nodes: int) -> None:
        raise ReadOnlyIndexError(_READ_ONLY)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the store: 0, the vectors stay in the file."""
        return 0

    @property
    def bytes_per_vector(self) -> int:
        return 4 * self.dim

    def __repr__(self) -> str:
        return f"HnswlibVectorStore(dim={self.dim}, count={self._count}, source={self.source!r})"


# ---------------------------------------------------------------------------- keys
class HnswlibKeyMap:
    """Label <-> internal id over the labels in the file (read-only :class:`KeyMap` stand-in).

    ``node_keys`` is a strided view of the labels (int64 when every label fits, else
    uint64). Look-ups need no table for labels ``0 .. N-1`` in id order (hnswlib's default
    on one thread), a 4-byte id per label for any other order of ``0 .. N-1`` (e.g. a
    multi-threaded build), and otherwise binary-search a sorted copy (8 bytes, plus 4
    for the permutation unless the labels increase with the id).
    """

    def __init__(self, labels: np.ndarray, perm: np.ndarray, sorted_labels: np.ndarray):
        self._n = n = labels.shape[0]
        self.is_int = bool(n == 0 or int(sorted_labels[-1]) <= _I64_MAX)
        self.node_keys = labels.view(np.int64) if self.is_int else labels
        identity = bool((np.diff(perm) == 1).all()) if n else True
        self._dense = n == 0 or (int(sorted_labels[0]) == 0 and int(sorted_labels[-1]) == n - 1)
        # dense: id = perm[label] (unique labels filling 0 .. N-1), no table when in order
        self._perm = None if identity else perm
        self._sorted = None if self._dense else sorted_labels

    renames = 0  # read-only: never renamed (the seqlock searches read)

    def __len__(self) -> int:
        return self._n

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """NodeIds (int64, -1 where absent) of uint64 ``keys``."""
        if self._n == 0:
            return np.full(keys.shape[0], -1, np.int64)
        if self._dense:
            ok = keys < np.uint64(self._n)
            ids = np.where(ok, keys, 0).astype(np.int64)
            if self._perm is not None:
                ids = self._perm[ids]
            return np.where(ok, ids, -1).astype(np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, keys), self._n - 1)
        ids = pos if self._perm is None else self._perm[pos]
        return np.where(self._sorted[pos] == keys, ids, -1).astype(np.int64)

    def get(self, key: Hashable) -> int:
        """NodeId of ``key`` or -1."""
        if type(key) is not int or not 0 <= key < 2**64:
            return -1
        return int(self._lookup(np.array([key], np.uint64))[0])

    def get_many(self, keys: Iterable[Hashable] | None, int_keys: np.ndarray | None = None) -> np.ndarray:
        """NodeIds (int64, -1 where absent) of ``keys`` or of ``int_keys`` (int64)."""
        if int_keys is not None:
            k = np.asarray(int_keys, np.int64)
            out = self._lookup(k.view(np.uint64))
            out[k < 0] = -1
            return out
        keys = list(keys)
        if all(type(k) is int and 0 <= k < 2**64 for k in keys):  # one vectorised look-up
            return self._lookup(np.array(keys, np.uint64)) if keys else np.empty(0, np.int64)
        return np.fromiter((self.get(k) for k in keys), dtype=np.int64, count=len(keys))

    def key(self, node_id: int) -> Hashable:
        return int(self.node_keys[node_id])

    def keys_for(self, node_ids: np.ndarray) -> np.ndarray:
        """Keys of a (padded) NodeId array; -1 ids become -1 (int64; an object array of ints
        where labels pass 2**63 - 1), as a native index with those int keys pads."""
        if self._n == 0:
            return np.full(node_ids.shape, -1, np.int64)
        safe = np.where(node_ids >= 0, node_ids, 0)
        out = self.node_keys[safe]
        if not self.is_int:
            out = out.astype(object)
        out[node_ids < 0] = -1
        return out

    def add(self, keys: Any, node_ids: np.ndarray, int_keys: Any) -> None:
        raise ReadOnlyIndexError(_READ_ONLY)

    def resize(self, capacity: int) -> None:
        raise ReadOnlyIndexError(_READ_ONLY)

    def nbytes(self) -> int:
        """Bytes allocated (the look-up table; the labels stay in the file)."""
        return sum(a.nbytes for a in (self._sorted, self._perm) if a is not None)


def _trim_heap() -> None:
    """Give the validation's freed temporaries back to the OS.

    glibc keeps freed multi-megabyte blocks in its heap once its mmap threshold has
    adapted upwards, which showed up as ~20 MiB of resident memory per million elements
    after a load; ``malloc_trim`` returns it. A no-op elsewhere.
    """
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _resolve_metric(metric: Any) -> Metric:
    if isinstance(metric, str):
        metric = metric_from_name(metric)
    if not isinstance(metric, Metric) or metric.store_kind != "float":
        raise InvalidParameterError(f"metric must be L2(), InnerProduct() or Cosine() (or 'l2', 'ip', 'cosine'), got {metric!r}")
    return metric


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


# ---------------------------------------------------------------------------- load
class _Parsed(NamedTuple):
    header: Header
    arrays: GraphArrays
    vectors: np.ndarray
    keymap: HnswlibKeyMap


def _parse(buf: np.ndarray, dim: int | None) -> _Parsed:
    """Validate the whole file and build the views (raises LegacyFormatError)."""
    h = parse_header(buf, dim)
    n, s = h.count, h.size_per_element
    cap = max(n, 2)  # >= 2 rows keep the views strided (layout A), as Graph.empty does
    # The kernels' vector view has rows of S bytes starting at each vector (see
    # HnswlibVectorStore), so its last row runs offsetData_ bytes past the level-0 region.
    span = cap * s + h.offset_data
    if n < 2 or buf.shape[0] < HEADER_BYTES + span:
        # tiny files (fewer upper-level bytes than that): copy level 0 into zeroed rows
        level0 = np.zeros(span, np.uint8)
        level0[: n * s] = buf[HEADER_BYTES : HEADER_BYTES + n * s]
        _readonly(level0)
    else:
        level0 = buf[HEADER_BYTES : HEADER_BYTES + span]
    words0 = level0[: cap * s].view("<u4").reshape(cap, s // 4)

    upper = buf[HEADER_BYTES + n * s :]
    w, tail = divmod(upper.shape[0], 4)
    words = upper[: 4 * w].view("<u4")
    block = 1 + h.max_m
    rec = walk_upper(words, tail, n, block)
    levels = np.full(cap, -1, np.int8)
    levels[:n] = words[rec] // (4 * block)  # <= MAX_LEVEL (checked by the walk)
    lv = levels[:n]
    nodes = np.flatnonzero(lv > 0)
    upper_start = np.full(cap, -1, np.int64)
    upper_start[nodes] = rec[nodes] + 1
    del rec
    check_entry(h, lv)

    counts = lv[nodes].astype(np.int64)
    first = np.cumsum(counts) - counts
    heads = np.repeat(upper_start[nodes], counts) + (np.arange(int(counts.sum())) - np.repeat(first, counts)) * block
    check_flag_bits(words0[:n, 0], words[heads])
    del nodes, counts, first, heads

    blocks = level0[: cap * s].reshape(cap, s)
    tombstones = blocks[:, 2]  # the delete-mark byte, 0 or 1 after flag-bits
    header = np.zeros(HEADER_SIZE, np.int64)
    header[H_ENTRY] = h.entry_point if n else -1
    header[H_MAX_LEVEL] = h.max_level if n else -1
    header[H_NODES] = n
    header[H_DELETED] = int(np.count_nonzero(tombstones[:n]))
    header[H_UPPER_USED] = w
    header[H_M] = h.max_m
    locks = np.zeros(cap, np.int32)  # never touched read-only (calloc: no resident pages)
    _readonly(levels, upper_start, header, locks)
    arrays = GraphArrays(
        levels=levels,
        links0=words0[:, : 1 + h.max_m0].view(np.int32),
        upper_start=upper_start,
        upper_links=words.view(np.int32),
        tombstones=tombstones,
        locks=locks,
        header=header,
    )
    graph_check(arrays, n, h.max_m, w)

    lo = h.label_offset
    labels = blocks[:n, lo : lo + 8].view("<u8")[:, 0]
    keymap = HnswlibKeyMap(labels, *check_labels(labels))
    wide = level0[h.offset_data : h.offset_data + cap * s].view(np.float32).reshape(cap, s // 4)
    return _Parsed(h, arrays, wide, keymap)


def _clean_leftovers(source: str | os.PathLike) -> None:
    """Remove the temporary copies that killed saves of the path ``source`` left (full-size
    files otherwise kept until the next save), as a Zarr load does; the load goes on whatever happens."""
    try:
        clean_leftovers(through_link(Path(os.fsdecode(os.fspath(source)))))
    except (OSError, ValueError):  # a name the OS refuses: open_source says so
        pass


def load_hnswlib(metric: Metric | str, dim: int | None, source: Any, *, writable: bool = False,
                 allow_nonfinite: bool = False, mapped: bool | None = None) -> tuple[Hnsw, Any]:
    """Open an index written by hnswlib's ``save_index``.

    Parameters
    ----------
    metric : Metric or str
        ``L2()`` for an ``'l2'`` file, ``InnerProduct()`` for ``'ip'``, ``Cosine()`` for
        ``'cosine'`` (the file holds the vectors normalised: check ``unit-vectors`` refuses
        other norms). The file does not record it.
    dim : int or None
        Vector dimension; must agree with the file (``None`` reads it from the file).
    source : path, bytes, buffer or numpy array / memmap
        The file's bytes; a path is memory-mapped read-only. ``bytes`` and read-only
        maps (``np.memmap(mode="r")``) are viewed; any other buffer, read-only views of
        writable memory too, is copied once (0.66 GB, ~0.35 s for 1,000,000 x 128 at M=16).
    writable : bool
        Return a materialized in-memory copy (see :func:`materialize`) instead of the
        read-only zero-copy view.
    allow_nonfinite : bool
        Accept vectors holding NaN or inf, or components so large that float32 distances
        overflow (check ``finite-vectors``), to inspect such a file: searches then rank
        those items arbitrarily. Refused by default.
    mapped : bool, optional
        Map a path (the default unless ``writable``) or read it into memory (the default
        for ``writable``: a copy needs no mapping, and a read file rewritten in place by
        another process, as C++ hnswlib's ``saveIndex`` does, is refused, where a mapping
        would stop the process with SIGBUS).

    Returns
    -------
    (Hnsw, store)
        Labels become the integer keys, hnswlib's deleted marks tombstones; the entry
        point and levels are the file's. The read-only index searches like any other
        (k, ef, filters, batches) and raises ReadOnlyIndexError on mutation.

    Raises
    ------
    LegacyFormatError
        The file is truncated, inconsistent or hostile; the message (and ``.check``)
        names the failed check. A path that is not a regular file (a FIFO, a device)
        is refused (check ``regular-file``) without reading from it.
    """
    metric = _resolve_metric(metric)
    if dim is not None:
        check_int("dim", dim, 1, MAX_DIM)
        dim = int(dim)
    writable, allow_nonfinite = check_flag("writable", writable), check_flag("allow_nonfinite", allow_nonfinite)
    mapped = not writable if mapped is None else check_flag("mapped", mapped)
    if isinstance(source, (str, os.PathLike)):
        _clean_leftovers(source)
    buf, where = open_source(source, mapped)
    try:
        p, failed = _parse(buf, dim), None
        if not allow_nonfinite or metric.normalize:
            check_finite(p.vectors, p.header.count, p.header.dim, unit=metric.normalize, finite=not allow_nonfinite)
    except LegacyFormatError as exc:
        failed = LegacyFormatError(f"{where}: {exc}")
        failed.check = getattr(exc, "check", None)
    if failed is not None:  # raised outside the handler, no local left: no context or cycle keeps the mapping
        buf = p = None
        try:
            raise failed
        finally:
            del failed
    h = p.header
    if h.count >= 1 << 16:
        _trim_heap()
    config = HnswConfig(dim=h.dim, max_nodes=p.arrays.levels.shape[0], m=h.max_m, ef_construction=h.ef_construction)
    index = Hnsw.from_parts(metric, config, p.arrays, p.keymap, read_only=True)
    store = HnswlibVectorStore(p.vectors, h.count, h, where)
    if writable:
        return materialize(index, store)
    return index, store
