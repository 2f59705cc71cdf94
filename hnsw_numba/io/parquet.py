"""Vectors in a Parquet file (needs pyarrow: ``pip install 'hnsw_numba[parquet]'``).

One vector per row, from either

* a list or fixed-size-list column of numbers (every row the same length), or
* numeric columns, one dimension each (in the table's column order).

Which: ``dataset="emb"`` (or ``"table.parquet:emb"``) names a column; a list of names picks
numeric columns; without a name, the table's only list column of numbers, else every
numeric column (columns of other types are left out). Rows are read one row group at a
time, so memory stays bounded by a row group and the batch asked for; a null vector or
value raises :class:`~hnsw_numba.VectorFileError` naming the row.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..core.errors import InvalidParameterError, VectorFileError
from .source import VectorSource, require, short

__all__ = ["open_parquet", "ParquetRows"]


def open_parquet(target: Any, where: str, name: Any) -> VectorSource:
    """Open the vectors of a Parquet file (a path or an open file object); see the module docstring."""
    pa = require("pyarrow", "parquet", f"{where}: reading Parquet")
    pq = require("pyarrow.parquet", "parquet", f"{where}: reading Parquet")
    try:
        pf = pq.ParquetFile(target)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise VectorFileError(f"{where}: cannot open as Parquet: {short(exc)}") from None
    rows = ParquetRows(pf, _columns(pa, pf.schema_arrow, name, where), where)
    label = where if name is None else f"{where}:{name if isinstance(name, str) else ','.join(name)}"
    return VectorSource(rows, label)


def _is_number(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _is_vector(pa: Any, t: Any) -> bool:
    lists = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return bool(lists and _is_number(pa, t.value_type))


def _columns(pa: Any, schema: Any, name: Any, where: str) -> tuple[list[str], bool]:
    """``(column names, whether they are one list column)`` chosen as the module docstring says."""
    fields = {f.name: f.type for f in schema}
    listing = ", ".join(f"{k} ({v})" for k, v in fields.items()) or "none"
    if name is None:
        vectors = [k for k, t in fields.items() if _is_vector(pa, t)]
        if len(vectors) > 1:
            raise VectorFileError(f"{where}: several list columns ({', '.join(vectors)}); name one (dataset=NAME or {where}:NAME)")
        if vectors:
            return vectors, True
        numeric = [k for k, t in fields.items() if _is_number(pa, t)]
        if not numeric:
            raise VectorFileError(f"{where}: no list column of numbers and no numeric columns; columns: {listing}")
        return numeric, False
    names = [name] if isinstance(name, str) else list(name)
    if not names:
        raise InvalidParameterError(f"{where}: dataset names no column (an empty list); columns: {listing}")
    twice = next((k for i, k in enumerate(names) if k in names[:i]), None)
    if twice is not None:  # the reader returns each column once: the rows would be narrower than dim
        raise InvalidParameterError(f"{where}: dataset names column '{twice}' twice")
    for k in names:
        if k not in fields:
            raise VectorFileError(f"{where}: no column '{k}'; columns: {listing}")
    if len(names) == 1 and _is_vector(pa, fields[names[0]]):
        return names, True
    bad = [k for k in names if not _is_number(pa, fields[k])]
    if bad:
        raise VectorFileError(f"{where}: column '{bad[0]}' is {fields[bad[0]]}, not numbers or a list of numbers")
    return names, False


class ParquetRows:
    """A Parquet file's vectors as an array-like: ``.shape``, ``.dtype``, ``rows[a:b]``.

    Each read decodes the row groups it overlaps; the last one decoded is kept, so reading
    consecutive batches decodes every row group once.
    """

    def __init__(self, pf: Any, chosen: tuple[list[str], bool], where: str) -> None:
        import pyarrow as pa

        self.pf, self.where = pf, where
        self.columns, self.is_list = chosen
        md = pf.metadata
        counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        fields = {f.name: f.type for f in pf.schema_arrow}
        self._lock = threading.Lock()
        self._cached: tuple[int, np.ndarray] | None = None
        self._dim: int | None = None
        if self.is_list:
            t = fields[self.columns[0]]
            self.dtype = np.dtype(t.value_type.to_pandas_dtype())
            if pa.types.is_fixed_size_list(t):
                self._dim = int(t.list_size)
            else:  # a variable list: the first vector's length (every other row is checked against it)
                first = next((g for g in range(len(counts)) if counts[g]), None)
                self._dim = 0 if first is None else self._group(first).shape[1]
        else:
            self.dtype = np.result_type(*[np.dtype(fields[c].to_pandas_dtype()) for c in self.columns])
            self._dim = len(self.columns)
        self.shape = (int(md.num_rows), int(self._dim))

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(start, stop)
        parts = []
        g = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop and g < len(self.starts) - 1:
            g0, g1 = int(self.starts[g]), int(self.starts[g + 1])
            if g1 > start:
                block = self._group(g)
                parts.append(block[start - g0 : min(stop, g1) - g0])
                start = min(stop, g1)
            g += 1
        if not parts:
            return np.empty((0, self.shape[1]), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _group(self, g: int) -> np.ndarray:
        with self._lock:
            if self._cached is not None and self._cached[0] == g:
                return self._cached[1]
            table = self.pf.read_row_group(g, columns=self.columns)
            row0 = int(self.starts[g])
            if self.is_list:
                block = self._list_rows(table.column(0), row0)
            else:
                cols = []
                for name, col in zip(self.columns, table.columns):
                    self._no_nulls(col, row0, f"column '{name}' is null")
                    cols.append(col.to_numpy())
                block = np.column_stack(cols).astype(self.dtype, copy=False)
            self._cached = (g, block)
            return block

    def _no_nulls(self, arr: Any, row0: int, what: str) -> None:
        if arr.null_count:
            i = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))
            raise VectorFileError(f"{self.where}: row {row0 + i}: {what}")

    def _list_rows(self, col: Any, row0: int) -> np.ndarray:
        dim = self._dim
        parts = []
        for chunk in col.chunks:
            if not len(chunk):
                continue
            self._no_nulls(chunk, row0, "the vector is null")
            lengths = chunk.value_lengths().to_numpy(zero_copy_only=False)
            if dim is None and lengths.size:
                dim = self._dim = int(lengths[0])
            if dim == 0:  # a vector of no values: no dimension to index
                raise VectorFileError(f"{self.where}: row {row0} is an empty vector (no values)")
            bad = np.flatnonzero(lengths != dim)
            if bad.size:
                i = int(bad[0])
                raise VectorFileError(f"{self.where}: row {row0 + i} has {int(lengths[i])} values, the first row {dim}")
            values = chunk.flatten()
            if values.null_count:
                i = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
                raise VectorFileError(f"{self.where}: row {row0 + i // max(dim, 1)}: a value is null")
            parts.append(values.to_numpy(zero_copy_only=False).reshape(-1, dim))
            row0 += len(chunk)
        if not parts:
            return np.empty((0, dim or 0), self.dtype)
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(self.dtype, copy=False)
