"""The row reader every vector format opens into: :class:`VectorSource`, plus shared helpers."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from ..core.errors import CapacityError, InvalidParameterError, MissingDependencyError, VectorFileError
from ..core.limits import check_allocation
from ..core.validate import check_flag, refuse_masked

__all__ = ["VectorSource", "require", "short", "check_stored_rows", "DEFAULT_BATCH"]

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


def check_stored_rows(data: Any, where: str | None = None) -> None:
    """Refuse an h5py dataset whose rows are not all stored in its own file.

    Rows kept in files the dataset names (external raw storage, a virtual dataset) are read
    from there: a pipe blocks the read forever, a device never ends, any readable file's
    bytes come back as vectors. Rows never written read as the fill value, so a file of a
    few KiB may declare 10**12 rows that a streaming read walks for days. Anything else
    passes (h5py is not imported for it).

    Parameters
    ----------
    data : Any
        An array-like; only an ``h5py.Dataset`` is checked.
    where : str, optional
        How messages name it (default, or added when it does not name the dataset: ``FILE:/DATASET``).

    Raises
    ------
    VectorFileError
        Naming the dataset and the reason its rows are not read.
    """
    h5py = sys.modules.get("h5py")  # an h5py dataset exists only once h5py is imported
    if h5py is None or not isinstance(data, h5py.Dataset):
        return
    try:
        name = data.name or "(an anonymous dataset)"
        own = f"{data.file.filename}:{name}"
        # a label that does not name the dataset ("array", "data") gets its file and name
        label = own if where is None else where if name.lstrip("/") in where else f"{where} (HDF5 dataset {own})"
        external, virtual, shape = data.external, data.is_virtual, data.shape
        written = not shape or 0 in shape or data.id.get_space_status() == h5py.h5d.SPACE_STATUS_ALLOCATED
    except (ValueError, RuntimeError, OSError, KeyError) as exc:  # a closed file's dataset
        raise VectorFileError(f"{where or 'HDF5 dataset'}: cannot read the dataset: {short(exc)}") from None
    if external or virtual:
        kind = "external raw storage" if external else "a virtual dataset"
        raise VectorFileError(f"{label}: its rows are kept in other files ({kind}): not read "
                              "(copy them into the file: h5repack, or write the array again)")
    if not written:
        raise VectorFileError(f"{label}: declares shape {shape}, but not all of its rows were "
                              "written (unwritten HDF5 storage reads as the fill value): not read")


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

    Notes
    -----
    Reads may come from several threads (each format serialises its own access to the
    file); :meth:`close` excludes reads: call it when none is running.

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
        check_stored_rows(data, where)
        refuse_masked(data, where, VectorFileError)  # reads would use the values hidden under the mask
        try:  # an HDF5 dataset with a null dataspace has shape None
            shape = tuple(getattr(data, "shape", ()))
        except TypeError:
            raise VectorFileError(f"{where}: holds no array (shape {getattr(data, 'shape', None)!r}, e.g. an HDF5 null "
                                  "dataspace)") from None
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
            Element type of the result: floating point or integer (default float32); None
            keeps the stored type.
        check_finite : bool
            Raise :class:`VectorFileError` naming the first row that holds NaN or inf
            (or a value outside ``dtype``'s range) when the result is floating point. An
            integer result is always checked: a NaN, inf or value outside its range raises.

        Returns
        -------
        ndarray (stop - start, dim)
            A read-only view of the memory map when a ``.npy`` file already holds ``dtype``,
            else a new array.

        Raises
        ------
        CapacityError
            The rows would not fit the allocation limit (see ``HNSW_NUMBA_MAX_BYTES``).
        """
        want, check_finite = _result_dtype(dtype), check_flag("check_finite", check_finite)
        start, stop = self._span(start, stop)
        self._check_size(stop - start, want)
        try:
            raw = np.asarray(self.data[start:stop])
        except VectorFileError:
            raise
        except MemoryError:
            raise CapacityError(f"{self.where}: rows {start}..{stop - 1} do not fit in memory") from None
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise VectorFileError(f"{self.where}: cannot read rows {start}..{stop - 1}: {short(exc)}") from exc
        if want is not None and want.kind in "iu":
            _check_integers(raw, want, self.where, start)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                x = np.ascontiguousarray(raw, dtype=want)
        except MemoryError:
            raise CapacityError(f"{self.where}: rows {start}..{stop - 1} do not fit in memory as {want}") from None
        if check_finite and (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                i = int(np.argmin(finite))
                overflow = raw.dtype.kind in "fiu" and bool(np.isfinite(raw[i]).all())
                what = f"a value outside the {x.dtype} range" if overflow else "NaN or inf"
                raise VectorFileError(f"{self.where}: row {start + i} contains {what}")
        return x

    def _check_size(self, rows: int, want: np.dtype | None) -> None:
        """Refuse a read whose arrays exceed the allocation limit before allocating them: a
        small file may declare any shape (HDF5 and Zarr read missing chunks as fill values)."""
        stored = self.dtype.itemsize
        result = stored if want is None else want.itemsize
        # a NumPy array (a memory map) is sliced, not copied: only a cast allocates
        fetched = 0 if isinstance(self.data, np.ndarray) else rows * self.dim * stored
        cast = 0 if want is None or want == self.dtype else rows * self.dim * result
        if fetched + cast:
            check_allocation(fetched + cast, f"{self.where}: reading {rows:,} rows of dimension {self.dim}")

    def batches(self, batch_size: int = DEFAULT_BATCH, *, start: int = 0, stop: int | None = None, dtype: Any = np.float32,
                check_finite: bool = True) -> Iterator[np.ndarray]:
        """Rows ``start:stop`` in consecutive batches of ``batch_size`` rows (the last may be shorter).

        Only one batch is in memory at a time (plus, for Parquet, the row group it comes
        from); ``dtype`` and ``check_finite`` as in :meth:`read`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be a positive int, got {batch_size!r}")
        check_finite = check_flag("check_finite", check_finite)
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


def _result_dtype(dtype: Any) -> np.dtype | None:
    """``dtype`` as a NumPy dtype of numbers (None kept), or InvalidParameterError."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"dtype must be a floating point or integer type (or None), got {dtype!r}") from None
    if dt.kind not in "fiu" and dt.name != "bfloat16":
        raise InvalidParameterError(f"dtype must be a floating point or integer type (or None), got {dt}")
    return dt


def _check_integers(raw: np.ndarray, want: np.dtype, where: str, first: int) -> None:
    """Raise VectorFileError naming the first row of ``raw`` that ``want`` cannot hold: a cast
    wraps a value outside its range and turns NaN into an arbitrary integer, silently."""
    if raw.size == 0 or np.can_cast(raw.dtype, want, "safe"):
        return
    info = np.iinfo(want)
    if raw.dtype.kind in "iu":
        have = np.iinfo(raw.dtype)
        bad = np.zeros(raw.shape[0], bool)
        if have.max > info.max:  # the bound fits raw's type: it is below raw's own maximum
            bad |= raw.max(axis=1) > raw.dtype.type(info.max)
        if have.min < info.min:
            bad |= raw.min(axis=1) < raw.dtype.type(info.min)
    else:
        vals = raw.astype(np.float32) if raw.dtype.name == "bfloat16" else raw
        finite = np.isfinite(vals).all(axis=1)
        if not finite.all():
            raise VectorFileError(f"{where}: row {first + int(np.argmin(finite))} contains NaN or inf (not an integer)")
        # in float64, exactly: info.max + 1 and info.min are powers of two
        hi = vals.max(axis=1).astype(np.float64)
        lo = vals.min(axis=1).astype(np.float64)
        bad = (hi >= float(info.max + 1)) | (lo < float(info.min))
    if bad.any():
        raise VectorFileError(f"{where}: row {first + int(np.argmax(bad))} contains a value outside the {want} range")
