"""k-NN graph for UMAP / t-SNE / clustering: the self-join of an index as a sparse matrix.

Builds a cosine index over generated embeddings, computes the k=15 neighbour graph on all
cores (progress bar in a terminal, Ctrl-C safe), checks it against the exact graph on a
sample, and turns it into the symmetric fuzzy graph UMAP optimises, plus the
``(knn_indices, knn_dists)`` pair that ``umap.UMAP(precomputed_knn=...)`` accepts.

Run: python examples/knn_graph_umap_style.py      (needs scipy: pip install 'hnsw_numba[sklearn]')
"""
# requires: scipy

import time

import numpy as np
from scipy.sparse.csgraph import connected_components

import hnsw_numba as hn
from hnsw_numba.datasets import clustered_embeddings

n, dim, k = 10_000, 64, 15
x, _ = clustered_embeddings(n, dim, seed=0)

index = hn.Index(dim, metric="cosine", ef_construction=100, capacity=n, seed=0)
t = time.perf_counter()
index.add(x)  # keys 0..n-1 in order: NodeId i is row i
t_build = time.perf_counter() - t

t = time.perf_counter()
graph = index.knn_graph(k)  # csr_matrix (n, n), 1 - cos as values, rows best first
t_graph = time.perf_counter() - t
print(f"build {t_build:.1f} s, knn_graph {t_graph:.1f} s: {graph.shape}, {graph.nnz} edges")

# Exact neighbours of a sample of rows (brute force) to measure the graph's recall.
rows = np.random.default_rng(1).choice(n, 300, replace=False)
xn = x / np.linalg.norm(x, axis=1, keepdims=True)
sim = xn[rows] @ xn.T
sim[np.arange(rows.size), rows] = -np.inf  # the item itself is not its own neighbour
truth = np.argpartition(-sim, k, axis=1)[:, :k]
found = graph.indices.reshape(n, k)[rows]
rec = np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())])
print(f"recall of the graph vs exact k-NN (300 rows): {rec:.3f}")
assert rec > 0.95

# What UMAP's precomputed_knn takes: (indices, distances), each (n, k), the item first.
g_self = index.knn_graph(k, exclude_self=False)
knn_indices = g_self.indices.reshape(n, k)
knn_dists = g_self.data.reshape(n, k)
assert (knn_indices[:, 0] == np.arange(n)).all()

# UMAP's fuzzy simplicial set: per-row membership strengths, then the fuzzy union.
rho = graph.data.reshape(n, k)[:, 0]  # distance to the nearest neighbour
sigma = graph.data.reshape(n, k).mean(axis=1) - rho + 1e-3  # a crude bandwidth
w = graph.copy()
w.data = np.exp(-(graph.data - np.repeat(rho, k)) / np.repeat(sigma, k)).astype(np.float32)
fuzzy = w + w.T - w.multiply(w.T)
n_comp, labels = connected_components(fuzzy, directed=False)
print(f"fuzzy graph: {fuzzy.nnz} edges, {n_comp} connected component(s), largest {np.bincount(labels).max()} nodes")
