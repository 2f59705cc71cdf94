"""hnsw_numba: HNSW approximate nearest neighbours with a Numba-compiled core.

Importing compiles nothing and loads nothing heavy: the public names below are imported
on first use (``hn.Hnsw`` imports the index, Numba and the kernels then), so the command
line starts at once and a Ctrl-C while it loads ends with one line, not a traceback.
Kernels compile (or load from the on-disk cache) on first call.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .core.errors import (
    CapacityError,
    DimensionMismatchError,
    HnswError,
    HnswWarning,
    IndexFormatError,
    IntegrityError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    LegacyFormatError,
    MetricMismatchError,
    MissingDependencyError,
    PersistError,
    ReadOnlyIndexError,
    RecallTargetError,
    VectorFileError,
    VectorFileNotFoundError,
)
from .core.version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time _LAZY below imports them
    from .core.config import HnswConfig
    from .core.filters import Filter
    from .core.hits import Hit, Hits
    from .core.index import Hnsw
    from .core.knn import knn_join
    from .core.metrics import L2, Cosine, CosineQi8, InnerProduct, InnerProductQi8, L2Qi8, Metric
    from .core.quantize import Qi8, Qi8Batch, dequantize, quantize_qi8
    from .core.store import InMemoryVectorStore, VectorStore
    from .core.store_qi8 import InMemoryQi8VectorStore
    from .evaluation import exact_neighbors, recall, tune_ef
    from .index import Index, open
    from .io.hnswlib import load_hnswlib
    from .io.hnswlib_write import HnswlibWriteError, save_hnswlib
    from .io.persist import load, load_index, load_store, save, save_index, save_store
    from .io.vectors import VectorSource, iter_vectors, open_vectors, read_vectors

# Module -> the public names it defines, imported on first access. A new public name is one
# line here and one TYPE_CHECKING import above (tests/test_structure.py compares the two).
# Subpackages and modules (``hn.io``, ``hn.sklearn``, ``hn.dask``) need no entry.
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    ".core.config": ("HnswConfig",),
    ".core.filters": ("Filter",),
    ".core.hits": ("Hit", "Hits"),
    ".core.index": ("Hnsw",),
    ".core.knn": ("knn_join",),
    ".core.metrics": ("L2", "Cosine", "CosineQi8", "InnerProduct", "InnerProductQi8", "L2Qi8", "Metric"),
    ".core.quantize": ("Qi8", "Qi8Batch", "dequantize", "quantize_qi8"),
    ".core.store": ("InMemoryVectorStore", "VectorStore"),
    ".core.store_qi8": ("InMemoryQi8VectorStore",),
    ".evaluation": ("exact_neighbors", "recall", "tune_ef"),
    ".index": ("Index", "open"),
    ".io.hnswlib": ("load_hnswlib",),
    ".io.hnswlib_write": ("HnswlibWriteError", "save_hnswlib"),
    ".io.persist": ("load", "load_index", "load_store", "save", "save_index", "save_store"),
    ".io.vectors": ("VectorSource", "iter_vectors", "open_vectors", "read_vectors"),
}
#: Public name -> the module that defines it.
_LAZY: dict[str, str] = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, e.g. ``hn.sklearn``) on first access."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # later accesses skip this function
        return value
    if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, the subpackages imported so far and the module's own dunders (what
    tab completion offers), not what this module imports for itself (``importlib``, ``typing``'s names)."""
    own = {name for name, value in globals().items() if (name.startswith("__") and name.endswith("__"))
           or (isinstance(value, type(importlib)) and value.__name__.startswith(f"{__name__}."))}
    return sorted(set(__all__) | set(_LAZY) | own)


# ``open`` is public (``hn.open(path)``) but left out of ``__all__``: ``from hnsw_numba import *``
# must not shadow the built-in ``open``.
__all__ = [
    "Index",
    "Hnsw",
    "HnswConfig",
    "Hit",
    "Hits",
    "Filter",
    "Metric",
    "L2",
    "Cosine",
    "InnerProduct",
    "L2Qi8",
    "CosineQi8",
    "InnerProductQi8",
    "VectorStore",
    "InMemoryVectorStore",
    "InMemoryQi8VectorStore",
    "Qi8",
    "Qi8Batch",
    "quantize_qi8",
    "dequantize",
    "HnswError",
    "KeyExistsError",
    "KeyNotFoundError",
    "InvalidKeyError",
    "DimensionMismatchError",
    "InvalidVectorError",
    "InvalidParameterError",
    "CapacityError",
    "MetricMismatchError",
    "IntegrityError",
    "ReadOnlyIndexError",
    "IndexFormatError",
    "LegacyFormatError",
    "VectorFileError",
    "VectorFileNotFoundError",
    "MissingDependencyError",
    "PersistError",
    "RecallTargetError",
    "HnswWarning",
    "save",
    "load",
    "save_index",
    "load_index",
    "save_store",
    "load_store",
    "load_hnswlib",
    "save_hnswlib",
    "HnswlibWriteError",
    "knn_join",
    "VectorSource",
    "open_vectors",
    "read_vectors",
    "iter_vectors",
    "recall",
    "exact_neighbors",
    "tune_ef",
    "__version__",
]
