"""Rows to add, in batches, from whatever holds them: what ``Index.add_from`` reads.

A source is a file path (read with :func:`hnsw_numba.io.vectors.open_vectors`), anything
with ``shape`` and row slices (a NumPy array or memory map, a Zarr or h5py array), a dask
array (each batch computed in turn), or an iterable of 2-D batches. Only one batch is held
at a time; for a memory-mapped source :func:`release_pages` drops the rows already added
from the process's resident memory, so a pass over a file larger than RAM stays flat.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .core.errors import DimensionMismatchError, InvalidKeyError, InvalidParameterError, InvalidVectorError
from .core.keymap import normalize_keys
from .core.validate import refuse_masked
from .io.source import check_stored_rows

__all__ = ["RowSource", "open_rows", "KeyRows", "key_reader", "release_pages", "insert_rows"]


class RowSource(NamedTuple):
    """An opened source of rows."""

    batches: Callable[[int], Iterator[np.ndarray]]  # batches(size): consecutive row batches
    total: int | None  # rows in all (None: an iterable of unknown length)
    close: Callable[[], None]  # releases the file
    mapped: np.ndarray | None  # the memory-mapped array read, whose pages can be released


def open_rows(source: Any, dim: int) -> RowSource:
    """Open ``source`` for reading rows of ``dim`` values (DimensionMismatchError otherwise)."""
    if isinstance(source, (str, os.PathLike)):
        from .io.vectors import open_vectors

        src = open_vectors(source)
        _check_dim(src.dim, dim, src.where)
        return RowSource(lambda size: src.batches(size), src.n, src.close, _mapped(getattr(src, "data", None)))
    check_stored_rows(source)  # an h5py dataset: open, its rows in its own file and written, as a path to it is read
    refuse_masked(source, "source")  # its batches would carry the values hidden under the mask
    shape = getattr(source, "shape", None)
    if shape is not None and hasattr(source, "__getitem__"):
        if len(shape) != 2:
            raise DimensionMismatchError(f"expected a 2-D source (rows, {dim}), got shape {tuple(shape)}")
        _check_dim(int(shape[1]), dim, type(source).__name__)
        compute = callable(getattr(source, "compute", None)) and hasattr(source, "chunks")  # a dask array

        def batches(size: int) -> Iterator[np.ndarray]:
            for a in range(0, int(shape[0]), size):
                part = source[a : a + size]
                yield np.asarray(part.compute() if compute else part)

        return RowSource(batches, int(shape[0]), lambda: None, _mapped(source))
    if hasattr(source, "__iter__") and not isinstance(source, (bytes, dict)):
        return RowSource(lambda size: iter(source), None, lambda: None, None)
    raise InvalidParameterError(f"source must be a path, an array or an iterable of arrays, got {type(source).__name__}")


def _check_dim(found: int, dim: int, where: str) -> None:
    if found != dim:
        raise DimensionMismatchError(f"{where} holds vectors of dim {found}, the index has dim {dim}")


class KeyRows:
    """The keys of ``add_from``'s rows, one per row, read batch by batch."""

    def __init__(self, keys: Any) -> None:
        self.keys = keys

    def __call__(self, a: int, b: int) -> np.ndarray:
        """The keys of rows ``a:b`` (InvalidKeyError when fewer are left)."""
        part = np.asarray(self.keys[a:b])
        if part.shape[0] != b - a:
            raise InvalidKeyError(f"{self.keys.shape[0]} keys given, but the source holds more rows (one key per row): rows {a}.. added")
        return part

    def all_used(self, rows: int) -> int:
        """``rows`` once every key was used (InvalidKeyError for keys past the source's rows, which
        an iterable source reveals only at its end)."""
        if self.keys.shape[0] != rows:
            raise InvalidKeyError(f"{self.keys.shape[0]} keys given for {rows} rows (one key per row): the rows are added, the last "
                                  f"{self.keys.shape[0] - rows} keys not")
        return rows


def key_reader(keys: Any, total: int | None) -> KeyRows:
    """A reader of the keys of rows ``a:b``, after checking there is one key per row (when the
    source's rows are known: ``total``)."""
    if isinstance(keys, (str, bytes)):  # a sequence of characters: a path is no list of keys
        raise InvalidKeyError(f"keys must be an array or a sequence of keys, got {type(keys).__name__} {keys!r}")
    if hasattr(keys, "shape") and hasattr(keys, "__getitem__"):
        arr = keys
    else:
        # each key as add() takes it: NumPy's own conversion turns [0, "a"] into strings, drops
        # a str key's trailing NULs, [True, 2] into ints, [2**63, 5] into floats, and widens
        # every str to the longest
        keys = list(keys)
        key_list, int_keys = normalize_keys(keys, len(keys))
        arr = int_keys if int_keys is not None else np.empty(len(key_list), object)
        if int_keys is None:
            arr[:] = key_list
    if np.ndim(arr) != 1 or (total is not None and arr.shape[0] != total):
        raise InvalidKeyError(f"expected {'one key per row' if total is None else f'{total} keys (one per row)'}, got shape {np.shape(arr)}")
    return KeyRows(arr)


def _mmap_of(arr: Any) -> Any:
    """The ``mmap`` beneath ``arr`` if it maps its file read-only, else None.

    Only a read-only mapping may drop its pages: the pages of a copy-on-write mapping
    (``np.memmap(mode="c")``, ``np.load(mmap_mode="c")``) hold the caller's edits, and
    dropping them would put the file's values back."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, mmap.mmap):
        return None
    try:
        with memoryview(base) as view:  # the mapping's own access: an array's flag can be cleared over a private map
            return base if view.readonly else None
    except (ValueError, TypeError):  # closed
        return None


def _mapped(arr: Any) -> np.ndarray | None:
    """``arr`` if it is a C-contiguous NumPy view of a read-only memory map, else None."""
    if isinstance(arr, np.ndarray) and arr.flags.c_contiguous and _mmap_of(arr) is not None:
        return arr
    return None


def release_pages(arr: np.ndarray, a: int, b: int) -> None:
    """Drop rows ``a:b`` of a read-only memory-mapped array from this process's resident memory.

    The pages stay in the OS page cache (reading them again is cheap) but stop counting in
    the process's RSS. Where the OS lacks ``madvise`` this does nothing (the kernel still
    reclaims clean file pages under memory pressure).
    """
    base = _mmap_of(arr)
    if base is None or not hasattr(base, "madvise"):
        return
    start = np.frombuffer(base, np.uint8).ctypes.data
    row = arr.strides[0]
    lo = arr.ctypes.data - start + a * row
    hi = min(arr.ctypes.data - start + b * row, len(base))
    lo -= lo % mmap.PAGESIZE
    if hi > lo:
        try:
            base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError, AttributeError):
            pass


def insert_rows(index: Any, store: Any, keys: Any, batch: Any, first: int, **options: Any) -> None:
    """``index.insert_batch(store, keys, batch, **options)`` for the source's rows from
    ``first``: a rejected vector is named by its row in the source, not in the batch."""
    try:
        index.insert_batch(store, keys, batch, **options)
    except InvalidVectorError as exc:
        raise InvalidVectorError(f"source rows {first}..{first + len(batch) - 1}, {exc}") from None
