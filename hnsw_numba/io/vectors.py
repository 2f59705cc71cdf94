"""Vectors from files, read whole or in batches of bounded size.

Formats, recognised from a file's first bytes (a directory is taken for Zarr; the suffix
decides the TEXMEX formats):

* ``.npy`` -- a 2-D numeric array, memory-mapped; never unpickled (``allow_pickle`` is off);
* ``.fvecs`` / ``.bvecs`` / ``.ivecs`` -- TEXMEX: per row an int32 dimension, then that many
  float32 / uint8 / int32 values; every row's dimension is checked when it is read;
* HDF5 (needs h5py: ``pip install 'hnsw_numba[hdf5]'``) -- a 2-D dataset. ann-benchmarks files
  hold ``train``, ``test``, ``neighbors`` and a ``distance`` attribute (see ``metric_hint``);
* Zarr (v2 or v3) -- an array, or an array of a group;
* Parquet (needs pyarrow: ``pip install 'hnsw_numba[parquet]'``) -- a list or fixed-size-list
  column of numbers (one vector per row), or numeric columns (one dimension each); see
  :mod:`hnsw_numba.io.parquet`.

A file that holds several arrays (HDF5, a Zarr group, a Parquet table with several list
columns) needs the one to read: ``dataset="test"``, or after a colon, ``"ann.hdf5:test"``.
fsspec URLs (``s3://bucket/base.fvecs``; ``pip install 'hnsw_numba[s3]'``) are read in byte
ranges, never whole. Every problem with a file raises
:class:`~hnsw_numba.VectorFileError` (a ``ValueError``) whose message names the file; a file
that does not exist raises :class:`~hnsw_numba.VectorFileNotFoundError` (also a
``FileNotFoundError``); a missing optional package raises
:class:`~hnsw_numba.MissingDependencyError` (an ``ImportError``) naming the extra to install.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from ..core.errors import InvalidParameterError, VectorFileError, VectorFileNotFoundError
from .formats import DISTANCE_METRICS, is_hdf5, open_file, open_zarr
from .localfiles import open_regular
from .source import DEFAULT_BATCH, VectorSource, short

__all__ = ["VectorSource", "open_vectors", "read_vectors", "iter_vectors", "split_spec", "is_url", "is_hdf5", "open_file",
           "DISTANCE_METRICS"]

# ============================================================================ public readers
def open_vectors(path: str | os.PathLike, *, dataset: str | list[str] | None = None) -> VectorSource:
    """Open a file of vectors without reading it (see the module docstring for the formats).

    Parameters
    ----------
    path : str or path-like
        File, Zarr directory or fsspec URL; ``"PATH:NAME"`` names a dataset, array or column.
    dataset : str, optional
        The HDF5 dataset, Zarr array of a group, or Parquet column(s) to read.

    Returns
    -------
    VectorSource
        Close it (or use ``with``) to release the file.

    Examples
    --------
    >>> with hn.open_vectors("ann.hdf5:train") as src:  # doctest: +SKIP
    ...     for batch in src.batches(100_000):
    ...         index.insert_batch(store, keys[:len(batch)], batch)
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise InvalidParameterError(f"path must be a str or path-like, got {type(path).__name__}")
    if dataset is not None and not isinstance(dataset, (str, list, tuple)):
        raise InvalidParameterError(f"dataset must be a str (or Parquet column names), got {dataset!r}")
    if is_url(path):
        from .remote import open_url

        return open_url(path, dataset)
    path, name = split_spec(path, dataset)
    if os.path.isdir(path):
        return open_zarr(path, name, local=True)
    try:
        # a regular file: a pipe would be read up by the format's sniff and then block the
        # read (and a device may never end)
        with open_regular(path, lambda msg: VectorFileError(f"{msg} (a pipe or device: save the stream to a file first)")) as f:
            magic = f.read(8)
    except OSError as exc:
        raise VectorFileError(f"{path}: cannot read: {exc.strerror or short(exc)}") from None
    return open_file(path, magic, name)


def read_vectors(path: str | os.PathLike, *, dataset: str | list[str] | None = None, dtype: Any = np.float32,
                 check_finite: bool = True) -> np.ndarray:
    """Every row of a file of vectors as one array.

    Parameters
    ----------
    path : str or path-like
        ``.npy``, ``.fvecs`` / ``.bvecs`` / ``.ivecs``, HDF5, Zarr, Parquet or an fsspec URL;
        ``"PATH:NAME"`` names a dataset, array or column (see :func:`open_vectors`).
    dataset : str, optional
        HDF5 dataset, Zarr array of a group, or Parquet column(s).
    dtype : dtype or None
        Element type of the result (default float32); None keeps the stored type (e.g.
        int32 for an ``.ivecs`` or ann-benchmarks ``neighbors`` file). An integer type
        refuses values it cannot hold (NaN, inf, out of its range), naming the row.
    check_finite : bool
        Refuse rows with NaN or inf (the error names the row).

    A read larger than the allocation limit raises :class:`CapacityError` before allocating.

    Returns
    -------
    ndarray (n, dim)
        A ``.npy`` file that already holds ``dtype`` comes back memory-mapped (read-only,
        nothing copied); everything else is read into memory. For data larger than memory
        use :func:`iter_vectors` or :func:`open_vectors`.

    Examples
    --------
    >>> import numpy as np, hnsw_numba as hn
    >>> np.save("x.npy", np.ones((3, 4), np.float32))  # doctest: +SKIP
    >>> hn.read_vectors("x.npy").shape  # doctest: +SKIP
    (3, 4)
    >>> truth = hn.read_vectors("glove-100-angular.hdf5:neighbors", dtype=None)  # doctest: +SKIP
    """
    with open_vectors(path, dataset=dataset) as src:
        return src.read(dtype=dtype, check_finite=check_finite)


def iter_vectors(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH, *, dataset: str | list[str] | None = None,
                 dtype: Any = np.float32, check_finite: bool = True, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """The rows of a file of vectors in batches of ``batch_size`` (memory stays bounded).

    The file is opened on the first ``next()`` and closed when the iteration ends (or the
    iterator is closed or collected). Parameters as in :func:`read_vectors`; ``start`` and
    ``stop`` restrict the rows.

    Examples
    --------
    >>> for batch in hn.iter_vectors("bigann_base.bvecs", 100_000):  # doctest: +SKIP
    ...     index.insert_batch(store, np.arange(n, n + len(batch)), batch)
    ...     n += len(batch)
    """
    with open_vectors(path, dataset=dataset) as src:
        yield from src.batches(batch_size, start=start, stop=stop, dtype=dtype, check_finite=check_finite)


# ============================================================================ opening
def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://") or "::" in path


def split_spec(spec: str, dataset: Any = None) -> tuple[str, Any]:
    """``PATH`` or ``PATH:NAME`` -> ``(PATH, NAME or dataset)``.

    The whole of ``spec`` is the path when it exists; else the part before the last
    colon must exist. ``dataset`` given: ``spec`` is the path as it is.
    """
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    if dataset is not None or os.path.lexists(spec):
        if not os.path.lexists(spec):
            raise VectorFileNotFoundError(f"{spec}: no such file or directory")
        return spec, dataset
    head, sep, tail = spec.rpartition(":")
    if sep and head and os.path.lexists(head):
        return head, tail or None
    raise VectorFileNotFoundError(f"{spec}: no such file or directory")
