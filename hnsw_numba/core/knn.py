"""k-nearest-neighbour graphs (the self-join of an index) and query-batch joins.

``knn_graph`` searches every live node's own stored vector through the batch search path
(all cores) and returns a ``scipy.sparse.csr_matrix``; ``knn_join`` is the same batch
search for outside queries, returning keys. Both work in rounds so that a progress bar is
updated and Ctrl-C honoured between rounds (they only read the index, so an interrupt
leaves nothing to undo).

scipy is an optional dependency (``pip install hnsw_numba[sklearn]``); it is imported only
when a sparse matrix is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CapacityError, DimensionMismatchError, InvalidParameterError
from .limits import RESULT_ENTRY_BYTES, check_allocation, readable_bytes
from .parallel import MAX_ROUND, MIN_ROUND, in_rounds, resolve_threads
from .progress import Progress, want_progress
from .rowwrites import read_rows
from .store import FLOAT_DTYPES
from ..kernels.layout import BF16Rows, F16Rows, F32Rows, Qi8Rows, exact_rows
from .validate import check_ef, check_flag, check_k

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse

__all__ = ["knn_graph", "knn_join", "neighbors_to_csr", "check_neighbors", "drop_self", "graph_ef"]


#: Smallest default beam of a self-join. Each item's search starts at its own node, so a
#: beam barely wider than k already finds nearly all of its neighbours (recall 0.976 at
#: k = 15 on the words dev set); 16 keeps small k from getting a needlessly narrow beam.
GRAPH_MIN_EF = 16

#: Bytes one search of :func:`knn_join` may take for its own result arrays (beyond the join's
#: output): a huge ``k`` then searches fewer queries at a time instead of holding a round's worth.
JOIN_PIECE_BYTES = 256 << 20


def graph_ef(ef: Any, k_search: int) -> int:
    """The beam of a self-join: ``ef`` (checked) or the default ``max(k_search, GRAPH_MIN_EF)``."""
    return max(check_ef(ef, GRAPH_MIN_EF), k_search)


def _require_scipy():
    try:
        import scipy.sparse
    except ImportError:  # pragma: no cover - optional dependency
        raise ImportError("knn graphs are scipy sparse matrices: pip install 'hnsw_numba[sklearn]' (or scipy)") from None
    return scipy.sparse


def stored_vectors(rows: Any, node_ids: np.ndarray) -> np.ndarray:
    """float32 copies of the stored vectors of ``node_ids`` (decoded from f16/bf16/qi8).

    The stored form is already prepared (unit length for cosine), so searching with it is
    searching with the item itself.
    """
    rows = exact_rows(rows)
    if isinstance(rows, F32Rows):
        return rows.data[node_ids]
    if isinstance(rows, F16Rows):
        return rows.bits[node_ids].view(np.float16).astype(np.float32)
    if isinstance(rows, BF16Rows):
        return rows.bits[node_ids].view(FLOAT_DTYPES["bfloat16"]).astype(np.float32)
    if isinstance(rows, Qi8Rows):
        codes = rows.codes[node_ids].astype(np.float32)
        return (codes - rows.zero[node_ids, None]) * rows.scale[node_ids, None]
    raise InvalidParameterError(f"cannot read vectors from {type(rows).__name__}")  # pragma: no cover


def _rounds(n: int, threads: int, search_round, desc: str, progress: bool | None) -> None:
    """Call ``search_round(start, stop)`` over ``[0, n)`` in rounds of ~0.5 s each (:func:`in_rounds`):
    a live progress bar, and Ctrl-C between rounds."""
    with Progress(n, desc, want_progress(progress) and n > MIN_ROUND) as bar:
        in_rounds(n, search_round, 64 * threads, bar.update)


def drop_self(ids: np.ndarray, dists: np.ndarray, self_ids: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Turn raw search results into ``k`` neighbours per row, with or without the item itself.

    Parameters
    ----------
    ids, dists : ndarray (n, k_searched)
        Search results, best first; ids ``< 0`` are padding.
    self_ids : ndarray (n,)
        The id of each row's own item.
    k : int
        Neighbours to keep per row.
    exclude_self : bool
        Drop the item itself (matched by id, so exact duplicates of it stay neighbours).
        Otherwise the item comes first with distance 0, followed by ``k - 1`` others —
        searched results may miss the item or rank a duplicate first, so it is placed
        rather than trusted.

    Returns
    -------
    (ids int64 (n, k), dists float32 (n, k))
        Best first, padded with -1 / inf.
    """
    ids = np.asarray(ids)
    n = ids.shape[0]
    keep = (ids >= 0) & (ids != self_ids[:, None])
    # A stable sort of "is not kept" moves kept entries to the front in their distance order.
    order = np.argsort(~keep, axis=1, kind="stable")
    others = k if exclude_self else k - 1
    order = order[:, :others]
    kept = np.take_along_axis(keep, order, 1)
    out_i = np.where(kept, np.take_along_axis(ids, order, 1), -1).astype(np.int64)
    out_d = np.where(kept, np.take_along_axis(dists, order, 1), np.inf).astype(np.float32)
    if out_i.shape[1] < others:  # fewer results searched than wanted: pad
        pad = others - out_i.shape[1]
        out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=-1)
        out_d = np.pad(out_d, ((0, 0), (0, pad)), constant_values=np.inf)
    if not exclude_self:
        out_i = np.concatenate([self_ids.astype(np.int64)[:, None], out_i], axis=1)
        out_d = np.concatenate([np.zeros((n, 1), np.float32), out_d], axis=1)
    return out_i, out_d


def check_neighbors(rows: np.ndarray, ids: np.ndarray, dists: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Refuse what :func:`neighbors_to_csr` cannot build a valid matrix of; ``rows``' ascending order.

    Raises
    ------
    DimensionMismatchError
        ``ids`` is not 2-D, ``dists`` has another shape, or ``rows`` has not one entry per row.
    InvalidParameterError
        ``ids`` is not of an integer dtype, holds an id outside ``[0, shape[1])`` other than
        the padding ``-1``, or ``rows`` repeats a row or leaves ``[0, shape[0])``.
    """
    if ids.ndim != 2 or dists.shape != ids.shape or rows.shape != ids.shape[:1]:
        raise DimensionMismatchError(f"neighbour ids {ids.shape}, distances {dists.shape} and rows {rows.shape} "
                                     "must be (n, k), (n, k) and (n,)")
    if not np.issubdtype(ids.dtype, np.integer):
        raise InvalidParameterError(f"neighbour ids must be integers (column numbers), got dtype {ids.dtype}")
    # checked before the matrix is built: scipy trusts its column indices, and one past the
    # width makes toarray() write outside its buffer
    outside = (ids < -1) | (ids >= shape[1])
    if outside.any():
        r, c = np.argwhere(outside)[0]
        raise InvalidParameterError(f"neighbour id {int(ids[r, c]):,} (row {int(rows[r]):,}, column {int(c)}) is outside "
                                    f"[0, {shape[1]:,}), the matrix's columns (-1 pads)")
    order = np.argsort(rows, kind="stable")
    ranked = rows[order]
    if ranked.shape[0] and (ranked[0] < 0 or ranked[-1] >= shape[0] or (ranked[1:] == ranked[:-1]).any()):
        raise InvalidParameterError(f"rows must be distinct row numbers below {shape[0]:,}")
    return order


def neighbors_to_csr(rows: np.ndarray, ids: np.ndarray, dists: np.ndarray, shape: tuple[int, int]) -> "scipy.sparse.csr_matrix":
    """A CSR matrix with row ``rows[i]`` holding ``ids[i]`` (``-1`` skipped) valued ``dists[i]``.

    Rows not in ``rows`` are empty. Within a row the entries stay in the given (distance)
    order, which is the order scikit-learn expects of a precomputed neighbours graph; zero
    distances are kept as explicit entries (they are edges, not absent ones). Ids outside
    ``[0, shape[1])`` other than ``-1`` raise InvalidParameterError (see :func:`check_neighbors`).
    """
    sp = _require_scipy()
    rows, ids, dists = np.asarray(rows), np.asarray(ids), np.asarray(dists)
    order = check_neighbors(rows, ids, dists, shape)
    valid = ids >= 0
    counts = np.zeros(shape[0], np.int64)
    counts[rows] = valid.sum(1)
    indptr = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    # rows ascending, so row-major flattening of the valid entries is CSR order
    v = valid[order]
    indices = ids[order][v]
    data = dists[order][v]
    idx_dtype = np.int32 if max(shape) < 2**31 and indices.shape[0] < 2**31 else np.int64
    return sp.csr_matrix((data, indices.astype(idx_dtype), indptr.astype(idx_dtype)), shape=shape)


def knn_graph(index: Any, store: Any, k: int, *, ef: int | None = None, exclude_self: bool = True, num_threads: int | None = None, progress: bool | None = None) -> "scipy.sparse.csr_matrix":
    """The k-nearest-neighbour graph of every live item of ``index`` (the self-join).

    Each live node's stored vector is searched with ``k + 1`` results, in parallel over all
    cores, starting at the node itself on level 0 (no descent from the entry point), and
    the node itself is dropped.

    Parameters
    ----------
    index : Hnsw
    store : VectorStore
        The index's vector store.
    k : int
        Neighbours per item. A ``k`` beyond what the live items can fill gives the same
        graph as the largest ``k`` they fill (searched as such: the cost does not grow with ``k``).
    ef : int, optional
        Beam width; default ``max(k + 1, 16)`` (not ``config.ef_search``: starting at the
        item itself needs a narrower beam than a search from the top; pass a larger ef
        for a higher recall). At most the NodeId count is used: that beam is exhaustive.
    exclude_self : bool
        True: ``k`` neighbours other than the item. False: the item itself first (distance
        0, as scikit-learn's ``KNeighborsTransformer`` keeps it, whatever the metric gives:
        under ``InnerProduct()`` an item's own ``1 - x.x`` may be negative or not its nearest,
        and the rest of the row ascends from the second entry) and ``k - 1`` others.
    num_threads : int, optional
        Threads (default: all cores).
    progress : bool, optional
        tqdm progress bar; default when stderr is a terminal. Ctrl-C stops after the
        current round (a fraction of a second) and raises ``KeyboardInterrupt``.

    Returns
    -------
    scipy.sparse.csr_matrix float32 (node_count, node_count)
        Row and column ``i`` are NodeId ``i``, i.e. the key ``index.key(i)``; with int keys
        ``0 .. n-1`` inserted in order that is the key itself. Values are the index
        metric's distances (squared L2 for ``L2()``, ``1 - cos`` for ``Cosine()``), each row
        best first (column indices are therefore not sorted; ``.sort_indices()`` sorts
        them). Rows of deleted NodeIds are empty; a row has fewer than ``k`` entries only
        when fewer live items exist (or, rarely, the search found fewer).

    Takes no lock and excludes nothing: adds, sets and removes may run meanwhile (the graph
    covers the NodeIds handed out when it began; an item removed meanwhile may still be
    in it). A compaction overlapping it (NodeIds change) makes it run again.
    """
    k = check_k(k, extra=1)
    exclude_self = check_flag("exclude_self", exclude_self)
    if ef is not None:  # checked before the first round; the default depends on the item count
        ef = check_ef(ef, GRAPH_MIN_EF)
    return index.state.read_stable(lambda: _self_join(index, store, k, ef, exclude_self, num_threads, progress))


def _self_join(index: Any, store: Any, k: int, ef: int | None, exclude_self: bool, num_threads: int | None,
               progress: bool | None) -> "scipy.sparse.csr_matrix":
    """:func:`knn_graph` once, over the NodeIds handed out when it begins."""
    count = index.node_count
    rows = index.check_store(store)  # read after the node count: they hold a row for each of its NodeIds
    live = np.flatnonzero(index.graph_arrays.tombstones[:count] == 0).astype(np.int32)
    n = live.shape[0]
    # A row holds at most every live item (the item itself included or not), so a larger k
    # only sizes result arrays and beams that stay empty; a beam of every NodeId already
    # visits every node the walk can reach, so a wider one finds nothing more.
    k = min(k, max(n - 1 if exclude_self else n, 1))
    k_search = k + 1 if exclude_self else k
    ef = min(graph_ef(ef, k_search), max(count, k_search))
    threads = resolve_threads(num_threads, max(n, 1))
    out_i = np.empty((n, k), np.int64)
    out_d = np.empty((n, k), np.float32)

    def search_round(start: int, stop: int) -> None:
        nids = live[start:stop]
        # [:, :dim]: an hnswlib file's kernel rows run on past the vector (see legacy.py);
        # read_rows reads again a row that a set tore while it was read (core.rowwrites)
        queries = read_rows(index.state, store, nids,
                            lambda ids: np.ascontiguousarray(stored_vectors(rows, ids)[:, : index.dim], np.float32))
        # each item's search starts at its own node: no descent, and the beam begins
        # where the answer is
        _, dists, ids = index.search_prepared(store, queries, k_search, ef=ef, num_threads=threads, starts=nids)
        ids[ids >= count] = -1  # items added since it began: past the matrix's columns
        out_i[start:stop], out_d[start:stop] = drop_self(ids, dists, nids, k, exclude_self)

    _rounds(n, threads, search_round, "knn_graph", progress)
    return neighbors_to_csr(live, out_i, out_d, (count, count))


def knn_join(index: Any, store: Any, queries: Any, k: int, *, ef: int | None = None, num_threads: int | None = None, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest live items of every query row: a batch join against an index.

    :meth:`Hnsw.search_batch` in rounds, with a progress bar and Ctrl-C between rounds.

    Parameters
    ----------
    index : Hnsw
    store : VectorStore
    queries : array_like (n, dim)
    k : int
    ef : int, optional
        Beam width (default ``config.ef_search``; ``max(ef, k)`` is used).
    num_threads : int, optional
        Threads (default: all cores).
    progress : bool, optional
        tqdm progress bar (default when stderr is a terminal).

    Returns
    -------
    keys : ndarray (n, k)
        Best first, padded as :meth:`Hnsw.search_batch` pads: int64 (padding -1) or object
        (ints past int64: padding -1; once a str key is given: padding None, in every row).
    distances : ndarray float32 (n, k)
        The index metric's distances (padding inf).

    Raises
    ------
    CapacityError
        The output (12 bytes per query x ``k``) and one search's arrays exceed the memory limit
        (:func:`~hnsw_numba.core.limits.check_allocation`); raised before the first search.
    """
    k = check_k(k)
    if not callable(getattr(index, "prepare_queries", None)):
        raise InvalidParameterError(f"index must be an Hnsw (for an hn.Index: hn.knn_join(*index.native, ...)), got {type(index).__name__}")
    q = index.prepare_queries(queries)  # validate everything before the first round
    n = q.shape[0]
    threads = resolve_threads(num_threads, max(n, 1))
    if n == 0:
        return index.search_batch(store, q, k, ef=ef, num_threads=threads)
    # The output (8-byte keys, 4-byte distances) is allocated once, before the first search,
    # and filled in place; each search takes at most `piece` queries, so its own arrays stay
    # within JOIN_PIECE_BYTES (or one query's) on top of the output.
    piece = max(1, min(n, MAX_ROUND, JOIN_PIECE_BYTES // (k * RESULT_ENTRY_BYTES)))
    what = f"results for {n:,} queries x k={k:,}"
    check_allocation(n * k * 12 + piece * k * RESULT_ENTRY_BYTES, what)
    try:
        out = [np.empty((n, k), index.key_map.node_keys.dtype), np.empty((n, k), np.float32)]
    except MemoryError:  # under the limit yet refused (an address-space cap, no overcommit)
        raise CapacityError(f"{what} would need {readable_bytes(n * k * 12)}, which could not be allocated") from None

    padded_minus_one: list[tuple[int, int]] = []  # pieces whose padding is key -1

    def search_round(start: int, stop: int) -> None:
        for at in range(start, stop, piece):
            end = min(stop, at + piece)
            # the prepared rows go straight to the search (preparing twice could move a
            # cosine query by an ulp and make results differ from one search_batch call)
            keys, dists, ids = index.search_prepared(store, q[at:end], k, ef=ef, num_threads=threads)
            if keys.dtype != out[0].dtype:  # a str (or huge int) key added meanwhile: keys are objects from here
                out[0] = out[0].astype(object)
            out[0][at:end], out[1][at:end] = keys, dists
            pad = ids < 0
            if pad.any() and keys[pad][0] is not None:
                padded_minus_one.append((at, end))

    _rounds(n, threads, search_round, "knn_join", progress)
    if padded_minus_one and out[0].dtype == object and index.key_map.keys_for(np.full(1, -1, np.int32))[0] is None:
        # a str key added during the join: every row pads with None, as a search_batch after it pads
        for at, end in padded_minus_one:
            rows = out[0][at:end]
            rows[rows == -1] = None  # int keys are >= 0: -1 is padding only
    return out[0], out[1]
