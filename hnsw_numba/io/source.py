"""The row reader every vector format opens into: :class:`VectorSource`, plus shared helpers."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from ..core.errors import InvalidParameterError, MissingDependencyError, VectorFileError

__all__ = ["VectorSource", "require", "short", "DEFAULT_BATCH"]

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
