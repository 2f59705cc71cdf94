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


@pytest.fixture
def memory_root():
    fsspec = pytest.importorskip("fsspec")
    name = f"hnsw-fanout-{np.random.default_rng().integers(1 << 40):x}"
    yield name
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


def _brute(x: np.ndarray, k: int) -> np.ndarray:
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, 1)[:, :k]


def test_a_remote_target_is_reopened_after_a_new_save(memory_root) -> None:
    """Saves over one fsspec URL in turn, the second with another metric: each search answers
    from the save it follows.

    Failed when remote targets were taken as immutable: the process's cached copy of the
    first save kept answering, and the save with another metric raised MetricMismatchError.
    """
    b = np.random.default_rng(12).standard_normal((300, 8)).astype(np.float32)
    url = f"memory://{memory_root}/idx.zarr"
    q = da.from_array(b[:5], chunks=5)
    with dask.config.set(scheduler="threads"):  # this process's cache, as on a worker
        hdask.clear_cache()
        for metric, first in (("l2", 5000), ("cosine", 7000), ("l2", 9000)):
            index = hn.Index(8, metric=metric)
            index.add(np.arange(first, first + 300), b)
            index.save(url)
            keys, _ = dask.compute(*hdask.search(url, q, 1))
            np.testing.assert_array_equal(keys[:, 0], first + np.arange(5))
    hdask.clear_cache()


def test_knn_graph_builds_over_a_remote_target_answer_from_the_new_build(memory_root) -> None:
    """Two ``knn_graph`` builds of other data to one fsspec URL: the second graph is its own
    data's, and a build lets this process's copy of the replaced index go.

    Failed when remote targets were taken as immutable: the second graph was searched in
    the first data's index (about 0.2% of its neighbours right).
    """
    r = np.random.default_rng(12)
    a, b = r.standard_normal((300, 8)).astype(np.float32), r.standard_normal((300, 8)).astype(np.float32)
    url = f"memory://{memory_root}/idx.zarr"
    with dask.config.set(scheduler="threads"):
        hdask.clear_cache()
        for x in (a, b):
            ind, _ = hdask.knn_graph(da.from_array(x, chunks=100), 5, target=url, ef=200)
            assert (dask.compute(ind)[0] == _brute(x, 5)).mean() > 0.95
        assert url in hdask.cached_targets()
        hdask.knn_graph(da.from_array(a, chunks=100), 5, target=url)
        assert url not in hdask.cached_targets()
    hdask.clear_cache()


def test_a_one_file_remote_save_is_reopened_when_replaced(tmp_path, memory_root) -> None:
    """A ``.zip`` save read through ``zip::memory://...`` and then replaced by another: the
    search answers from the new file.

    Failed when remote targets were taken as immutable: the first zip's index kept answering.
    """
    fsspec = pytest.importorskip("fsspec")
    data = clustered(np.random.default_rng(13), 200, 8)
    fs = fsspec.filesystem("memory")
    url = f"zip::memory://{memory_root}/one.zip"
    q = da.from_array(data[:4], chunks=2)
    with dask.config.set(scheduler="threads"):
        hdask.clear_cache()
        for first in (0, 1000):
            index = hn.Index(8, metric="l2")
            index.add(np.arange(first, first + 200), data)
            index.save(tmp_path / f"{first}.zip")
            fs.put_file(str(tmp_path / f"{first}.zip"), f"/{memory_root}/one.zip")
            keys, _ = dask.compute(*hdask.search(url, q, 1))
            np.testing.assert_array_equal(keys[:, 0], first + np.arange(4))
    hdask.clear_cache()


def test_a_sharded_index_searches_on_an_adaptive_cluster_scaled_to_zero(tmp_path) -> None:
    """An adaptive cluster without workers runs a sharded search and self-join once a worker
    arrives, as it runs any Dask graph.

    Failed when placement needed a worker up front: InvalidParameterError("the Dask cluster
    has no workers") before any task was sent.
    """
    x = clustered(np.random.default_rng(14), 400, 8)
    q = da.from_array(x[:20], chunks=10)
    with dask.config.set(scheduler="threads"):
        index = hdask.build(da.from_array(x, chunks=200), tmp_path / "s.zarr", metric="l2", n_shards=2, m=8, ef_construction=64)
        want = dask.compute(*index.search(q, 3))
        want_graph = dask.compute(*index.knn_graph(3))
    with distributed.LocalCluster(n_workers=0, processes=False, threads_per_worker=1, dashboard_address=None) as cluster:
        cluster.adapt(minimum=0, maximum=1, interval="200ms")
        with distributed.Client(cluster) as c:
            assert not c.nthreads()
            for got, expected in ((dask.compute(*index.search(q, 3)), want), (dask.compute(*index.knn_graph(3)), want_graph)):
                for g, w in zip(got, expected):
                    np.testing.assert_array_equal(g, w)


def test_a_bad_key_inside_a_shard_is_reported_at_its_data_row(tmp_path) -> None:
    """A repeated key at data row 250 of a build of three 100-row shards.

    Failed with the shard's own row numbers: "rows [0, 100)" named the wrong rows.
    """
    x = clustered(np.random.default_rng(15), 300, 8)
    keys = np.arange(300)
    keys[250] = keys[249]
    with dask.config.set(scheduler="synchronous"):
        for k in (keys, da.from_array(keys, chunks=70)):
            with pytest.raises(hn.InvalidParameterError, match=r"rows \[200, 300\) of the data: keys must be strictly increasing.*data row 250"):
                hdask.build(da.from_array(x, chunks=70), tmp_path / "k.zarr", metric="l2", n_shards=3, keys=k)


def test_fan_out_knn_graph_reports_a_nan_at_its_data_row(tmp_path) -> None:
    """A NaN at data row 250 of a fan-out ``knn_graph`` build read in chunks of 100.

    Failed with the row's place in its chunk only: "vector 50 contains NaN or inf".
    """
    x = clustered(np.random.default_rng(16), 300, 8)
    x[250, 3] = np.nan
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(hn.InvalidVectorError, match=r"rows \[200, 300\) of the data \(vector i is data row 200 \+ i\): vector 50 "):
            hdask.knn_graph(da.from_array(x, chunks=100), 3, target=tmp_path / "nan.zarr")
    assert not (tmp_path / "nan.zarr").exists()


def test_fan_out_knn_graph_of_unknown_chunk_sizes_says_what_to_do(tmp_path) -> None:
    """``knn_graph`` of a dask array whose chunk sizes are unknown (a boolean selection).

    Failed with "max_nodes must be an int, got nan" from the build (and a failure inside
    dask with ``build=False``) instead of the sharded path's hint.
    """
    x = clustered(np.random.default_rng(17), 300, 8)
    arr = da.from_array(x, chunks=100)
    unknown = arr[arr[:, 0] > 0]
    saved = tmp_path / "saved.zarr"
    index = hn.Index(8, metric="l2")
    index.add(x)
    index.save(saved)
    with dask.config.set(scheduler="synchronous"):
        for target, build in ((tmp_path / "new.zarr", True), (saved, False)):
            with pytest.raises(hn.InvalidParameterError, match=r"unknown chunk sizes: call compute_chunk_sizes\(\) first"):
                hdask.knn_graph(unknown, 3, target=target, build=build)
    assert not (tmp_path / "new.zarr").exists()
