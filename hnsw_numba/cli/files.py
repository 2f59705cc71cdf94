"""Files in and out of the ``hnsw-numba`` command line.

Inputs (vectors and queries), named ``PATH`` or ``PATH:NAME``:

* ``.npy`` — a 2-D numeric array (memory-mapped; never unpickled);
* ``.fvecs`` — the TEXMEX format (per row an int32 dimension, then that many float32);
* HDF5 (``.hdf5`` / ``.h5``) — ann-benchmarks files: ``train`` for ``build``, ``test``
  for ``search``; ``file.hdf5:NAME`` reads another dataset;
* a Zarr array (v2 or v3) — a directory; ``group.zarr:NAME`` reads an array of a group.

The format is recognised from the file's first bytes (a directory is taken for Zarr), the
name's suffix only decides ``.fvecs``. Keys files: ``.npy`` (1-D integer or unicode
array) or text, one key per line (ints when every line is an integer, else strings).

Search results: ``RESULTS.zarr`` is a Zarr group with arrays ``keys`` and ``distances``;
any other ``RESULTS`` is a prefix of two ``.npy`` files, ``RESULTS.keys.npy`` and
``RESULTS.distances.npy`` (a trailing ``.npy`` in ``RESULTS`` is dropped). Every problem
with a file is a :class:`DataError` whose message names the file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "DataError",
    "VectorInput",
    "open_vectors",
    "read_keys",
    "open_keys_as_text",
    "read_index_meta",
    "open_index",
    "results_paths",
    "write_results",
    "check_out",
    "ProgressLine",
]

_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")
_INT_LINE = re.compile(r"[+-]?\d+\Z")


class DataError(Exception):
    """A problem with an input or output file: printed on one line, exit status 1."""


# ============================================================================ inputs
@dataclass
class VectorInput:
    """A 2-D array of vectors read in row blocks (memory map, HDF5 dataset or Zarr array)."""

    where: str  # how to name it in messages: "file.hdf5:train"
    data: Any  # supports .shape, .dtype and data[a:b] -> ndarray
    metric_hint: str | None = None  # from an ann-benchmarks 'distance' attribute
    close: Callable[[], None] = field(default=lambda: None)

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as C-contiguous float32, after checking they are finite."""
        try:
            raw = np.asarray(self.data[start:stop])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"{self.where}: cannot read rows {start}..{stop - 1}: {_short(exc)}") from exc
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.ascontiguousarray(raw, dtype=np.float32)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            overflow = raw.dtype.kind in "fiu" and bool(np.isfinite(raw[i]).all())
            what = "a value outside the float32 range" if overflow else "NaN or inf"
            raise DataError(f"{self.where}: row {start + i} contains {what}")
        return x

    def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n, size):
            yield start, self.block(start, min(start + size, self.n))

    def check_finite(self, size: int = 65536) -> None:
        """Scan every row once (fail before any long work starts)."""
        for _ in self.blocks(size):
            pass

    def read_all(self) -> np.ndarray:
        return self.block(0, self.n)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``PATH`` or ``PATH:NAME`` (the longest existing prefix before a ':' is the path)."""
    if os.path.lexists(spec):
        return spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and os.path.lexists(head):
        return head, tail or None
    raise DataError(f"{spec}: no such file or directory")


def _check_array(arr: Any, where: str) -> None:
    shape = tuple(arr.shape)
    dtype = np.dtype(arr.dtype) if not hasattr(arr.dtype, "kind") else arr.dtype
    if len(shape) != 2:
        raise DataError(f"{where}: expected a 2-D array (rows x dim), got shape {shape}")
    if dtype.kind not in "fiu" and getattr(dtype, "name", "") != "bfloat16":
        raise DataError(f"{where}: expected numbers, got dtype {dtype}")
    if shape[0] < 1 or shape[1] < 1:
        raise DataError(f"{where}: empty array of shape {shape}")


def open_vectors(spec: str, default_dataset: str = "train") -> VectorInput:
    """Open vectors from ``spec`` (see the module docstring); nothing large is read yet."""
    path, name = _split_spec(spec)
    if os.path.isdir(path):
        return _open_zarr(path, name)
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or _short(exc)}") from None
    suffix = Path(path).suffix.lower()
    if magic.startswith(_NPY_MAGIC):
        _no_name(path, name, ".npy")
        return _open_npy(path)
    if magic == _HDF5_MAGIC or (suffix in _HDF5_SUFFIXES and _is_hdf5(path)):
        return _open_hdf5(path, name or default_dataset, explicit=name is not None)
    if suffix == ".fvecs":
        _no_name(path, name, ".fvecs")
        return _open_fvecs(path)
    if suffix == ".npy":
        raise DataError(f"{path}: not a .npy file (bad magic bytes)")
    if suffix in _HDF5_SUFFIXES:
        raise DataError(f"{path}: not an HDF5 file (bad signature)")
    raise DataError(f"{path}: unrecognised format (expected .npy, .fvecs, HDF5 or a Zarr array directory)")


def _no_name(path: str, name: str | None, kind: str) -> None:
    if name is not None:
        raise DataError(f"{path}: a {kind} file holds one array; ':{name}' applies only to HDF5 files and Zarr groups")


def _is_hdf5(path: str) -> bool:
    try:
        import h5py
    except ImportError:
        return False
    return bool(h5py.is_hdf5(path))


def _open_npy(path: str) -> VectorInput:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        msg = _short(exc)
        if "allow_pickle" in msg:
            msg = "holds Python objects (refused: loading would unpickle them)"
        elif "mmap length" in msg or "cannot reshape" in msg:
            msg = "truncated or corrupt (file shorter than its header says)"
        raise DataError(f"{path}: not a readable .npy array: {msg}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {_short(exc)}") from None
    _check_array(arr, path)
    return VectorInput(path, arr)


def _open_fvecs(path: str) -> VectorInput:
    size = os.path.getsize(path)
    if size < 4:
        raise DataError(f"{path}: empty or truncated .fvecs file")
    with open(path, "rb") as f:
        dim = int(np.frombuffer(f.read(4), "<i4")[0])
    if not 1 <= dim <= 65536:
        raise DataError(f"{path}: not an .fvecs file (first row claims dimension {dim})")
    row = 4 * (dim + 1)
    if size % row:
        raise DataError(f"{path}: {size} bytes is not a whole number of rows of dimension {dim} (truncated or mixed dimensions)")
    raw = np.memmap(path, dtype="<f4", mode="r", shape=(size // row, dim + 1))
    heads = raw.view("<i4")[:, 0]
    bad = np.flatnonzero(heads != dim)
    if bad.size:
        raise DataError(f"{path}: row {int(bad[0])} has dimension {int(heads[bad[0]])}, the first row {dim}")
    return VectorInput(path, raw[:, 1:])


def _open_hdf5(path: str, name: str, explicit: bool) -> VectorInput:
    try:
        import h5py
    except ImportError:
        raise DataError(f"{path}: reading HDF5 needs h5py (pip install h5py)") from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot open as HDF5: {_short(exc)}") from None
    try:
        node = f.get(name)
        if not isinstance(node, h5py.Dataset):
            found: list[str] = []
            f.visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
            what = "no dataset" if node is None else "a group, not a dataset,"
            hint = "" if explicit else f" (name one as {path}:NAME)"
            raise DataError(f"{path}: {what} '{name}'{hint}; datasets: {', '.join(found) or 'none'}")
        where = f"{path}:{name}"
        _check_array(node, where)
        dist = f.attrs.get("distance")
        if isinstance(dist, bytes):
            dist = dist.decode(errors="replace")
        hint = {"angular": "cosine", "cosine": "cosine", "euclidean": "l2", "l2": "l2", "dot": "ip", "ip": "ip"}.get(str(dist)) if dist is not None else None
    except BaseException:
        f.close()
        raise
    return VectorInput(where, node, hint, f.close)


def _open_zarr(path: str, name: str | None) -> VectorInput:
    import zarr

    where = path if name is None else f"{path}:{name}"
    if not any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup")):
        raise DataError(f"{path}: a directory, but not a Zarr array (no zarr.json or .zarray)")
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises many kinds for bad metadata
        raise DataError(f"{path}: cannot open as Zarr: {_short(exc)}") from None
    if isinstance(node, zarr.Group):
        if "hnsw_numba" in node.attrs:
            raise DataError(f"{path}: a saved hnsw_numba index, not an array of vectors")
        arrays = sorted(k for k, v in node.members(max_depth=None) if isinstance(v, zarr.Array))
        if name is None:
            raise DataError(f"{path}: a Zarr group; name an array as {path}:NAME (arrays: {', '.join(arrays) or 'none'})")
        try:
            node = node[name]
        except KeyError:
            raise DataError(f"{path}: no array '{name}' (arrays: {', '.join(arrays) or 'none'})") from None
        if not isinstance(node, zarr.Array):
            raise DataError(f"{where}: a Zarr group, not an array")
    elif name is not None:
        raise DataError(f"{path}: a Zarr array; ':{name}' applies only to groups")
    _check_array(node, where)
    return VectorInput(where, node)


# ============================================================================ keys
def open_keys_as_text(path: str) -> list[str]:
    """The keys of ``path`` as strings, integer-looking lines included (for str-keyed indexes)."""
    return read_keys(path, unique=False, as_text=True)


def read_keys(path: str, expected: int | None = None, *, unique: bool = True, as_text: bool = False) -> list | np.ndarray:
    """Keys from ``path``: an int64 array, or a list of str.

    ``expected`` is the number of keys required (one per input row); ``unique`` refuses
    duplicates, naming the first; ``as_text`` returns every key as a str.
    """
    if not os.path.lexists(path):
        raise DataError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a keys file (.npy or one key per line)")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or _short(exc)}") from None
    keys: list | np.ndarray
    if magic == _NPY_MAGIC:
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path}: not a readable .npy array of keys: {_short(exc)}") from None
        if arr.ndim != 1:
            raise DataError(f"{path}: keys must be a 1-D array, got shape {arr.shape}")
        if as_text:
            keys = [str(k) for k in arr.tolist()]
        elif arr.dtype.kind == "i":
            keys = arr.astype(np.int64)
        elif arr.dtype.kind == "u":
            if arr.size and int(arr.max()) > 2**63 - 1:
                raise DataError(f"{path}: key {int(arr.max())} does not fit in int64")
            keys = arr.astype(np.int64)
        elif arr.dtype.kind == "U":
            keys = arr.tolist()
        else:
            raise DataError(f"{path}: keys must be integers or strings, got dtype {arr.dtype}")
    else:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); keys are one per line, or a .npy array") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
        if any(ln == "" for ln in lines):
            raise DataError(f"{path}: line {lines.index('') + 1} is empty (one key per line)")
        if lines and not as_text and all(_INT_LINE.match(ln) for ln in lines):
            values = [int(ln) for ln in lines]
            big = next((i for i, v in enumerate(values) if not -(2**63) <= v < 2**63), None)
            if big is not None:
                raise DataError(f"{path}: line {big + 1}: key {values[big]} does not fit in int64")
            keys = np.asarray(values, dtype=np.int64)
        else:
            keys = lines
    n = len(keys)
    if expected is not None and n != expected:
        raise DataError(f"{path}: {n:,} keys for {expected:,} vectors")
    if unique:
        if isinstance(keys, np.ndarray):
            uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
            if (counts > 1).any():
                dup = uniq[counts > 1][0]
                lines_of = np.flatnonzero(keys == dup)[:2] + 1
                raise DataError(f"{path}: key {int(dup)} appears twice (entries {lines_of[0]} and {lines_of[1]})")
        elif len(set(keys)) != n:
            seen: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k in seen:
                    raise DataError(f"{path}: key {k!r} appears twice (entries {seen[k] + 1} and {i + 1})")
                seen[k] = i
    return keys


# ============================================================================ indexes
def read_index_meta(path: str) -> dict:
    """The attributes of a saved index: ``{"root", "graph", "vectors"}`` (checked for presence only)."""
    from ..io.swap import resolve_target
    from ..io.zarr_io import open_reader
    from ..core.errors import HnswError

    if not os.path.lexists(path):
        raise DataError(f"{path}: no such index (file or directory)")
    if os.path.isfile(path) and not path.lower().endswith(".zip"):
        raise DataError(f"{path}: not a saved index (a saved index is a directory, or a .zip file)")
    if os.path.isdir(path):
        meta = os.path.join(path, "zarr.json")
        if not os.path.exists(meta):
            raise DataError(f"{path}: not a saved index (no zarr.json in the directory)")
        try:
            import json

            with open(meta, encoding="utf-8") as f:
                node_type = json.load(f).get("node_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: not a saved hnsw_numba index (unreadable zarr.json: {_short(exc)})") from None
        if node_type != "group":
            raise DataError(f"{path}: not a saved hnsw_numba index (a Zarr {node_type}, not a group)")
    try:
        with open_reader(resolve_target(path, write=False)) as r:
            root = r.attrs("").get("hnsw_numba")
            if not isinstance(root, dict):
                raise DataError(f"{path}: not a saved hnsw_numba index (no 'hnsw_numba' attribute)")
            if root.get("kind") != "index":
                raise DataError(f"{path}: holds a saved {root.get('kind')!r}, not a whole index (graph and vectors)")
            graph = r.attrs("graph").get("hnsw_numba") or {}
            vectors = r.attrs("vectors").get("hnsw_numba") or {}
    except (HnswError, OSError) as exc:
        raise DataError(_with_path(path, exc)) from None
    return {"root": root, "graph": graph, "vectors": vectors}


def _with_path(path: str, exc: BaseException) -> str:
    msg = _short(exc)
    return msg if str(path) in msg else f"{path}: {msg}"


def metric_of(meta: dict, path: str):
    from ..core.errors import HnswError
    from ..core.metrics import metric_from_name

    try:
        return metric_from_name(str(meta["graph"].get("metric")))
    except HnswError:
        raise DataError(f"{path}: unknown metric {meta['graph'].get('metric')!r} in the saved index") from None


def open_index(path: str, *, verify: bool = False) -> tuple[Any, Any, dict]:
    """``(index, store, meta)`` of a saved index, the metric taken from its metadata.

    A local directory's vectors are memory-mapped (copy-on-write); ``verify`` also checks
    their checksum (the graph is always checked).
    """
    from ..core.errors import HnswError
    from ..io.persist import load

    meta = read_index_meta(path)
    metric = metric_of(meta, path)
    mmap = os.path.isdir(path)
    try:
        index, store = load(path, metric, mmap=mmap, verify=verify)
    except (HnswError, OSError) as exc:
        if mmap and "mmap needs" in str(exc):  # saved in several chunks: read it into memory
            try:
                index, store = load(path, metric)
            except (HnswError, OSError) as exc2:
                raise DataError(_with_path(path, exc2)) from None
        else:
            raise DataError(_with_path(path, exc)) from None
    return index, store, meta


# ============================================================================ outputs
def check_out(path: str, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite``; the parent directory must exist."""
    if os.path.lexists(path) and not overwrite:
        raise DataError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: directory {parent} is not writable")


def results_paths(out: str) -> list[str]:
    """Files (or the Zarr directory) that ``write_results`` creates for ``out``."""
    if out.rstrip("/").lower().endswith(".zarr"):
        return [out.rstrip("/")]
    prefix = out[:-4] if out.lower().endswith(".npy") else out
    return [f"{prefix}.keys.npy", f"{prefix}.distances.npy"]


def _result_keys(keys: np.ndarray) -> np.ndarray:
    """int64 keys as they are (padding -1); object keys (str, padding None) as unicode (padding '')."""
    if keys.dtype != object:
        return keys
    return np.array([["" if k is None else str(k) for k in row] for row in keys.tolist()], dtype=str).reshape(keys.shape)


def write_results(out: str, keys: np.ndarray, dists: np.ndarray) -> list[str]:
    """Write search results (see the module docstring); each file appears whole or not at all."""
    from ..io.swap import remove, swap_in, tmp_sibling

    paths = results_paths(out)
    keys = _result_keys(keys)
    if len(paths) == 1:
        import zarr

        target = Path(paths[0])
        tmp = tmp_sibling(target)
        try:
            g = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes={"hnsw_numba": {"kind": "search_results"}})
            if keys.dtype.kind == "U":
                arr = g.create_array("keys", shape=keys.shape, dtype=str, chunks=keys.shape or (1,))
                arr[...] = keys.astype(object)
            else:
                g.create_array("keys", data=keys)
            g.create_array("distances", data=dists)
            swap_in(tmp, target)
        finally:
            remove(tmp)
        return paths
    for path, arr in zip(paths, (keys, dists)):
        target = Path(path)
        tmp = tmp_sibling(target)
        try:
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, target)
        finally:
            remove(tmp)
    return paths


def path_bytes(path: str) -> int:
    """Bytes on disk of a file or directory tree."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ============================================================================ progress
class ProgressLine:
    """Progress on stderr: a redrawn bar on a terminal, else a line every few seconds.

    The first update always prints (scripts and tests can tell that work has begun).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, interval: float | None = None) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 2.0)
        self.done = 0
        self.t0 = time.perf_counter()
        self._last = -1e9
        self._drawn = False

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._drawn and now - self._last < self.interval and self.done < self.total:
            return
        self._last = now
        self._drawn = True
        el = now - self.t0
        pct = 100.0 * self.done / max(self.total, 1)
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = f"{self.desc}: {self.done:,}/{self.total:,} ({pct:3.0f}%) {el:.1f} s, {rate:,.0f}/s, eta {eta:.0f} s"
        if self.tty:
            width = 24
            fill = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r{self.desc}: [{'#' * fill}{'.' * (width - fill)}] {text[len(self.desc) + 2:]}\x1b[K")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> "ProgressLine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
