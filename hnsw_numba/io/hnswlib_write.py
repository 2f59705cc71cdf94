"""Write hnswlib's index format (``saveIndex``): the inverse of :func:`load_hnswlib`.

``save_hnswlib(path, index, store)`` writes the file C++ hnswlib 0.2 - 0.8 reads with
``load_index`` (64-bit little-endian, the layout of ``docs/hnswlib-format.md`` in the
shared folder): a 96-byte header, one level-0 block ``[u32 count|delete mark][2M u32
ids][float32 vector][u64 label]`` per NodeId in NodeId order, then one upper-level record
``[u32 bytes][level blocks of (1 + M) words]`` per NodeId. NodeIds become hnswlib's
internal ids, keys its labels, tombstones its delete marks; levels, links and the entry
point are the index's own, so hnswlib searches the very same graph.

A file loaded with :func:`load_hnswlib` (read-only) and saved again comes out byte for byte
as hnswlib wrote it: the link words are copied as they are, including the stale ids hnswlib
leaves past each count, and the capacity is the file's ``max_elements``.

What hnswlib could not read back is refused with :class:`HnswlibWriteError` before a byte
is written: keys that are not ints in ``[0, 2**64)`` (str keys, negative ints), vectors
that are not float32 unless ``convert=True`` (float16 / bfloat16 widen exactly; Qi8 stores
write their dequantized values, cosine rows scaled to unit length again), more elements than 32-bit internal ids allow, keys
``rename_deleted`` gave that no insert followed (hnswlib's ``unmark_deleted`` would bring
such a key back with the old key's vector: hnswlib has no record to refuse it).
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any, BinaryIO

import numpy as np

from ..core.config import MAX_M
from ..core.errors import HnswError, InvalidParameterError
from ..core.index import Hnsw
from ..core.keymap import describe_key
from ..core.validate import check_flag
from ..kernels.layout import COUNT_MASK, H_ENTRY, H_MAX_LEVEL, BF16Rows, F16Rows, F32Rows, Qi8Rows, exact_rows
from .hnswlib_format import HEADER_BYTES
from .atomic import write_atomically

__all__ = ["save_hnswlib", "hnswlib_file_size", "hnswlib_labels", "HnswlibWriteError"]

_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
assert _HEADER.size == HEADER_BYTES
_NO_ENTRY = 0xFFFFFFFF
_ROWS = 1 << 15  # level-0 blocks per write: bounds the temporary buffer


class HnswlibWriteError(HnswError, ValueError):
    """The index holds something hnswlib's file format cannot carry; nothing was written."""


def _block_sizes(m: int, dim: int) -> tuple[int, int, int]:
    """``(size_data_per_element_, offsetData_, label_offset_)`` in bytes."""
    offset_data = 4 + 4 * 2 * m
    label_offset = offset_data + 4 * dim
    return label_offset + 8, offset_data, label_offset


def hnswlib_file_size(index: Hnsw) -> int:
    """Bytes :func:`save_hnswlib` writes for ``index`` (hnswlib's ``index_file_size``)."""
    n, m = index.node_count, index.config.m
    size, _, _ = _block_sizes(m, index.dim)
    levels = int(index.graph_arrays.levels[:n].astype(np.int64).sum())
    return HEADER_BYTES + n * size + 4 * n + levels * 4 * (1 + m)


def hnswlib_labels(keys: np.ndarray) -> np.ndarray:
    """The native ``keys`` (1-D) as hnswlib's uint64 labels (HnswlibWriteError if one is not)."""
    keys = np.asarray(keys)
    n = keys.shape[0]
    if keys.dtype == np.uint64:
        return keys.copy()
    if keys.dtype.kind in "iu":
        if n and int(keys.min()) < 0:
            raise HnswlibWriteError(f"key {int(keys.min())} is negative; hnswlib labels are uint64")
        return keys.astype(np.uint64)
    out = np.empty(n, np.uint64)
    for i, k in enumerate(keys.tolist()):  # object keys: str, or ints beyond int64
        if isinstance(k, str):
            raise HnswlibWriteError(f"key {k!r} is a str; hnswlib labels are uint64 (use int keys)")
        if not (isinstance(k, int) and 0 <= k < 2**64):
            raise HnswlibWriteError(f"key {describe_key(k)} is outside hnswlib's uint64 labels")
        out[i] = k
    return out


def _float32_rows(rows: Any, n: int, dim: int, convert: bool) -> np.ndarray:
    """The first ``n`` vectors as float32[n, dim] (a view for float32 stores)."""
    rows = exact_rows(rows)
    if isinstance(rows, F32Rows):
        return rows.data[:n, :dim]
    if not convert:
        raise HnswlibWriteError(
            f"the store holds {type(rows).__name__[:-4].lower()} vectors and hnswlib's files hold float32; "
            "pass convert=True to write them widened to float32"
        )
    if isinstance(rows, F16Rows):
        return rows.bits[:n, :dim].view(np.float16).astype(np.float32)
    if isinstance(rows, BF16Rows):
        import ml_dtypes

        return rows.bits[:n, :dim].view(ml_dtypes.bfloat16).astype(np.float32)
    if isinstance(rows, Qi8Rows):
        codes = rows.codes[:n, :dim].astype(np.float32)
        zero = np.asarray(rows.zero[:n], np.float32)[:, None]
        return (np.asarray(rows.scale[:n], np.float32)[:, None] * (codes - zero)).astype(np.float32)
    raise HnswlibWriteError(f"cannot write vectors from {type(rows).__name__}")


def _upper_region(levels: np.ndarray, upper_start: np.ndarray, upper_links: np.ndarray, m: int) -> np.ndarray:
    """All upper-level records as uint32 words: ``[bytes, blocks...]`` per NodeId."""
    lv = levels.astype(np.int64)
    block = m + 1
    rec = 1 + lv * block
    starts = np.cumsum(rec) - rec
    out = np.empty(int(rec.sum()), np.uint32)
    out[starts] = (lv * 4 * block).astype(np.uint32)
    nodes = np.flatnonzero(lv > 0)
    if nodes.shape[0]:
        words = lv[nodes] * block
        first = np.cumsum(words) - words
        offset = np.arange(int(words.sum())) - np.repeat(first, words)
        src = np.repeat(upper_start[nodes], words) + offset
        out[np.repeat(starts[nodes] + 1, words) + offset] = upper_links[src].view(np.uint32)
    return out


def _check(index: Hnsw, store: Any, max_elements: int | None) -> tuple[Any, int]:
    """Validate the store and sizes (the caller holds the lock: a growth replaces the rows); returns ``(rows, capacity)``."""
    rows = index.check_store(store)  # kind, dim and rows, before any file is touched
    m, n = index.config.m, index.node_count
    if not 2 <= m <= MAX_M:
        raise HnswlibWriteError(f"m={m}: hnswlib's files hold 2 <= M <= {MAX_M}")
    if n >= _NO_ENTRY:
        raise HnswlibWriteError(f"{n} elements: hnswlib's internal ids are 32-bit")
    if max_elements is None:
        declared = getattr(store, "source_capacity", None)  # an hnswlib file's own max_elements
        max_elements = declared if isinstance(declared, int) else index.max_nodes
        max_elements = max(max_elements, n)
    elif isinstance(max_elements, bool) or not isinstance(max_elements, (int, np.integer)) or not n <= max_elements <= _NO_ENTRY:
        raise InvalidParameterError(f"max_elements must be an int in [{n}, {_NO_ENTRY}], got {max_elements!r}")
    return rows, int(max_elements)


def _write(f: BinaryIO, index: Hnsw, rows: Any, capacity: int, convert: bool) -> None:
    """Snapshot the index (the caller excludes mutations) and write the file's bytes to ``f``."""
    a = index.graph_arrays
    n, m, dim = index.node_count, index.config.m, index.dim
    # tombstones and keys are read once, first: delete / undelete / rename_deleted do not
    # take the lock that excludes inserts, so the file records one moment of them
    tomb = a.tombstones[:n].astype(np.uint32)
    labels = hnswlib_labels(index.key_map.node_keys[:n])
    renamed = sorted(i for i in getattr(index.key_map, "renamed", ()) if i < n)
    if renamed:  # hnswlib's unmarkDelete would bring such a key back with its old key's vector
        raise HnswlibWriteError(f"NodeIds {renamed[:5]} hold keys rename_deleted gave and no insert followed (their vectors "
                                "are the old keys'); hnswlib's format cannot record that: insert those keys first")
    vectors = _float32_rows(rows, n, dim, convert)
    if index.metric.normalize and not isinstance(exact_rows(rows), F32Rows):  # hnswlib's cosine files hold unit rows, as the
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # loader checks: Qi8's steps move a norm (1.045 at 4,097-d)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
    levels = a.levels[:n]
    size, offset_data, label_offset = _block_sizes(m, dim)
    entry, top = int(a.header[H_ENTRY]), int(a.header[H_MAX_LEVEL])
    if n == 0:
        entry, top = _NO_ENTRY, -1
    elif top != int(levels.max()) or int(levels[entry]) != top:
        raise HnswlibWriteError(f"entry point {entry} / max level {top} do not match the node levels; run check_integrity()")
    upper = _upper_region(levels, a.upper_start[:n], a.upper_links, m)
    f.write(_HEADER.pack(0, capacity, n, size, label_offset, offset_data, top, entry,
                         m, 2 * m, m, 1.0 / math.log(m), index.config.effective_ef_construction))
    w_data, w_label = offset_data // 4, label_offset // 4
    for r0 in range(0, n, _ROWS):
        r1 = min(r0 + _ROWS, n)
        words = np.zeros((r1 - r0, size // 4), np.uint32)
        links = a.links0[r0:r1].view(np.uint32)
        words[:, 0] = (links[:, 0] & COUNT_MASK) | (tomb[r0:r1] << 16)  # count | hnswlib's delete mark
        words[:, 1:w_data] = links[:, 1:]
        words[:, w_data:w_label] = vectors[r0:r1].view(np.uint32)
        lab = labels[r0:r1]
        words[:, w_label] = (lab & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        words[:, w_label + 1] = (lab >> np.uint64(32)).astype(np.uint32)
        f.write(words.astype("<u4", copy=False).tobytes())
    f.write(upper.astype("<u4", copy=False).tobytes())


def save_hnswlib(target: str | os.PathLike | BinaryIO, index: Hnsw, store: Any, *, max_elements: int | None = None,
                 convert: bool = False, fsync: bool = True) -> None:
    """Write ``index`` and its ``store`` as an hnswlib index file.

    Parameters
    ----------
    target : path or binary file object
        A path is written atomically: to a temporary sibling, flushed, then renamed over
        ``target``, so ``target`` is the old file or the whole new one, never a part. A file
        object (e.g. ``io.BytesIO``) is written from its current position.
    index, store : Hnsw and its vector store
        Any metric over float vectors: load the file in hnswlib with the space of the
        metric (``L2()`` 'l2', ``InnerProduct()`` 'ip', ``Cosine()`` 'cosine'; the store
        holds cosine vectors normalised, as hnswlib's files do).
    max_elements : int, optional
        hnswlib's capacity in the header; default the index's ``max_nodes`` (the file's own
        for a store from :func:`load_hnswlib`), at least the node count.
    convert : bool
        Write float16, bfloat16 and Qi8 stores as float32 (else they are refused).
    fsync : bool
        Flush the file to disk before the rename and the directory after it (needed to
        survive power loss).

    Raises
    ------
    HnswlibWriteError
        Something hnswlib's format cannot carry (see the module docstring); nothing written.
    PersistError
        An OS error; the previous file is kept, also when flushing the directory after the
        rename fails (see :func:`hnsw_numba.io.atomic.write_atomically`).

    Notes
    -----
    Excludes mutations that link nodes (insert, set, resize, compact) while it writes;
    searches run on. Deletes, undeletes and renames are recorded as of the start.
    """
    if not isinstance(index, Hnsw):
        raise InvalidParameterError(f"index must be an Hnsw, got {type(index).__name__}")
    convert, fsync = check_flag("convert", convert), check_flag("fsync", fsync)
    if hasattr(target, "write"):
        with index.lock.exclusive():
            _write(target, index, *_check(index, store, max_elements), convert)
        return
    if not isinstance(target, (str, os.PathLike)):
        raise InvalidParameterError(f"target must be a path or a binary file object, got {type(target).__name__}")
    with index.lock.exclusive():
        rows, capacity = _check(index, store, max_elements)
        write_atomically(target, lambda f: _write(f, index, rows, capacity, convert), fsync=fsync)
