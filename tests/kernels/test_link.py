"""``link_node`` and the kernel constants.

The layer search restarts with a doubled candidate heap when the heap runs short, and
``link_node`` hands the grown arrays back to its caller. A walk that starts from a tiny
heap must therefore end with a larger one and write exactly the links a walk with a roomy
heap writes.
"""

from __future__ import annotations

import re

import numpy as np

import hnsw_numba as hn
from conftest import PKG, clustered
from hnsw_numba.kernels import integrity
from hnsw_numba.kernels.jit import helper
from hnsw_numba.kernels.layout import H_M
from hnsw_numba.kernels.link import alloc_link_scratch, link_node, rows_dim
from hnsw_numba.kernels.search import cand_capacity


@helper
def _relink_all(g, rows, metric, node_ids, ef, visited, cand_len):
    """Re-link ``node_ids`` as ``update_kernel`` does, from a candidate heap of ``cand_len``."""
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    s = alloc_link_scratch(rows_dim(rows), ef, m0, ef + 2, 0)
    cand_d = np.empty(cand_len, np.float32)
    cand_i = np.empty(cand_len, np.int32)
    for i in range(node_ids.shape[0]):
        _, cand_d, cand_i = link_node(
            g, rows, metric, node_ids[i], ef + 1, visited, s, cand_d, cand_i,
            is_new=False, drop_self=True, dead_only=False, keep_live=False, keep0=m, keep=m, fill=False,
        )
    return cand_d.shape[0]


def test_grown_candidate_heap_travels_back_and_links_the_same() -> None:
    rng = np.random.default_rng(5)
    n, dim, efc = 600, 12, 48
    data = clustered(rng, n, dim, centers=8)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=6, ef_construction=efc, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), data, num_threads=1)
    # move some vectors so the re-link has work to do
    moved = rng.choice(n, 40, replace=False).astype(np.int32)
    store.write(moved, store.encode(data[moved[::-1]]))
    rows = store.rows()
    g = idx.graph_arrays
    lens = {}
    graphs = {}
    for name, cand_len in (("tiny", 4), ("roomy", cand_capacity.py_func(efc, g.links0.shape[1] - 1))):
        copy = type(g)(*[a.copy() for a in g])
        visited = np.zeros(g.links0.shape[0] + 1, np.uint16)
        lens[name] = _relink_all(copy, rows, idx.metric.code, moved, efc, visited, cand_len)
        graphs[name] = copy
    assert lens["tiny"] > 4  # grew, and the caller received the grown arrays
    assert lens["roomy"] == cand_capacity.py_func(efc, g.links0.shape[1] - 1)  # never grew
    a, b = graphs["tiny"], graphs["roomy"]
    np.testing.assert_array_equal(a.links0, b.links0)
    np.testing.assert_array_equal(a.upper_links, b.upper_links)
    assert not np.array_equal(a.links0, g.links0)  # the re-link changed something


def test_integrity_codes_are_distinct_and_each_has_a_message() -> None:
    codes = {name: getattr(integrity, name) for name in integrity.__all__ if name.isupper() and name != "INTEGRITY_MESSAGES"}
    assert codes["GRAPH_OK"] == 0
    defects = {v for k, v in codes.items() if k != "GRAPH_OK"}
    assert len(defects) == len(codes) - 1  # no two names share a code
    assert set(integrity.INTEGRITY_MESSAGES) == defects


def test_kernels_name_their_masks() -> None:
    """Link counts are read through ``COUNT_MASK`` and tags wrap at ``MAX_TAG``: no bare 16-bit literals."""
    bare = re.compile(r"\b(0x[fF]{4}|65535)\b")
    offenders = [
        f"{p.name}:{i}"
        for p in sorted((PKG / "kernels").glob("*.py"))
        if p.name != "layout.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if bare.search(line.split("#")[0])
    ]
    assert not offenders, offenders
