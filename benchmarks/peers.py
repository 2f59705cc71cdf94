"""Uniform adapters over hnsw_numba and its peers (hnswlib, faiss, usearch).

Each adapter builds with M=16 / ef_construction as given, then answers batch and single
queries with a given ef. Peers that are not installed are skipped.
"""

from __future__ import annotations

import numpy as np

import hnsw_numba as hn


class HnswNumba:
    name = "hnsw_numba"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None, dtype=np.float32):
        met = {"l2": hn.L2(), "cosine": hn.Cosine(), "ip": hn.InnerProduct()}[metric]
        self.index = hn.Hnsw(met, hn.HnswConfig(dim=dim, max_nodes=n, m=m, ef_construction=efc, seed=100))
        self.store = hn.InMemoryVectorStore(dim, n, dtype=dtype)
        self.threads = threads

    def build(self, x: np.ndarray) -> None:
        self.index.insert_batch(self.store, np.arange(x.shape[0]), x, num_threads=self.threads)

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.index.search_batch(self.store, q, k, ef=ef, num_threads=self.threads)[0]

    def single(self, q: np.ndarray, k: int, ef: int) -> list:
        search, store = self.index.search, self.store
        return [search(store, v, k, ef=ef) for v in q]

    def single_call(self, v: np.ndarray, k: int, ef: int):
        search, store = self.index.search, self.store
        return lambda: search(store, v, k, ef=ef)


class Hnswlib:
    name = "hnswlib"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None):
        import hnswlib

        self.index = hnswlib.Index(space=metric, dim=dim)
        self.index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
        self.threads = threads or -1

    def build(self, x: np.ndarray) -> None:
        self.index.add_items(x, np.arange(x.shape[0]), num_threads=self.threads)

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.set_ef(ef)
        return self.index.knn_query(q, k=k, num_threads=self.threads)[0]

    def single(self, q: np.ndarray, k: int, ef: int) -> list:
        self.index.set_ef(ef)
        knn = self.index.knn_query
        return [knn(v, k=k, num_threads=1) for v in q]

    def single_call(self, v: np.ndarray, k: int, ef: int):
        self.index.set_ef(ef)
        knn = self.index.knn_query
        return lambda: knn(v, k=k, num_threads=1)


class Faiss:
    name = "faiss"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None):
        import faiss

        self.faiss = faiss
        self.normalize = metric == "cosine"
        mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.IndexHNSWFlat(dim, m, mt)
        self.index.hnsw.efConstruction = efc
        if threads:
            faiss.omp_set_num_threads(threads)

    def _prep(self, x: np.ndarray) -> np.ndarray:
        if self.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return np.ascontiguousarray(x, np.float32)

    def build(self, x: np.ndarray) -> None:
        self.index.add(self._prep(x))

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.hnsw.efSearch = ef
        return self.index.search(self._prep(q), k)[1]

    def single(self, q: np.ndarray, k: int, ef: int) -> list:
        self.index.hnsw.efSearch = ef
        q = self._prep(q)
        search = self.index.search
        return [search(q[i : i + 1], k) for i in range(q.shape[0])]

    def single_call(self, v: np.ndarray, k: int, ef: int):
        self.index.hnsw.efSearch = ef
        search, q = self.index.search, self._prep(v[None])
        return lambda: search(q, k)


class USearch:
    name = "usearch"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None):
        from usearch.index import Index

        self.index = Index(ndim=dim, metric={"l2": "l2sq", "cosine": "cos", "ip": "ip"}[metric],
                           dtype="f32", connectivity=m, expansion_add=efc)
        self.threads = threads or 0

    def build(self, x: np.ndarray) -> None:
        self.index.add(np.arange(x.shape[0]), x, threads=self.threads)

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.expansion_search = ef
        return self.index.search(q, k, threads=self.threads).keys

    def single(self, q: np.ndarray, k: int, ef: int) -> list:
        self.index.expansion_search = ef
        search = self.index.search
        return [search(v, k) for v in q]

    def single_call(self, v: np.ndarray, k: int, ef: int):
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
            __import__({"hnsw_numba": "hnsw_numba", "hnswlib": "hnswlib", "faiss": "faiss", "usearch": "usearch"}[cls.name])
        except ImportError:
            continue
        out.append(cls)
    return out
