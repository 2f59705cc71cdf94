"""Dask fan-out on a real distributed.LocalCluster (2 worker processes) against a saved index."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("scipy")

import dask  # noqa: E402

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402

from conftest import build, clustered  # noqa: E402
from naive import exact_knn, recall  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # One cluster for the module: starting worker processes is the slow part.
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    r = np.random.default_rng(11)
    data, queries = clustered(r, 3000, 16), clustered(r, 800, 16)
    idx, store = build(hn.Cosine(), data, m=12, efc=100)
    target = tmp_path_factory.mktemp("dask") / "index.zarr"
    hn.save(target, idx, store)
    return target, idx, store, queries


def test_search_identical_to_local_and_one_load_per_worker(client, saved) -> None:
    target, idx, store, queries = saved
    client.run(hdask.clear_cache)
    q = da.from_array(queries, chunks=(100, 8))  # column chunks are merged
    keys, dists = hdask.search(str(target), q, 10, ef=40)
    assert keys.shape == (800, 10) and keys.dtype == np.int64 and dists.dtype == np.float32
    assert keys.numblocks == (8, 1)
    want_k, want_d = idx.search_batch(store, queries, 10, ef=40)
    for _ in range(2):  # the second run reuses every worker's open index
        got_k, got_d = dask.compute(keys, dists)
        np.testing.assert_array_equal(got_k, want_k)
        np.testing.assert_array_equal(got_d, want_d)
    counts = client.run(hdask.load_counts)
    assert len(counts) == 2
    loads = [c.get(str(target), 0) for c in counts.values()]
    assert max(loads) == 1 and sum(loads) >= 1  # 16 tasks, at most one load per worker
    client.run(hdask.preload, str(target))  # warming an open index loads nothing again
    assert all(c[str(target)] == 1 for c in client.run(hdask.load_counts).values())
    assert hdask.load_counts().get(str(target), 0) == 0  # nothing was loaded on the client


def test_str_keys_and_metric_check(client, tmp_path) -> None:
    r = np.random.default_rng(5)
    data = clustered(r, 500, 8)
    idx, store = build(hn.L2(), data, keys=[f"w{i}" for i in range(500)])
    hn.save(tmp_path / "s.zarr", idx, store)
    keys, dists = hdask.search(tmp_path / "s.zarr", da.from_array(data[:50], chunks=25), 3, metric="l2")
    got_k, got_d = dask.compute(keys, dists)
    want_k, want_d = idx.search_batch(store, data[:50], 3)
    assert got_k.dtype == object and got_k.tolist() == want_k.tolist()
    np.testing.assert_array_equal(got_d, want_d)
    with pytest.raises(hn.MetricMismatchError):
        hdask.search(tmp_path / "s.zarr", da.from_array(data[:5]), 3, metric=hn.Cosine())
    # open_cached checks the metric on a cache hit too (it returned the cached index for any name)
    hdask.open_cached(tmp_path / "s.zarr", "l2")
    with pytest.raises(hn.MetricMismatchError):
        hdask.open_cached(tmp_path / "s.zarr", "cosine")
    with pytest.raises(hn.InvalidParameterError):
        hdask.open_cached(tmp_path / "s.zarr", "bogus")


def test_distributed_knn_graph_matches_local(client, tmp_path) -> None:
    r = np.random.default_rng(3)
    data = clustered(r, 1200, 12)
    x = da.from_array(data, chunks=(300, 12))
    target = tmp_path / "graph.zarr"
    ind, dist = hdask.knn_graph(x, 8, target=target, metric="l2", m=12, ef_construction=100, ef=64)
    assert ind.shape == (1200, 8) and ind.numblocks == (4, 1)
    g = hdask.to_csr(ind, dist)
    idx, store = hn.load(target, hn.L2())
    local = idx.knn_graph(store, 8, ef=64)
    assert (g != local).nnz == 0  # same saved graph, same searches
    truth, _ = exact_knn("l2", data, data, 8, exclude_self=True)
    assert recall(g.indices.reshape(1200, 8), truth) >= 0.98
    # build=False reuses the saved index
    ind2, _ = hdask.knn_graph(x, 8, target=target, build=False, ef=64, exclude_self=False)
    first = ind2[:, 0].compute()
    np.testing.assert_array_equal(first, np.arange(1200))


def test_bad_input(saved) -> None:
    target, _, _, queries = saved
    q = da.from_array(queries)
    with pytest.raises(hn.InvalidParameterError):
        hdask.search(queries, q, 3)  # an array is not a target
    with pytest.raises(hn.InvalidParameterError):
        hdask.search(str(target), queries, 3)  # not a dask array
    with pytest.raises(hn.DimensionMismatchError):
        hdask.search(str(target), da.zeros((10, 5), chunks=5), 3)
    for kw in ({"ef": 0}, {"num_threads": 0}, {"mmap": "yes"}):
        with pytest.raises(hn.InvalidParameterError):
            hdask.search(str(target), q, 3, **kw)
    with pytest.raises(hn.InvalidParameterError):
        hdask.search(str(target), q, 0)
    with pytest.raises(hn.IndexFormatError):
        hdask.search(str(target.parent), q, 3)  # not a saved index


def test_a_local_url_target_is_reopened_after_a_new_save(tmp_path) -> None:
    """``file://`` and ``local://`` URLs name local saves: a search after a new save at the
    same place answers from the new index.

    Fails when only ``file://`` counts as local: ``local://`` kept serving the old index.
    """
    data = clustered(np.random.default_rng(7), 300, 8)
    path = tmp_path / "re.zarr"
    q = da.from_array(data[:4], chunks=2)
    with dask.config.set(scheduler="threads"):  # this process's cache, as on a worker
        for prefix in ("file://", "local://"):
            hdask.clear_cache()
            for rows, want in ((data, np.arange(4)), (data[::-1].copy(), 299 - np.arange(4))):
                index = hn.Index(8, metric="l2")
                index.add(rows)  # key i = row i of rows
                index.save(path)
                keys, _ = dask.compute(*hdask.search(prefix + str(path), q, 1))
                np.testing.assert_array_equal(keys[:, 0], want)
    hdask.clear_cache()


def test_a_save_copied_over_a_served_one_is_reopened(tmp_path) -> None:
    """``cp -r new.zarr/. serving.zarr/`` keeps the directory's inode and times: the fan-out's
    cache, keyed on them, kept answering from the old index (``hn.open`` read the new one)."""
    data = clustered(np.random.default_rng(9), 300, 8)
    q = da.from_array(data[:4], chunks=2)
    for rows, name in ((data, "serving.zarr"), (data[::-1].copy(), "staging.zarr")):
        index = hn.Index(8, metric="l2")
        index.add(rows)
        index.save(tmp_path / name)
    with dask.config.set(scheduler="threads"):
        hdask.clear_cache()
        keys, _ = dask.compute(*hdask.search(tmp_path / "serving.zarr", q, 1))
        np.testing.assert_array_equal(keys[:, 0], np.arange(4))
        for src in sorted((tmp_path / "staging.zarr").rglob("*")):  # as cp -r: existing files written over
            dst = tmp_path / "serving.zarr" / src.relative_to(tmp_path / "staging.zarr")
            if src.is_file():
                dst.write_bytes(src.read_bytes())
        keys, _ = dask.compute(*hdask.search(tmp_path / "serving.zarr", q, 1))
        np.testing.assert_array_equal(keys[:, 0], 299 - np.arange(4))
    hdask.clear_cache()


def test_knn_graph_over_text_keys_is_refused_up_front(tmp_path) -> None:
    """``knn_graph(build=False)`` needs keys 0 .. n-1: an index of str keys raises
    InvalidParameterError when the graph is made, not a bare TypeError inside a task."""
    data = clustered(np.random.default_rng(8), 50, 8)
    idx, store = build(hn.L2(), data, keys=[f"k{i}" for i in range(50)])
    hn.save(tmp_path / "text.zarr", idx, store)
    with pytest.raises(hn.InvalidParameterError, match="text keys"):
        hdask.knn_graph(da.from_array(data, chunks=25), 3, target=tmp_path / "text.zarr", build=False)
