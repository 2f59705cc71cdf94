"""``knn_join`` pads its rows as ``search_batch`` pads them.

Key -1 for int keys (past int64 too, in an object array), None once a str key is given:
in every row, also rows joined before a str key arrived in the middle of the join.
"""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import knn
from hnsw_numba.core.limits import RESULT_ENTRY_BYTES

DIM, K = 4, 8

KINDS = {
    "int64": list(range(6)),
    "past int64": [2**63 + i for i in range(6)],
    "str": [f"k{i}" for i in range(6)],
    "ints and strs": [0, 1, 2, "a", "b", 2**64],
}


def _index(keys: list) -> tuple[hn.Hnsw, hn.InMemoryVectorStore, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((len(keys), DIM)).astype(np.float32)
    h = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=20, m=4, ef_construction=20, seed=1))
    s = hn.InMemoryVectorStore(DIM, 20)
    h.insert_batch(s, keys, x)
    return h, s, x


def _pads(keys: np.ndarray, dists: np.ndarray) -> list:
    return sorted({repr(v) for v in keys[np.isinf(dists)].tolist()})


@pytest.mark.parametrize("kind", list(KINDS))
def test_knn_join_pads_as_search_batch(kind: str) -> None:
    h, s, x = _index(KINDS[kind])
    q = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    joined, batch = hn.knn_join(h, s, q, K), h.search_batch(s, q, K)
    assert joined[0].dtype == batch[0].dtype
    assert joined[0].tolist() == batch[0].tolist()
    assert _pads(*joined) == _pads(*batch) == (["None"] if kind in ("str", "ints and strs") else ["-1"])


@pytest.mark.parametrize("kind", ["int64", "past int64"])
def test_a_str_key_added_during_the_join_pads_every_row_with_none(monkeypatch, kind: str) -> None:
    """Fails on the join in pieces: the rows joined before the str key kept -1, the rest None."""
    h, s, x = _index(KINDS[kind])
    q = np.random.default_rng(1).standard_normal((6, DIM)).astype(np.float32)
    monkeypatch.setattr(knn, "JOIN_PIECE_BYTES", 2 * K * RESULT_ENTRY_BYTES)  # pieces of two queries
    search = hn.Hnsw.search_prepared
    calls = []

    def then_add(self, *args, **kwargs):
        out = search(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # after the first piece: a str key arrives
            self.insert_batch(s, ["new"], np.full((1, DIM), 50.0, np.float32))
        return out

    monkeypatch.setattr(hn.Hnsw, "search_prepared", then_add)
    keys, dists = hn.knn_join(h, s, q, K)
    assert len(calls) == 3
    assert keys.dtype == object and np.isinf(dists).any()
    assert _pads(keys, dists) == ["None"]
    monkeypatch.setattr(hn.Hnsw, "search_prepared", search)
    assert _pads(*h.search_batch(s, q, K)) == ["None"]
