"""Quickstart: build an index, search it, filter, update and delete.

Run: python examples/quickstart.py
"""

import numpy as np

import hnsw_numba as hn

rng = np.random.default_rng(0)
vectors = rng.standard_normal((10_000, 64)).astype(np.float32)

index = hn.Hnsw(hn.Cosine(), hn.HnswConfig(dim=64, max_nodes=20_000, m=16, ef_construction=200))
store = hn.InMemoryVectorStore(dim=64, max_nodes=20_000)  # or dtype=np.float16 to halve memory
index.insert_batch(store, np.arange(10_000), vectors)  # keys: ints or strs; uses all cores

hits = index.search(store, vectors[42], k=5)  # [Hit(key, distance, node_id), ...] best first
print(hits[0])
assert hits[0].key == 42 and hits.keys[0] == 42  # columns as lists: .keys, .distances, .node_ids

keys, distances = index.search_batch(store, vectors[:100], k=10, ef=64)  # (100, 10) arrays
exact, _ = index.search_batch(store, vectors[:100], k=10, exact=True)  # brute-force oracle
recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(keys.tolist(), exact.tolist())])
print(f"recall@10 = {recall:.3f}")

even = index.search(store, vectors[42], k=5, filter=lambda key: key % 2 == 0)  # or a set of keys
assert all(h.key % 2 == 0 for h in even)

index.set(store, 42, rng.standard_normal(64))  # update in place (same NodeId)
index.delete(7)  # tombstone: never returned again
assert 7 not in index and len(index) == 9_999
index.check_integrity()
print("ok")
