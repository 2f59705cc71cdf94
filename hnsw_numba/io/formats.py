"""Openers of the formats (a local path, or an open remote file): .npy, TEXMEX, HDF5, Zarr.

Each returns a :class:`~hnsw_numba.io.source.VectorSource`; :func:`open_file` picks the opener
from a file's first bytes and suffix (Parquet: :mod:`hnsw_numba.io.parquet`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import VectorFileError, persist_error
from .localfiles import check_regular_tree
from .read_faults import thread_refused
from .source import VectorSource, require, short

__all__ = ["open_file", "open_npy", "open_npy_file", "open_vecs", "open_hdf5", "open_zarr", "is_hdf5", "one_array", "RecordRows",
           "ranged_fetch", "DISTANCE_METRICS", "NPY_MAGIC", "HDF5_MAGIC", "PARQUET_MAGIC", "TEXMEX_TYPES"]

NPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PARQUET_MAGIC = b"PAR1"
_HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")
_PARQUET_SUFFIXES = (".parquet", ".pq")
#: TEXMEX suffix -> element type (each row: an int32 dimension, then the elements).
TEXMEX_TYPES = {".fvecs": np.dtype("<f4"), ".bvecs": np.dtype("u1"), ".ivecs": np.dtype("<i4")}
_MAX_VECS_DIM = 1 << 20  # a larger first "dimension" means the file is not TEXMEX
#: ann-benchmarks ``distance`` attribute -> this library's metric name.
DISTANCE_METRICS = {"angular": "cosine", "cosine": "cosine", "euclidean": "l2", "l2": "l2", "dot": "ip", "ip": "ip"}


def is_hdf5(path: str) -> bool:
    """Whether ``path`` is an HDF5 file (its signature may follow a user block)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) == HDF5_MAGIC:
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


def open_npy(path: str) -> VectorSource:
    """Memory-map a local ``.npy`` file (never unpickled)."""
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
        _no_external_links(f, name, where_path, h5py)
        node = f.get(name)
        if not isinstance(node, h5py.Dataset):
            what = "no dataset" if node is None else "a group, not a dataset,"
            raise VectorFileError(f"{where_path}: {what} '{name}'; datasets: {', '.join(found) or 'none'}")
        dist = f.attrs.get("distance")
        if isinstance(dist, bytes):
            dist = dist.decode(errors="replace")
        hint = DISTANCE_METRICS.get(str(dist)) if dist is not None else None
        # VectorSource refuses rows kept outside the file or never written (check_stored_rows)
        src = VectorSource(node, f"{where_path}:{name}", metric_hint=hint, close=f.close)
    except BaseException:
        f.close()
        raise
    return src


def _no_external_links(f: Any, name: str, where: str, h5py: Any, depth: int = 0) -> None:
    """Refuse a dataset path through an HDF5 external link (soft links followed): following
    it opens another file (a pipe there blocks the open forever)."""
    parts = [p for p in name.split("/") if p]
    for i in range(len(parts)):
        prefix = "/" + "/".join(parts[: i + 1])
        link = f.get(prefix, getlink=True)
        if link is None:
            return
        if isinstance(link, h5py.ExternalLink):
            raise VectorFileError(f"{where}: '{prefix}' links to another file ({link.filename}): not followed")
        if isinstance(link, h5py.SoftLink):
            if depth > 16:
                raise VectorFileError(f"{where}: '{prefix}': too many soft links")
            target = link.path if link.path.startswith("/") else "/".join(parts[:i] + [link.path])
            _no_external_links(f, target, where, h5py, depth + 1)


def open_zarr(path: str, name: Any, *, local: bool) -> VectorSource:
    """Open a Zarr array, or array ``name`` of a Zarr group (a directory or an fsspec URL)."""
    import zarr

    if name is not None and not isinstance(name, str):
        raise VectorFileError(f"{path}: a Zarr array is named by one str, got {name!r}")
    where = path if name is None else f"{path}:{name}"
    if local and not any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup")):
        raise VectorFileError(f"{path}: a directory, but not a Zarr array (no zarr.json or .zarray)")
    if local:  # a chunk that is a pipe blocks the read forever, one linked to a device never ends
        try:
            check_regular_tree(Path(path), lambda msg: VectorFileError(f"{path}: {msg}"), follow_links=True)
        except OSError as exc:
            raise VectorFileError(f"{path}: cannot list the directory: {short(exc)}") from None
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises many kinds for bad metadata
        refused = thread_refused(exc)
        if refused is not None:  # the OS refused zarr's I/O thread: the file may be good
            raise persist_error(refused, f"{path}: cannot read") from exc
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


def one_array(name: str | None, where: str, kind: str) -> None:
    """Refuse a name for a file that holds one array."""
    if name is not None:
        raise VectorFileError(f"{where}: a {kind} file holds one array; a dataset name ({name!r}) applies only to "
                              "HDF5 files, Zarr groups and Parquet columns")


def open_file(path: str, magic: bytes, name: Any, fileobj: Any = None, size: int | None = None) -> VectorSource:
    """Open a file (local ``path``, or an open remote ``fileobj``) by its magic bytes and suffix."""
    suffix = Path(path).suffix.lower()
    if magic.startswith(NPY_MAGIC):
        one_array(name, path, ".npy")
        if fileobj is not None:
            return open_npy_file(fileobj, path)
        return open_npy(path)
    if magic.startswith(HDF5_MAGIC) or (suffix in _HDF5_SUFFIXES and fileobj is None and is_hdf5(path)):
        return open_hdf5(path if fileobj is None else fileobj, path, name)
    if magic.startswith(PARQUET_MAGIC):
        from .parquet import open_parquet

        return open_parquet(path if fileobj is None else fileobj, path, name)
    if suffix in TEXMEX_TYPES:
        one_array(name, path, suffix)
        return open_vecs(path, TEXMEX_TYPES[suffix], fileobj, size)
    if suffix == ".npy":
        raise VectorFileError(f"{path}: not a .npy file (bad magic bytes)")
    if suffix in _HDF5_SUFFIXES:
        raise VectorFileError(f"{path}: not an HDF5 file (bad signature)")
    if suffix in _PARQUET_SUFFIXES:
        raise VectorFileError(f"{path}: not a Parquet file (bad magic bytes)")
    raise VectorFileError(f"{path}: unrecognised format (expected .npy, .fvecs, .bvecs, .ivecs, HDF5, Parquet or a Zarr directory)")


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
