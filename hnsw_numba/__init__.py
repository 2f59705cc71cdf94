"""hnsw_numba: HNSW approximate nearest neighbours with a Numba-compiled core.

Importing compiles nothing; kernels compile (or load from the on-disk cache) on first use.
"""

from .config import HnswConfig
from .errors import (
    CapacityError,
    DimensionMismatchError,
    HnswError,
    IndexFormatError,
    IntegrityError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    LegacyFormatError,
    MetricMismatchError,
    ReadOnlyIndexError,
)
from .hits import Hit, Hits
from .index import Hnsw
from .metrics import L2, Cosine, CosineQi8, InnerProduct, InnerProductQi8, L2Qi8, Metric
from .quantize import Qi8, Qi8Batch, dequantize, quantize_qi8
from .store import InMemoryVectorStore, VectorStore
from .store_qi8 import InMemoryQi8VectorStore
from .persist import load, save
from .legacy import load_hnswlib
from .knn import knn_join

__version__ = "0.1.0"

__all__ = [
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
    "save",
    "load",
    "load_hnswlib",
    "knn_join",
    "__version__",
]
