"""Vectors behind fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...), read in byte ranges.

Needs fsspec and the filesystem's own package (``pip install 'hnsw_numba[s3]'`` for S3). A
directory is opened as Zarr (through Zarr's own fsspec support); a file by its first bytes,
as :func:`hnsw_numba.io.vectors.open_vectors` does for local files. ``.npy`` and TEXMEX rows
are fetched by one ranged read per batch, HDF5 and Parquet through the file object.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ..core.errors import HnswError, VectorFileError, VectorFileNotFoundError
from .formats import open_file, open_zarr
from .source import VectorSource, require, short

__all__ = ["open_url"]


@contextmanager
def _remote_errors(where: str) -> Iterator[None]:
    """A filesystem's own errors as VectorFileError naming ``where``: OSError, and the other
    exceptions remote backends raise (an expired token, a client library's error types)."""
    try:
        yield
    except HnswError:
        raise
    except OSError as exc:
        raise VectorFileError(f"{where}: cannot read: {short(exc)}") from None
    except Exception as exc:  # kept as the cause: the backend's own type says what failed
        raise VectorFileError(f"{where}: cannot read: {type(exc).__name__}: {short(exc)}") from exc


def open_url(url: str, dataset: Any = None) -> VectorSource:
    """Open the vectors at an fsspec ``url`` (``"URL:NAME"`` names a dataset, as for paths)."""
    fsspec = require("fsspec", "s3", f"{url}: reading a URL")
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise VectorFileError(f"{url}: cannot open: {short(exc)} (pip install 'hnsw_numba[s3]' for S3)") from None
    where = url
    with _remote_errors(url):
        if dataset is None and not fs.exists(path):
            head, sep, tail = path.rpartition(":")
            if sep and head and fs.exists(head):
                path, dataset, where = head, tail or None, url[: len(url) - len(tail) - 1]
        if not fs.exists(path):
            raise VectorFileNotFoundError(f"{url}: no such file or directory")
        is_dir = fs.isdir(path)
    if is_dir:
        return open_zarr(where, dataset, local=False)
    with _remote_errors(where):
        size = int(fs.size(path))
        f = fs.open(path, "rb")
        magic = f.read(8)
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
