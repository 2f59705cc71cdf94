"""Uniform adapters over hnsw_numba and its peers (hnswlib, faiss, usearch).

The adapters themselves live in the installed package (``hnsw_numba.cli.bench``, which
``hnsw-numba bench`` uses): each builds with M / ef_construction as given, then answers
batch and single queries with a given ef. The benchmarks add ``single_call``, one timed
single-query call, for the per-call overhead table. Peers that are not installed are skipped.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hnsw_numba.cli.bench import _Faiss, _Hnswlib, _Ours, _USearch


class HnswNumba(_Ours):
    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        search, store = self.index.search, self.store
        return lambda: search(store, v, k, ef=ef)


class Hnswlib(_Hnswlib):
    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        self.index.set_ef(ef)
        knn = self.index.knn_query
        return lambda: knn(v, k=k, num_threads=1)


class Faiss(_Faiss):
    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        self.index.hnsw.efSearch = ef
        search, q = self.index.search, self._prep(v[None])
        return lambda: search(q, k)


class USearch(_USearch):
    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        self.index.expansion_search = ef
        search = self.index.search
        return lambda: search(v, k)


def available(names: list[str]) -> list[type]:
    """Adapter classes for the requested peers that import."""
    out = []
    for cls in (HnswNumba, Hnswlib, Faiss, USearch):
        if cls.name not in names:
            continue
        try:
            __import__(cls.name)
        except ImportError:
            continue
        out.append(cls)
    return out
