"""``reach.rescue_dropped``: a node that a rewritten list dropped keeps an in-link."""

from __future__ import annotations

import numpy as np

import hnsw_numba as hn
from hnsw_numba.core.graph import Graph
from hnsw_numba.kernels.layout import F32Rows
from hnsw_numba.kernels.reach import rescue_dropped

D, X, Y, Z = 0, 1, 2, 3


def _graph(lists: dict[int, list[int]]) -> Graph:
    g = Graph.empty(4, 2)  # m = 2: level-0 lists of 4
    g.allocate(np.zeros(4, np.int8))
    for node, ids in lists.items():
        g.arrays.links0[node, 0] = len(ids)
        g.arrays.links0[node, 1 : 1 + len(ids)] = ids
    return g


def _rescue(g: Graph, old: list[int], new: list[int]) -> None:
    rows = F32Rows(np.array([[0, 0], [5, 0], [6, 0], [0, 1]], np.float32))
    o, n = np.array(old, np.int32), np.array(new, np.int32)
    rescue_dropped(g.arrays, rows, hn.L2().code, np.int32(D), o, len(old), n, len(new), 4)


def _links(g: Graph, node: int) -> list[int]:
    row = g.arrays.links0[node]
    return row[1 : 1 + row[0]].tolist()


def test_a_dropped_node_without_a_link_back_joins_its_nearest_neighbour() -> None:
    # D's list held X, X's only in-link; D's list is rewritten without it
    g = _graph({D: [Z], X: [Y], Y: [Z], Z: [D, Y]})
    _rescue(g, [X, Z], [Z])
    assert X in _links(g, Y) and _links(g, D) == [Z]


def test_a_node_its_neighbours_link_to_and_a_deleted_node_are_left_alone() -> None:
    g = _graph({D: [Z], X: [Y], Y: [Z, X], Z: [D, Y]})
    before = g.arrays.links0.copy()
    _rescue(g, [X, Z], [Z])  # Y links back to X
    g.arrays.links0[Y, 0] = 1  # now nothing does, but X is deleted
    g.arrays.tombstones[X] = 1
    _rescue(g, [X, Z], [Z])
    assert _links(g, Y) == [Z] and (g.arrays.links0[[D, X, Z]] == before[[D, X, Z]]).all()
