"""Quickstart: build an index, search it, filter, update, remove, save and open it again.

Run: python examples/quickstart.py
"""

import tempfile
from pathlib import Path

import numpy as np

import hnsw_numba as hn

rng = np.random.default_rng(0)
vectors = rng.standard_normal((10_000, 64)).astype(np.float32)

index = hn.Index(64, metric="cosine")  # dtype="f16" / "bf16" / "qi8" for smaller vectors; grows by itself
index.add(vectors)  # keys 0..9999 (or index.add(keys, vectors) with your ints or strs); all cores

hits = index.search(vectors[42], k=5)  # [Hit(key, distance, node_id), ...] best first
print(hits[0])
assert hits[0].key == 42 and hits.keys[0] == 42  # columns as lists: .keys, .distances, .node_ids

queries = vectors[:100] + 0.1 * rng.standard_normal((100, 64)).astype(np.float32)
keys, distances = index.search(queries, k=10, ef=64)  # a batch: (100, 10) arrays
truth, _ = hn.exact_neighbors(vectors, queries, 10, "cosine")  # brute force on all cores (row numbers = keys here)
print(f"recall@10 = {hn.recall(keys, truth):.3f}")
index.ef = index.tune_ef(queries, k=10, target_recall=0.99)  # the smallest ef that reaches 0.99 on these queries
print(f"ef for recall@10 >= 0.99: {index.ef}")

even = index.search(vectors[42], k=5, filter=lambda key: key % 2 == 0)  # or a set of keys
assert all(h.key % 2 == 0 for h in even)

index.set(42, rng.standard_normal(64))  # replace a vector (same key, same NodeId)
index.remove([7, 8])  # never returned again; index.add(7, v) brings 7 back
assert 7 not in index and len(index) == 9_998
print(index.get(3)[:4])  # the stored vector (unit length for cosine)

with tempfile.TemporaryDirectory() as tmp:
    index.save(Path(tmp) / "quickstart.zarr")  # crash-safe Zarr group
    again = hn.open(Path(tmp) / "quickstart.zarr")  # metric, dtype and parameters from the file
    assert again.search(vectors[3], k=1)[0].key == 3 and len(again) == len(index)
print(index)
