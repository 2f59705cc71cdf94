"""Vectors behind fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...), read in byte ranges.

Needs fsspec and the filesystem's own package (``pip install 'hnsw_numba[s3]'`` for S3). A
directory is opened as Zarr (through Zarr's own fsspec support); a file by its first bytes,
as :func:`hnsw_numba.io.vectors.open_vectors` does for local files. ``.npy`` and TEXMEX rows
are fetched by one ranged read per batch, HDF5 and Parquet through the file object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import VectorFileError, VectorFileNotFoundError
from .formats import RecordRows, open_zarr, ranged_fetch
from .source import VectorSource, require, short
from .vectors import open_file

__all__ = ["open_url", "open_npy_file"]


def open_url(url: str, dataset: Any = None) -> VectorSource:
    """Open the vectors at an fsspec ``url`` (``"URL:NAME"`` names a dataset, as for paths)."""
    fsspec = require("fsspec", "s3", f"{url}: reading a URL")
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise VectorFileError(f"{url}: cannot open: {short(exc)} (pip install 'hnsw_numba[s3]' for S3)") from None
    where = url
    if dataset is None and not fs.exists(path):
        head, sep, tail = path.rpartition(":")
        if sep and head and fs.exists(head):
            path, dataset, where = head, tail or None, url[: len(url) - len(tail) - 1]
    if not fs.exists(path):
        raise VectorFileNotFoundError(f"{url}: no such file or directory")
    if fs.isdir(path):
        return open_zarr(where, dataset, local=False)
    try:
        size = int(fs.size(path))
        f = fs.open(path, "rb")
        magic = f.read(8)
    except OSError as exc:
        raise VectorFileError(f"{where}: cannot read: {short(exc)}") from None
    try:
        src = open_file(where, magic, dataset, fileobj=f, size=size)
    except BaseException:
        f.close()
        raise

    def close() -> None:
        try:
            src.close()
        finally:
            f.close()

    return VectorSource(src.data, src.where, metric_hint=src.metric_hint, close=close)


def open_npy_file(f: Any, where: str) -> VectorSource:
    """A ``.npy`` array in an open (remote) file: header parsed, rows read by byte ranges."""
    fmt = np.lib.format
    try:
        f.seek(0)
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        offset = f.tell()
    except ValueError as exc:
        raise VectorFileError(f"{where}: not a readable .npy array: {short(exc)}") from None
    if dtype.hasobject:
        raise VectorFileError(f"{where}: not a readable .npy array: holds Python objects (refused: loading would unpickle them)")
    if len(shape) != 2:
        raise VectorFileError(f"{where}: expected a 2-D array (rows x dim), got shape {tuple(shape)}")
    if fortran and shape[0] > 1 and shape[1] > 1:
        raise VectorFileError(f"{where}: a Fortran-ordered .npy array cannot be read by rows remotely (save it C-ordered)")
    size = f.size if isinstance(getattr(f, "size", None), int) else None
    rec = int(shape[1]) * dtype.itemsize
    if size is not None and size < offset + int(shape[0]) * rec:
        raise VectorFileError(f"{where}: not a readable .npy array: truncated or corrupt (file shorter than its header says)")
    rows = RecordRows(ranged_fetch(f, offset, rec, where), int(shape[0]), int(shape[1]), dtype, False, where)
    return VectorSource(rows, where, close=f.close)
