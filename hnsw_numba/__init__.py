"""hnsw_numba: HNSW approximate nearest neighbours with a Numba-compiled core.

Importing compiles nothing; kernels compile (or load from the on-disk cache) on first use.
"""

from .core.config import HnswConfig
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
    ReadOnlyIndexError,
    RecallTargetError,
    VectorFileError,
    VectorFileNotFoundError,
)
from .core.hits import Hit, Hits
from .core.index import Hnsw
from .core.metrics import L2, Cosine, CosineQi8, InnerProduct, InnerProductQi8, L2Qi8, Metric
from .core.quantize import Qi8, Qi8Batch, dequantize, quantize_qi8
from .core.store import InMemoryVectorStore, VectorStore
from .core.store_qi8 import InMemoryQi8VectorStore
from .io.persist import load, load_index, load_store, save, save_index, save_store
from .io.hnswlib import load_hnswlib
from .io.hnswlib_write import HnswlibWriteError, save_hnswlib
from .core.knn import knn_join
from .core.version import __version__
from .io.vectors import VectorSource, iter_vectors, open_vectors, read_vectors
from .evaluation import exact_neighbors, recall, tune_ef
from .index import Index, open


# ``open`` is public (``hn.open(path)``) but left out of ``__all__``: ``from hnsw_numba import *``
# must not shadow the built-in ``open``.
__all__ = [
    "Index",
    "Hnsw",
    "HnswConfig",
    "Hit",
    "Hits",
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
