"""hnswlib files (the import path of earlier releases): see :mod:`hnsw_numba.io.hnswlib`."""

from .core.materialize import materialize
from .io.hnswlib import HnswlibVectorStore, load_hnswlib

__all__ = ["load_hnswlib", "materialize", "HnswlibVectorStore"]
