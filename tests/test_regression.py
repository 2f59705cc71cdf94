"""Algorithmic regression guard (issue 7): distance evaluations on a fixed seeded graph.

A serial build with a fixed seed is deterministic, and every node a level-0 search visits
costs exactly one distance evaluation (visited tags mark them), so the count is a stable,
noise-free measure of search work. A change that makes the walk wander (a broken heuristic,
a lost link, a worse stopping rule) shows up here as a failure rather than as a slow number.
"""

from __future__ import annotations

import numpy as np

import hnsw_numba as hn
from conftest import clustered, recall

# Measured on 2026-11-25 (x86-64, AVX-512): 12,172 level-0 evaluations, recall@10 0.888.
# Different SIMD widths round distances differently and can shift the graph a little.
REFERENCE_EVALS = 12_172
REFERENCE_RECALL = 0.888


def test_distance_evaluations_do_not_grow() -> None:
    rng = np.random.default_rng(2024)
    data = clustered(rng, 4000, 32, centers=40)
    queries = clustered(rng, 50, 32, centers=40)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=32, max_nodes=4000, m=12, ef_construction=100, seed=7))
    store = hn.InMemoryVectorStore(32, 4000)
    idx.insert_batch(store, np.arange(4000), data, num_threads=1)
    total = 0
    for q in queries:
        idx.search(store, q, 10, ef=32)
        tags = idx._visited.acquire()
        total += int((tags[:-1] == tags[-1]).sum())
    found, _ = idx.search_batch(store, queries, 10, ef=32, num_threads=1)
    truth, _ = idx.search_batch(store, queries, 10, exact=True)
    print(f"level-0 distance evaluations: {total}, recall@10 {recall(found, truth):.3f}")
    assert total <= REFERENCE_EVALS * 1.05
    assert recall(found, truth) >= REFERENCE_RECALL - 0.02
