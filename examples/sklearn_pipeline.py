"""HnswTransformer in scikit-learn pipelines: a drop-in for KNeighborsTransformer.

The transformer turns the data into a sparse k-NN graph (the sample itself included, as
scikit-learn expects) that estimators with ``metric='precomputed'`` consume: here Isomap
on a swiss roll, a cosine graph checked against the exact ``KNeighborsTransformer``,
and spectral clustering on the connectivity graph.

Run: python examples/sklearn_pipeline.py      (pip install 'hnsw_numba[sklearn]')
"""
# requires: sklearn scipy

import time

import numpy as np
from sklearn.cluster import SpectralClustering
from sklearn.datasets import make_swiss_roll
from sklearn.manifold import Isomap
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsTransformer
from sklearn.pipeline import make_pipeline

from hnsw_numba.datasets import clustered_embeddings
from hnsw_numba.sklearn import HnswTransformer

# 1. Isomap of a swiss roll: the same embedding as with exact neighbours.
x, _ = make_swiss_roll(3000, random_state=0)
ours = make_pipeline(HnswTransformer(n_neighbors=10, ef=100, n_jobs=-1, random_state=0),
                     Isomap(n_neighbors=10, n_components=2, metric="precomputed"))
exact = make_pipeline(KNeighborsTransformer(n_neighbors=10),
                      Isomap(n_neighbors=10, n_components=2, metric="precomputed"))
emb, ref = ours.fit_transform(x), exact.fit_transform(x)
corr = [abs(np.corrcoef(emb[:, j], ref[:, j])[0, 1]) for j in range(2)]
print(f"Isomap via HnswTransformer vs exact: |corr| per axis = {corr[0]:.4f}, {corr[1]:.4f}")

# 2. The graph itself: same neighbours as KNeighborsTransformer, up to ANN recall.
emb_x, _ = clustered_embeddings(5000, 32, seed=3)
t = time.perf_counter()
g = HnswTransformer(n_neighbors=15, metric="cosine", ef=100, n_jobs=-1).fit_transform(emb_x)
t_ours = time.perf_counter() - t
t = time.perf_counter()
r = KNeighborsTransformer(n_neighbors=15, metric="cosine").fit_transform(emb_x)
t_exact = time.perf_counter() - t
same = np.mean([len(set(g.indices[g.indptr[i]:g.indptr[i + 1]]) & set(r.indices[r.indptr[i]:r.indptr[i + 1]])) / 16
                for i in range(emb_x.shape[0])])
print(f"cosine graph of 5000 x 32: {same:.3f} of neighbours identical ({t_ours:.2f} s vs exact {t_exact:.2f} s)")
assert same > 0.98

# 3. Spectral clustering on the k-NN connectivity graph of three touching blobs.
blobs = np.concatenate([np.random.default_rng(i).normal(1.0 * i, 0.5, (500, 8)) for i in range(3)])
spectral = make_pipeline(HnswTransformer(n_neighbors=10, mode="connectivity"),
                         SpectralClustering(n_clusters=3, affinity="precomputed_nearest_neighbors", n_neighbors=10, random_state=0))
labels = spectral.fit_predict(blobs)
ari = adjusted_rand_score(np.repeat([0, 1, 2], 500), labels)
print(f"SpectralClustering on the HNSW graph: ARI vs the true blobs {ari:.3f}")
assert ari > 0.9
