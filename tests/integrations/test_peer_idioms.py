"""README's "peer idioms side by side" table: every hnsw_numba cell runs and does what its row says.

The table is read from README.md; each of our cells runs, in order, on one small index and is
checked by the entry of ``CHECKS`` for its code (a new row without a check fails). The
hnswlib and usearch cells run too, on the peer, when it is installed, and their answers are
compared with ours where the two libraries must agree.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import ROOT, clustered

N, DIM = 400, 64


def table() -> list[tuple[str, str, str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^### Peer idioms side by side.*?\n\n(.*?)\n\n", text, re.M | re.S)
    assert block, "README has no peer idioms table"
    rows = []
    for line in block.group(1).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, line
        rows.append(tuple(re.sub(r"^`(.*)`( \(automatic\))?$", r"\1", c) for c in cells))
    return rows


def run(code: str, ns: dict) -> object:
    """Evaluate a cell: an expression's value, or None for statements."""
    try:
        return eval(compile(code, "<cell>", "eval"), ns)
    except SyntaxError:
        exec(compile(code, "<cell>", "exec"), ns)
        return None


def exact(ns: dict, queries: np.ndarray, k: int) -> np.ndarray:
    return ns["index"].search(queries, k, exact=True)[0]


def _search_batch(ns: dict, r: object) -> None:
    keys, d = ns["keys"], ns["d"]
    assert keys.shape == d.shape == (len(ns["q"]), 5) and (np.diff(d, axis=1) >= 0).all()
    assert (keys == exact(ns, ns["q"], 5)).mean() > 0.9


def _get(ns: dict, r: object) -> None:
    unit = ns["x"][[3, 4]] / np.linalg.norm(ns["x"][[3, 4]], axis=1, keepdims=True)
    np.testing.assert_allclose(r, unit, atol=1e-6)


def _saved(ns: dict, r: object) -> None:
    back = hn.open("i.zarr")
    assert len(back) == len(ns["index"]) and back.metric == "cosine"
    assert (back.search(ns["q"], 5)[0] == ns["index"].search(ns["q"], 5)[0]).all()


def _pickled(ns: dict, r: object) -> None:
    back = pickle.loads(r)
    assert (back.search(ns["q"], 5)[0] == ns["index"].search(ns["q"], 5)[0]).all()


CHECKS = {
    'index = hn.Index(64, metric="cosine")': lambda ns, r: (ns["index"].dim, ns["index"].metric) == (64, "cosine"),
    "index.add(ids, x)": lambda ns, r: len(ns["index"]) == N and all(i in ns["index"] for i in ns["ids"][:10]),
    "index.search(x[0], k=5)": lambda ns, r: isinstance(r, hn.Hits) and len(r) == 5 and r[0].key == ns["ids"][0],
    "keys, d = index.search(q, k=5)": _search_batch,
    "index.ef = 64": lambda ns, r: ns["index"].ef == 64 and ns["index"].native[0].config.ef_search == 64,
    "index.get([3, 4])": _get,
    "len(index)": lambda ns, r: r == N,
    "index.remove(3)": lambda ns, r: 3 not in ns["index"] and len(ns["index"]) == N - 1
    and 3 not in ns["index"].search(ns["x"][3], 10).keys,
    "4 in index": lambda ns, r: r is True,
    "index.add(more_ids, more_x)": lambda ns, r: len(ns["index"]) == 2 * N - 1 and ns["index"].capacity >= 2 * N,
    "index.search(q, k=5, filter=f)": lambda ns, r: (r[0] % 2 == 0).all() and (r[0] >= 0).all(),
    'index.save("i.zarr"); hn.open("i.zarr")': _saved,
    "pickle.dumps(index)": _pickled,
}


def namespaces() -> dict:
    rng = np.random.default_rng(21)
    x = clustered(rng, 2 * N, DIM)
    return {"np": np, "pickle": pickle, "x": x[:N], "ids": np.arange(N), "q": x[:N][::40] + 0.05, "n": N,
            "more_ids": np.arange(N, 2 * N), "more_x": x[N:], "f": lambda key: key % 2 == 0}


def test_table_rows_all_have_checks() -> None:
    ours = [row[2] for row in table()]
    assert len(ours) >= 12 and set(ours) == set(CHECKS), set(ours) ^ set(CHECKS)


def test_our_idioms_do_what_the_table_says(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ns = {**namespaces(), "hn": hn}
    for _, _, ours in table():
        result = run(ours, ns)
        assert CHECKS[ours](ns, result) is not False, ours


@pytest.mark.parametrize("peer", ["hnswlib", "usearch"])
def test_peer_cells_run_and_agree(tmp_path, monkeypatch, peer) -> None:
    """The peer's column is real code: it runs, and its answers match ours where they must."""
    module = pytest.importorskip(peer if peer == "hnswlib" else "usearch.index")
    monkeypatch.chdir(tmp_path)
    ours = {**namespaces(), "hn": hn}
    theirs = {**namespaces(), "hnswlib": module, "Index": getattr(module, "Index")}
    column = 0 if peer == "hnswlib" else 1
    for row in table():
        mine = run(row[2], ours)
        cell = row[column]
        if cell in ("–", "automatic"):
            continue
        got = run(cell, theirs)
        if row[2] == "keys, d = index.search(q, k=5)":
            found = np.asarray(theirs["labels"] if peer == "hnswlib" else got, np.int64)
            # the same neighbours (two approximate indexes, one built on several threads, may
            # order near ties differently): the share of each row's keys the other also found
            shared = np.mean([len(set(f) & set(o)) / len(o) for f, o in zip(found.tolist(), ours["keys"].tolist())])
            assert shared > 0.85, shared
        elif row[2] == "index.search(x[0], k=5)":
            first = got[0][0][0] if peer == "hnswlib" else got.keys[0]
            assert int(first) == mine[0].key
        elif row[2] == "index.get([3, 4])":
            np.testing.assert_allclose(np.asarray(got, np.float32).reshape(2, DIM) / np.linalg.norm(
                np.asarray(got, np.float32).reshape(2, DIM), axis=1, keepdims=True), mine, atol=1e-3)
        elif row[2] in ("len(index)", "4 in index"):
            assert got == mine
        elif row[2] == "index.search(q, k=5, filter=f)":
            assert (np.asarray(got[0]) % 2 == 0).all()
