"""Files in and out of the ``hnsw-numba`` command line.

Inputs (vectors and queries), named ``PATH`` or ``PATH:NAME``, are read by
:mod:`hnsw_numba.io.vectors`: ``.npy`` (memory-mapped; never unpickled), ``.fvecs`` /
``.bvecs`` / ``.ivecs``, HDF5 (ann-benchmarks files: ``train`` for ``build``, ``test`` for
``search``; ``file.hdf5:NAME`` reads another dataset), a Zarr array (``group.zarr:NAME`` for
an array of a group), Parquet (``table.parquet:COLUMN``) and fsspec URLs. Keys files: ``.npy`` (1-D integer or unicode
array) or text, one key per line (ints when every line is ASCII digits with an optional sign, else strings).

Search results: ``RESULTS.zarr`` is a Zarr group with arrays ``keys`` and ``distances``; any other ``RESULTS`` is a
prefix of two ``.npy`` files, ``RESULTS.keys.npy`` and ``RESULTS.distances.npy`` (a trailing ``.npy`` in ``RESULTS``
is dropped; a directory is refused). Keys (``commands.result_keys``): int64 as the index gives them (padding -1); in
an index of int keys past int64, uint64 (padding 2**64 - 1); else NumPy unicode (ints in decimal, padding ''). Refused
before anything is written (DataError): keys the output would change or read as another, int 1 and str '1' both live,
and in files an int >= 2**64 - 1 or a str '' or ending in NUL (NumPy's unicode drops trailing NULs). stdout escapes
keys' backslashes, tabs and line breaks (``KEY_ESCAPES``). Each file is replaced whole, the Zarr group
in one swap; the two ``.npy`` files are both written whole before either is renamed over its target, so a run that
fails writing them (disk full, and says so) leaves the previous pair; only a failure between the two renames leaves the
new keys beside the previous distances: write to ``RESULTS.zarr`` where the pair must change together in every case.
Every problem with a file is a :class:`DataError` (a bad row found while reading vectors: the readers'
:class:`~hnsw_numba.VectorFileError`) whose message names the file.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import HnswError, VectorFileError
from ..core.keymap import MAX_INT_KEY_DIGITS, check_new_keys, normalize_keys
from ..io.source import short
from ..io.vectors import VectorSource, is_hdf5, is_url, split_spec
from ..io.vectors import open_vectors as open_source

__all__ = [
    "DataError",
    "open_vectors",
    "build_metric",
    "read_keys",
    "open_keys_as_text",
    "read_index_meta",
    "open_index",
    "results_paths",
    "write_results",
    "check_out",
    "ProgressLine",
    "UINT64_PAD",
    "KEY_ESCAPES",
]

_NPY_MAGIC = b"\x93NUMPY"
_INT_LINE = re.compile(r"[+-]?[0-9]+\Z")  # ASCII digits only: int() reads '١' and '３' too
UINT64_PAD = 2**64 - 1  # pads uint64 result keys (usearch's "no key" too)
#: Backslash, tab and line breaks in keys printed as Python writes them: one result a line, four fields.
KEY_ESCAPES = {ord(c): repr(c)[1:-1] for c in "\\\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class DataError(Exception):
    """A problem with an input or output file: printed on one line, exit status 1."""


# ============================================================================ inputs
def open_vectors(spec: str, default_dataset: str = "train") -> VectorSource:
    """Open vectors from ``spec`` (see the module docstring); nothing large is read yet.

    The readers are :mod:`hnsw_numba.io.vectors`'s; a local HDF5 file without a ``:NAME``
    reads ``default_dataset``. A problem with the file is a :class:`DataError`.
    """
    try:
        if is_url(spec):
            return open_source(spec)
        path, name = split_spec(spec)
        _regular_input(path)
        if name is None and not os.path.isdir(path) and is_hdf5(path):
            name = default_dataset
        return open_source(path, dataset=name)
    except VectorFileError as exc:
        raise DataError(str(exc)) from exc


def _regular_input(path: str) -> None:
    """Refuse a pipe or device: each input is opened more than once (its format sniffed, then
    read), and a pipe's second open waits for a writer that is gone."""
    if os.path.exists(path) and not os.path.isdir(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise DataError(f"{path}: not a regular file (a pipe or device); save the stream to a file first (e.g. cat > data.npy)")


def build_metric(src: VectorSource, given: str | None) -> str:
    """The metric to build with: ``given`` (``--metric``), else the one the file declares, else l2.

    Parameters
    ----------
    src : VectorSource
        The opened input.
    given : str or None
        The ``--metric`` of the command line.

    Returns
    -------
    str
        A metric name.

    Raises
    ------
    DataError
        The file declares a ``distance`` this library does not support (``'hamming'``) and
        no ``--metric`` was given: building with l2 would answer another question.
    """
    if given or src.metric_hint:
        return given or src.metric_hint
    attrs = getattr(getattr(src.data, "file", None), "attrs", None)  # an HDF5 file's own attributes
    declared = attrs.get("distance") if attrs is not None else None
    if declared is not None:
        if isinstance(declared, bytes):
            declared = declared.decode(errors="replace")
        raise DataError(f"{src.where}: distance {str(declared)!r} is not supported (angular, euclidean or dot); "
                        "give --metric to choose one")
    return "l2"


# ============================================================================ keys
def open_keys_as_text(path: str) -> list[str]:
    """The keys of ``path`` as strings, integer-looking lines included (for str-keyed indexes)."""
    return read_keys(path, unique=False, as_text=True)


def read_keys(path: str, expected: int | None = None, *, unique: bool = True, as_text: bool = False) -> list | np.ndarray:
    """Keys from ``path``: an int64 array, a uint64 (``.npy``) or object (text) array of ints past int64, or a list of str.

    ``expected`` is the number of keys required (one per input row); ``unique`` (new keys: build's)
    refuses duplicates, naming the first, and what the index refuses (negative ints); ``as_text``
    returns every key as a str.
    """
    if not os.path.lexists(path):
        raise DataError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a keys file (.npy or one key per line)")
    _regular_input(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or short(exc)}") from None
    keys: list | np.ndarray
    if magic == _NPY_MAGIC:
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path}: not a readable .npy array of keys: {short(exc)}") from None
        if arr.ndim != 1:
            raise DataError(f"{path}: keys must be a 1-D array, got shape {arr.shape}")
        if as_text:
            keys = [str(k) for k in arr.tolist()]
        elif arr.dtype.kind in "iu":  # uint64 past int64 as it is: hnswlib's labels
            keys = arr if arr.dtype == np.uint64 and arr.size and int(arr.max()) > 2**63 - 1 else arr.astype(np.int64)
        elif arr.dtype.kind == "U":
            keys = arr.tolist()
            if "" in keys:  # as an empty line of a text file: "" pads str results
                raise DataError(f"{path}: key {keys.index('')} is the empty string, which pads str search results")
        else:
            raise DataError(f"{path}: keys must be integers or strings, got dtype {arr.dtype}")
    else:
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:  # a byte-order mark (Notepad, Excel's CSV UTF-8) is no key
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
            long = next((i for i, ln in enumerate(lines) if len(ln.lstrip("+-")) > MAX_INT_KEY_DIGITS), None)
            if long is not None:  # int() refuses past 4,300 digits; the index past MAX_INT_KEY_DIGITS
                raise DataError(f"{path}: line {long + 1}: an int key of more than {MAX_INT_KEY_DIGITS:,} digits")
            values = [int(ln) for ln in lines]
            fits = all(-(2**63) <= v < 2**63 for v in values)
            keys = np.asarray(values, dtype=np.int64) if fits else np.array(values, dtype=object)
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
        try:  # before any work: an insert would refuse them after the rows before
            check_new_keys(*normalize_keys(keys, n))
        except HnswError as exc:
            raise DataError(f"{path}: {exc}") from None
    return keys


# ============================================================================ indexes
def read_index_meta(path: str) -> dict:
    """The attributes of a saved index: ``{"root", "graph", "vectors"}`` (checked for presence only).

    Read as a load reads (:func:`hnsw_numba.io.persist.across_swaps`): the aside copy of a
    save killed between its swap's two renames is put back, and a read that a save's swap
    overtakes runs again.
    """
    from ..io.persist import across_swaps
    from ..io.swap import resolve_target

    if os.path.isfile(path) and not path.lower().endswith(".zip"):
        raise DataError(f"{path}: not a saved index (a saved index is a directory, or a .zip file)")
    try:
        tgt = resolve_target(path, write=False)
        return across_swaps(tgt, lambda: _read_meta(tgt, path))
    except FileNotFoundError as exc:
        if not os.path.lexists(path):  # and no aside copy of an interrupted save
            raise DataError(f"{path}: no such index (file or directory)") from None
        raise DataError(_with_path(path, exc)) from None
    except (HnswError, OSError) as exc:
        raise DataError(_with_path(path, exc)) from None


def _read_meta(tgt: Any, path: str) -> dict:
    """One read of :func:`read_index_meta`; a file a swap moved meanwhile is IndexFormatError (read again)."""
    import json

    from ..core.errors import IndexFormatError
    from ..io.swap import local_dir_for_read
    from ..io.zarr_io import open_reader

    if tgt.kind == "dir":
        meta = local_dir_for_read(tgt.path) / "zarr.json"
        try:
            with open(meta, encoding="utf-8") as f:
                node_type = json.load(f).get("node_type")
        except FileNotFoundError:
            raise IndexFormatError(f"{path}: not a saved index (no zarr.json in the directory)") from None
        except (OSError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: not a saved hnsw_numba index (unreadable zarr.json: {short(exc)})") from None
        if node_type != "group":
            raise DataError(f"{path}: not a saved hnsw_numba index (a Zarr {node_type}, not a group)")
    with open_reader(tgt) as r:
        root = r.attrs("").get("hnsw_numba")
        if not isinstance(root, dict):
            raise DataError(f"{path}: not a saved hnsw_numba index (no 'hnsw_numba' attribute)")
        if root.get("kind") != "index":
            raise DataError(f"{path}: holds a saved {root.get('kind')!r}, not a whole index (graph and vectors)")
        graph = r.attrs("graph").get("hnsw_numba") or {}
        vectors = r.attrs("vectors").get("hnsw_numba") or {}
    return {"root": root, "graph": graph, "vectors": vectors}


def _with_path(path: str, exc: BaseException) -> str:
    msg = short(exc)
    return msg if str(path) in msg else f"{path}: {msg}"


def metric_of(meta: dict, path: str):
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
    from ..io.persist import load

    meta = read_index_meta(path)
    metric = metric_of(meta, path)
    mmap = not os.path.isfile(path)  # a directory: missing only while a save swaps it
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
    """Refuse an existing ``path`` unless ``overwrite``; the parent directory must exist. A
    symlink counts as what it leads to, as the save follows it (``io.places.through_link``):
    one that leads nowhere yet is written through (nothing is replaced), a loop is refused."""
    from ..io.places import through_link

    target = through_link(Path(path))
    if os.path.islink(target):  # through_link keeps a link only for a loop of links
        raise DataError(f"{path}: a loop of symbolic links (nothing can be written through it)")
    if os.path.lexists(target) and not overwrite:
        raise DataError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise DataError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: directory {parent} is not writable")


def results_paths(out: str) -> list[str]:
    """Files (or the Zarr directory) that ``write_results`` creates for ``out``. A prefix that
    names a directory (an existing one, or a path ending in a separator) is a DataError: its
    files would be hidden ones inside it (``DIR/.keys.npy``) or sit beside it."""
    if out.rstrip("/").lower().endswith(".zarr"):
        return [out.rstrip("/")]
    prefix = out[:-4] if out.lower().endswith(".npy") else out
    if os.path.isdir(out) or os.path.basename(prefix) in ("", ".", ".."):
        folder = out if os.path.isdir(out) or not os.path.basename(out) else os.path.dirname(prefix) or "."
        raise DataError(f"{out}: {'is' if os.path.isdir(out) else 'names'} a directory; --out RESULTS writes the files "
                        f"RESULTS.keys.npy and RESULTS.distances.npy (or the Zarr group RESULTS.zarr): name them, "
                        f"e.g. --out {os.path.join(folder, 'results')}")
    return [f"{prefix}.keys.npy", f"{prefix}.distances.npy"]


def write_results(out: str, keys: np.ndarray, dists: np.ndarray, *, replace: bool = True) -> list[str]:
    """Write search results (see the module docstring; ``keys`` int64, uint64 or unicode) and return the paths written.

    Each file is written to a temporary sibling, flushed and renamed over its target, so a
    killed or failed run leaves each target whole: the previous file or the new one.
    ``replace`` False creates them only (TargetExistsError when one exists, see :func:`~hnsw_numba.io.swap.put_new`).

    Raises
    ------
    PersistError
        An OS error (disk full, I/O error, no permission); the message names the file and
        says the previous one is kept.
    """
    from ..core.errors import persist_errors
    from ..io.atomic import write_files_atomically
    from ..io.places import check_place, through_link
    from ..io.swap import clean_leftovers, fsync_tree, put_new_files, remove, swap_in, tmp_sibling

    paths = results_paths(out)
    if len(paths) == 1:
        import zarr

        target = through_link(Path(paths[0]))
        check_place(target, directory=True, kind="search_results")  # --overwrite replaces results, never an index or a folder
        clean_leftovers(target)  # zarr's writer threads may make a failed write's copy again after its removal
        tmp = None
        with persist_errors(f"cannot write the results {target} (the previous copy is kept)"):
            try:  # the name taken inside: a Ctrl-C between taking it and the try would leak its lock file and descriptor
                tmp = tmp_sibling(target)
                g = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes={"hnsw_numba": {"kind": "search_results"}})
                if keys.dtype.kind == "U":
                    arr = g.create_array("keys", shape=keys.shape, dtype=str, chunks=keys.shape or (1,))
                    arr[...] = keys.astype(object)
                else:
                    g.create_array("keys", data=keys)
                g.create_array("distances", data=dists)
                fsync_tree(tmp)  # the files reach the disk before the rename makes them the results
                swap_in(tmp, target, replace=replace)
                remove(tmp)  # inside the try: a Ctrl-C at its first frame is cleaned up as any error
            except BaseException:
                if tmp is not None:
                    remove(tmp)
                raise
        return paths
    # both files whole before either replaces its target: a failed write keeps the old pair
    files = [(path, lambda f, arr=arr: np.save(f, arr, allow_pickle=False), f"cannot write the results {path} (the previous files are kept)")
             for path, arr in zip(paths, (keys, dists))]
    (write_files_atomically if replace else put_new_files)(files)
    return paths


def path_bytes(path: str) -> int:
    """Bytes on disk of a file or directory tree."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# ============================================================================ progress
class ProgressLine:
    """Progress on stderr: a redrawn bar on a terminal, else a line every few seconds.

    The first update always prints (scripts and tests can tell that work has begun).
    ``done`` items finished before the clock started (the kernels' first use) count towards
    the total, not towards the rate.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, interval: float | None = None, done: int = 0) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 2.0)
        self.done = self.start = done
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
        rate = (self.done - self.start) / el if el > 0 else 0.0
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
