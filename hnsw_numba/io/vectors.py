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

import importlib
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from ..core.errors import InvalidParameterError, MissingDependencyError, VectorFileError, VectorFileNotFoundError

__all__ = ["VectorSource", "open_vectors", "read_vectors", "iter_vectors", "split_spec", "is_url", "is_hdf5", "short", "require", "DISTANCE_METRICS"]

_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PARQUET_MAGIC = b"PAR1"
_HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_VECS = {".fvecs": np.dtype("<f4"), ".bvecs": np.dtype("u1"), ".ivecs": np.dtype("<i4")}
_MAX_VECS_DIM = 1 << 20  # a larger first "dimension" means the file is not TEXMEX
#: ann-benchmarks ``distance`` attribute -> this library's metric name.
DISTANCE_METRICS = {"angular": "cosine", "cosine": "cosine", "euclidean": "l2", "l2": "l2", "dot": "ip", "ip": "ip"}
DEFAULT_BATCH = 65536


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional package, or raise :class:`MissingDependencyError` with the install hint.

    Parameters
    ----------
    module : str
        The package to import (``"h5py"``).
    extra : str
        hnsw_numba's extra that installs it (``"hdf5"``).
    what : str
        What needs it, for the message (``"data.h5: reading HDF5"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{what} needs {module}; install {module}: pip install 'hnsw_numba[{extra}]'") from None


def short(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ============================================================================ the source
class VectorSource:
    """A 2-D array of vectors (a file, or any array-like), read by rows.

    Parameters
    ----------
    data : array_like
        Anything with ``.shape`` (n, dim), ``.dtype`` and ``data[a:b]`` returning rows: a
        NumPy array or memory map, an h5py dataset, a Zarr array.
    where : str
        How messages name it (``"ann.hdf5:train"``).
    metric_hint : str, optional
        The metric the file declares (an ann-benchmarks ``distance`` attribute), else None.
    close : callable, optional
        Releases the file; called by :meth:`close` (and on leaving a ``with`` block).

    Examples
    --------
    >>> import numpy as np, hnsw_numba as hn
    >>> src = hn.VectorSource(np.arange(12, dtype=np.float32).reshape(6, 2))
    >>> src.n, src.dim
    (6, 2)
    >>> [b.shape for b in src.batches(4)]
    [(4, 2), (2, 2)]
    """

    def __init__(self, data: Any, where: str = "array", *, metric_hint: str | None = None, close: Callable[[], None] | None = None) -> None:
        shape = tuple(getattr(data, "shape", ()))
        dtype = getattr(data, "dtype", None)
        if len(shape) != 2:
            raise VectorFileError(f"{where}: expected a 2-D array (rows x dim), got shape {shape}")
        if dtype is None or (np.dtype(dtype).kind not in "fiu" and np.dtype(dtype).name != "bfloat16"):
            raise VectorFileError(f"{where}: expected numbers, got dtype {dtype}")
        if shape[0] < 1 or shape[1] < 1:
            raise VectorFileError(f"{where}: empty array of shape {shape}")
        self.where = where
        self.data = data
        self.metric_hint = metric_hint
        self._close = close

    @property
    def n(self) -> int:
        """Number of rows (vectors)."""
        return int(self.data.shape[0])

    @property
    def dim(self) -> int:
        """Dimension (columns)."""
        return int(self.data.shape[1])

    @property
    def dtype(self) -> np.dtype:
        """The stored element type."""
        return np.dtype(self.data.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.dim

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"VectorSource({self.where!r}, n={self.n}, dim={self.dim}, dtype={self.dtype})"

    def _span(self, start: int, stop: int | None) -> tuple[int, int]:
        n = self.n
        stop = n if stop is None else stop
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidParameterError(f"{name} must be an int, got {v!r}")
        if not 0 <= start <= stop <= n:
            raise InvalidParameterError(f"rows {start}..{stop} are outside 0..{n} of {self.where}")
        return int(start), int(stop)

    def read(self, start: int = 0, stop: int | None = None, *, dtype: Any = np.float32, check_finite: bool = True) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous array.

        Parameters
        ----------
        start, stop : int
            Row range (default: every row).
        dtype : dtype or None
            Element type of the result (default float32); None keeps the stored type.
        check_finite : bool
            Raise :class:`VectorFileError` naming the first row that holds NaN or inf
            (or a value outside ``dtype``'s range) when the result is floating point.

        Returns
        -------
        ndarray (stop - start, dim)
            A read-only view of the memory map when a ``.npy`` file already holds ``dtype``,
            else a new array.
        """
        start, stop = self._span(start, stop)
        try:
            raw = np.asarray(self.data[start:stop])
        except VectorFileError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise VectorFileError(f"{self.where}: cannot read rows {start}..{stop - 1}: {short(exc)}") from exc
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.ascontiguousarray(raw, dtype=None if dtype is None else np.dtype(dtype))
        if check_finite and (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                i = int(np.argmin(finite))
                overflow = raw.dtype.kind in "fiu" and bool(np.isfinite(raw[i]).all())
                what = f"a value outside the {x.dtype} range" if overflow else "NaN or inf"
                raise VectorFileError(f"{self.where}: row {start + i} contains {what}")
        return x

    def batches(self, batch_size: int = DEFAULT_BATCH, *, start: int = 0, stop: int | None = None, dtype: Any = np.float32,
                check_finite: bool = True) -> Iterator[np.ndarray]:
        """Rows ``start:stop`` in consecutive batches of ``batch_size`` rows (the last may be shorter).

        Only one batch is in memory at a time (plus, for Parquet, the row group it comes
        from); ``dtype`` and ``check_finite`` as in :meth:`read`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be a positive int, got {batch_size!r}")
        start, stop = self._span(start, stop)
        for a in range(start, stop, int(batch_size)):
            yield self.read(a, min(a + int(batch_size), stop), dtype=dtype, check_finite=check_finite)

    def check(self, batch_size: int = DEFAULT_BATCH) -> None:
        """Read every row once and raise for the first bad one (before long work starts)."""
        for _ in self.batches(batch_size):
            pass

    def close(self) -> None:
        """Release the file (arrays already returned stay valid)."""
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> "VectorSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        with open(path, "rb") as f:
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
        int32 for an ``.ivecs`` or ann-benchmarks ``neighbors`` file).
    check_finite : bool
        Refuse rows with NaN or inf (the error names the row).

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


def one_array(name: str | None, where: str, kind: str) -> None:
    """Refuse a name for a file that holds one array."""
    if name is not None:
        raise VectorFileError(f"{where}: a {kind} file holds one array; a dataset name ({name!r}) applies only to "
                              "HDF5 files, Zarr groups and Parquet columns")


def open_file(path: str, magic: bytes, name: Any, fileobj: Any = None, size: int | None = None) -> VectorSource:
    """Open a file (local ``path``, or an open remote ``fileobj``) by its magic bytes and suffix."""
    suffix = Path(path).suffix.lower()
    if magic.startswith(_NPY_MAGIC):
        one_array(name, path, ".npy")
        if fileobj is not None:
            from .remote import open_npy_file

            return open_npy_file(fileobj, path)
        return _open_npy(path)
    if magic.startswith(_HDF5_MAGIC) or (suffix in _HDF5_SUFFIXES and fileobj is None and _is_hdf5(path)):
        return open_hdf5(path if fileobj is None else fileobj, path, name)
    if magic.startswith(_PARQUET_MAGIC):
        from .parquet import open_parquet

        return open_parquet(path if fileobj is None else fileobj, path, name)
    if suffix in _VECS:
        one_array(name, path, suffix)
        return open_vecs(path, _VECS[suffix], fileobj, size)
    if suffix == ".npy":
        raise VectorFileError(f"{path}: not a .npy file (bad magic bytes)")
    if suffix in _HDF5_SUFFIXES:
        raise VectorFileError(f"{path}: not an HDF5 file (bad signature)")
    if suffix in _PARQUET_SUFFIXES:
        raise VectorFileError(f"{path}: not a Parquet file (bad magic bytes)")
    raise VectorFileError(f"{path}: unrecognised format (expected .npy, .fvecs, .bvecs, .ivecs, HDF5, Parquet or a Zarr directory)")


def is_hdf5(path: str) -> bool:
    """Whether ``path`` is an HDF5 file (its signature may follow a user block)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) == _HDF5_MAGIC:
                return True
    except OSError:
        return False
    return _is_hdf5(path)


def _is_hdf5(path: str) -> bool:
    try:
        import h5py
    except ImportError:
        return False
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _open_npy(path: str) -> VectorSource:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        msg = short(exc)
        if "allow_pickle" in msg:
            msg = "holds Python objects (refused: loading would unpickle them)"
        elif "mmap length" in msg or "cannot reshape" in msg:
            msg = "truncated or corrupt (file shorter than its header says)"
        raise VectorFileError(f"{path}: not a readable .npy array: {msg}") from None
    except OSError as exc:
        raise VectorFileError(f"{path}: cannot read: {short(exc)}") from None
    return VectorSource(arr, path)


class RecordRows:
    """Rows of a file of fixed-size records: an optional int32 dimension, then ``dim`` values.

    ``fetch(start, stop)`` returns the records' bytes as a uint8 array (rows, record);
    with a header, every row's dimension is checked when read.
    """

    def __init__(self, fetch: Callable[[int, int], np.ndarray], n: int, dim: int, dtype: np.dtype, header: bool, where: str) -> None:
        self.fetch, self.shape, self.dtype = fetch, (n, dim), dtype
        self.header, self.where = header, where

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(start, stop)
        raw = self.fetch(start, stop)
        head = 4 if self.header else 0
        if self.header and raw.shape[0]:
            dims = raw[:, :4].copy().view("<i4")[:, 0]
            bad = np.flatnonzero(dims != self.shape[1])
            if bad.size:
                i = int(bad[0])
                raise VectorFileError(f"{self.where}: row {start + i} has dimension {int(dims[i])}, the first row "
                                      f"{self.shape[1]} (corrupt, or rows of mixed dimensions)")
        return raw[:, head:].copy().view(self.dtype)


def open_vecs(path: str, dtype: np.dtype, fileobj: Any = None, size: int | None = None) -> VectorSource:
    """Open a TEXMEX ``.fvecs`` / ``.bvecs`` / ``.ivecs`` file (local, or an open remote file)."""
    if fileobj is None:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            first = f.read(4)
    else:
        fileobj.seek(0)
        first = fileobj.read(4)
    if size is None or size < 4 or len(first) < 4:
        raise VectorFileError(f"{path}: empty or truncated {Path(path).suffix} file")
    dim = int(np.frombuffer(first, "<i4")[0])
    if not 1 <= dim <= _MAX_VECS_DIM:
        raise VectorFileError(f"{path}: not a {Path(path).suffix} file (first row claims dimension {dim})")
    rec = 4 + dim * dtype.itemsize
    if size % rec:
        raise VectorFileError(f"{path}: {size} bytes is not a whole number of rows of dimension {dim} "
                              "(truncated, or rows of mixed dimensions)")
    n = size // rec
    if fileobj is None:
        mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, rec))
        fetch: Callable[[int, int], np.ndarray] = lambda a, b: mm[a:b]  # noqa: E731
        close = None
    else:
        fetch = ranged_fetch(fileobj, 0, rec, path)
        close = fileobj.close
    return VectorSource(RecordRows(fetch, n, dim, dtype, True, path), path, close=close)


def ranged_fetch(fileobj: Any, offset: int, rec: int, where: str) -> Callable[[int, int], np.ndarray]:
    """``fetch(start, stop)`` reading records ``start:stop`` of an open file (one seek and read)."""
    lock = threading.Lock()  # a file position is shared: one reader at a time

    def fetch(a: int, b: int) -> np.ndarray:
        with lock:
            fileobj.seek(offset + a * rec)
            buf = fileobj.read((b - a) * rec)
        if len(buf) != (b - a) * rec:
            raise VectorFileError(f"{where}: truncated (rows {a}..{b - 1} end past the end of the file)")
        return np.frombuffer(buf, np.uint8).reshape(b - a, rec)

    return fetch


def open_hdf5(target: Any, where_path: str, name: Any) -> VectorSource:
    """Open dataset ``name`` of an HDF5 file (a path or an open file object)."""
    h5py = require("h5py", "hdf5", f"{where_path}: reading HDF5")
    if name is not None and not isinstance(name, str):
        raise VectorFileError(f"{where_path}: an HDF5 dataset is named by one str, got {name!r}")
    try:
        f = h5py.File(target, "r")
    except (OSError, ValueError) as exc:
        raise VectorFileError(f"{where_path}: cannot open as HDF5: {short(exc)}") from None
    try:
        found: list[str] = []
        f.visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
        if name is None:
            raise VectorFileError(f"{where_path}: an HDF5 file; name a dataset (dataset=NAME or {where_path}:NAME); "
                                  f"datasets: {', '.join(found) or 'none'}")
        node = f.get(name)
        if not isinstance(node, h5py.Dataset):
            what = "no dataset" if node is None else "a group, not a dataset,"
            raise VectorFileError(f"{where_path}: {what} '{name}'; datasets: {', '.join(found) or 'none'}")
        dist = f.attrs.get("distance")
        if isinstance(dist, bytes):
            dist = dist.decode(errors="replace")
        hint = DISTANCE_METRICS.get(str(dist)) if dist is not None else None
        src = VectorSource(node, f"{where_path}:{name}", metric_hint=hint, close=f.close)
    except BaseException:
        f.close()
        raise
    return src


def open_zarr(path: str, name: Any, *, local: bool) -> VectorSource:
    """Open a Zarr array, or array ``name`` of a Zarr group (a directory or an fsspec URL)."""
    import zarr

    if name is not None and not isinstance(name, str):
        raise VectorFileError(f"{path}: a Zarr array is named by one str, got {name!r}")
    where = path if name is None else f"{path}:{name}"
    if local and not any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup")):
        raise VectorFileError(f"{path}: a directory, but not a Zarr array (no zarr.json or .zarray)")
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises many kinds for bad metadata
        raise VectorFileError(f"{path}: cannot open as Zarr: {short(exc)}") from None
    if isinstance(node, zarr.Group):
        if "hnsw_numba" in node.attrs:
            raise VectorFileError(f"{path}: a saved hnsw_numba index, not an array of vectors")
        arrays = sorted(k for k, v in node.members(max_depth=None) if isinstance(v, zarr.Array))
        if name is None:
            raise VectorFileError(f"{path}: a Zarr group; name an array (dataset=NAME or {path}:NAME); "
                                  f"arrays: {', '.join(arrays) or 'none'}")
        try:
            node = node[name]
        except KeyError:
            raise VectorFileError(f"{path}: no array '{name}' (arrays: {', '.join(arrays) or 'none'})") from None
        if not isinstance(node, zarr.Array):
            raise VectorFileError(f"{where}: a Zarr group, not an array")
    elif name is not None:
        raise VectorFileError(f"{path}: a Zarr array; a name ({name!r}) applies only to groups")
    return VectorSource(node, where)
