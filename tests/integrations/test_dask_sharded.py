"""Sharded indexes on a real distributed.LocalCluster (2 worker processes, 1 thread each).

The oracle of every search is the same search done here: each shard loaded with
``hn.load``, searched with ``search_batch`` and the lists merged (stable by distance, in
shard order); brute force bounds the recall.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("scipy")

import dask  # noqa: E402

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402
from hnsw_numba.dask.manifest import Manifest  # noqa: E402

from conftest import clustered  # noqa: E402
from naive import exact_knn, recall  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
DIM = 16


@pytest.fixture(scope="module")
def client():
    # The configuration docs/scaling.md advises: without work stealing a shard's tasks run
    # only on the worker serving it; Dask's monitoring sampled less often
    assert hdask.CLUSTER_CONFIG["distributed.scheduler.work-stealing"] is False
    with dask.config.set(hdask.CLUSTER_CONFIG):
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    r = np.random.default_rng(21)
    x, q = clustered(r, 3000, DIM), clustered(r, 400, DIM)
    path = tmp_path_factory.mktemp("src") / "data.npy"
    np.save(path, x)
    return x, q, path


@pytest.fixture(scope="module")
def built(client, data, tmp_path_factory):
    x, _, path = data
    target = tmp_path_factory.mktemp("sharded") / "index.zarr"
    index = hdask.build(str(path), target, metric="l2", n_shards=3, m=8, ef_construction=64)
    return index, target


def local_merge(target, queries: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
    """Search every shard in this process and merge: the oracle of the sharded search."""
    index = hdask.ShardedIndex(target)
    keys, dists = [], []
    for i in range(index.n_shards):
        idx, st = hn.load(index.shard_url(i), hn.L2())
        kk, dd = idx.search_batch(st, queries, k, ef=ef, num_threads=1)
        keys.append(kk.astype(np.int64))
        dists.append(dd)
    kk, dd = np.concatenate(keys, 1), np.concatenate(dists, 1)
    shard_order = np.repeat(np.arange(len(keys)), k)[None, :].repeat(len(queries), 0)
    order = np.lexsort((shard_order, dd), axis=1)[:, :k]  # by distance, then shard
    return np.take_along_axis(kk, order, 1), np.take_along_axis(dd, order, 1)


def brute(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return exact_knn("l2", x, q, k)[0]


def test_build_layout_and_shards_open_alone(built, data) -> None:
    index, target = built
    x = data[0]
    m = hdask.read_manifest(target)
    assert m.n_shards == 3 and m.count == 3000 and m.metric == "l2" and m.dtype == "float32"
    assert [(s.key_min, s.key_max, s.count) for s in m.shards] == [(0, 999, 1000), (1000, 1999, 1000), (2000, 2999, 1000)]
    assert list(m.bounds) == [1000, 2000]
    assert sorted(p.name for p in (target / "shards").iterdir()) == sorted([s.name for s in m.shards] + ["zarr.json"])
    idx, st = hn.load(index.shard_url(1), hn.L2())  # a shard is a normal saved index
    assert len(idx) == 1000 and idx.node_id(1000) == 0
    np.testing.assert_array_equal(st.vector(0), x[1000])
    assert hdask.is_sharded(target) and not hdask.is_sharded(index.shard_url(0))


def test_search_equals_local_merge_and_each_worker_opens_its_shards(client, built, data) -> None:
    index, target = built
    x, q, _ = data
    client.run(hdask.clear_cache)
    before = hdask.load_counts()  # what earlier tests of this process loaded
    keys, dists = hdask.search(str(target), da.from_array(q, chunks=(100, 8)), 10, ef=32)
    assert keys.shape == (400, 10) and keys.dtype == np.int64 and dists.dtype == np.float32
    got_k, got_d = dask.compute(keys, dists)
    want_k, want_d = local_merge(target, q, 10, 32)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_d, want_d)
    assert recall(got_k, brute(x, q, 10)) >= 0.95
    placement = index.placement(client)
    counts = client.run(hdask.load_counts)
    urls = {index.shard_url(i): w for i, w in placement.items()}
    for worker, loaded in counts.items():  # one load per shard, on the worker serving it
        assert {u for u in loaded if u in urls} == {u for u, w in urls.items() if w == worker}
        assert all(loaded[u] == 1 for u in loaded if u in urls)
    assert len(set(placement.values())) == 2
    assert hdask.load_counts() == before  # the client opened nothing


def test_knn_graph_sharded_equals_local(client, data, tmp_path) -> None:
    x = data[0][:1200]
    xd = da.from_array(x, chunks=(400, DIM))
    target = tmp_path / "graph.zarr"
    ind, dist = hdask.knn_graph(xd, 6, target=target, metric="l2", n_shards=3, m=8, ef_construction=64, ef=32, chunk_rows=250)
    assert ind.shape == (1200, 6) and ind.numblocks[0] == 6
    got_i, got_d = dask.compute(ind, dist)
    # oracle: each row's stored vector searched in every shard here, merged, self dropped
    want_k, want_d = local_merge(target, x, 7, 32)
    for r in range(1200):
        keep = want_k[r] != r
        np.testing.assert_array_equal(got_i[r], want_k[r][keep][:6])
        np.testing.assert_array_equal(got_d[r], want_d[r][keep][:6])
    truth = exact_knn("l2", x, x, 6, exclude_self=True)[0]
    assert recall(got_i, truth) >= 0.95
    g = hdask.to_csr(ind, dist)
    assert g.shape == (1200, 1200) and g.nnz == 1200 * 6
    # build=False over the sharded target, the item itself first
    rows, nk, _ = hdask.ShardedIndex(target).knn_graph(6, ef=32, exclude_self=False)
    np.testing.assert_array_equal(rows.compute(), np.arange(1200))
    np.testing.assert_array_equal(nk[:, 0].compute(), np.arange(1200))


def test_shards_with_a_walk_copy_answer_as_float32_shards(client, data, tmp_path) -> None:
    x, q, path = data
    index = hdask.build(str(path), tmp_path / "walk.zarr", metric="l2", n_shards=2, m=8, ef_construction=64,
                        dtype="float32+float16")
    assert index.manifest.dtype == "float32+float16"
    _, store = index.load_shard(0)
    assert store.walk_copy
    keys, dists = dask.compute(*index.search(da.from_array(q, chunks=200), 10, ef=64))
    truth = brute(x, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(keys.tolist(), truth.tolist())]) >= 0.95
    ref = ((x[keys] - q[:, None, :]) ** 2).sum(-1)  # the float32 vectors' distances
    np.testing.assert_allclose(dists, ref, rtol=1e-4, atol=1e-4)
    index.set([3], x[4:5])  # a mutation rewrites its shard with the copy
    assert hdask.read_manifest(tmp_path / "walk.zarr").dtype == "float32+float16"


def test_delete_set_append_routed_and_atomic(client, data, tmp_path) -> None:
    x, q, path = data
    target = tmp_path / "mut.zarr"
    index = hdask.build(str(path), target, metric="l2", n_shards=3, m=8, ef_construction=64)
    before = {s.name for s in index.manifest.shards}
    index.delete([5, 1500])  # shards 0 and 1 get new directories, shard 2 keeps its own
    after = [s.name for s in index.manifest.shards]
    assert after[2] in before and after[0] not in before and after[1] not in before
    assert [s.count for s in index.manifest.shards] == [999, 999, 1000]
    with pytest.raises(hn.KeyNotFoundError):
        index.delete([7, 5])  # 5 is gone: nothing changes
    assert [s.name for s in hdask.read_manifest(target).shards] == after
    assert sorted(p.name for p in (target / "shards").iterdir()) == sorted(after + ["zarr.json"])
    r = np.random.default_rng(3)
    v = clustered(r, 3, DIM)
    index.set([7, 2999, 10_000], v)  # update, update, new key (owned by the last shard)
    index.append(da.from_array(clustered(r, 500, DIM), chunks=200), shard_size=300)
    m = hdask.read_manifest(target)
    assert m.n_shards == 5 and m.count == 3000 - 2 + 1 + 500 and m.generation == 4
    assert (m.shards[3].key_min, m.shards[4].key_max) == (10_001, 10_500)
    got = dask.compute(*index.search(da.from_array(v, chunks=2), 1, ef=32))
    np.testing.assert_array_equal(got[0][:, 0], [7, 2999, 10_000])
    keys, dists = index.search(da.from_array(q, chunks=200), 10, ef=32, split_every=2)  # 5 -> 3 -> 2 -> 1 lists
    got_k, got_d = dask.compute(keys, dists)
    want_k, want_d = local_merge(target, q, 10, 32)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_d, want_d)
    assert not np.isin(got_k, [5, 1500]).any()
    with pytest.raises(hn.DimensionMismatchError):
        index.set([1], np.zeros((1, DIM + 1)))
    with pytest.raises(hn.InvalidParameterError):
        index.append(da.from_array(x[:10]), keys=np.arange(10))  # keys below the stored ones


def test_manifest_and_shard_validation(client, built, data, tmp_path) -> None:
    _, target = built
    doc = json.loads((target / "zarr.json").read_text())
    m = Manifest.from_attrs(doc["attributes"], "x")
    bad = tmp_path / "bad.zarr"

    def write(attrs) -> None:
        bad.mkdir(exist_ok=True)
        (bad / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs}))

    edited = json.loads(json.dumps(doc["attributes"]))
    edited["hnsw_numba"]["shards"][0]["count"] = 5
    write(edited)
    with pytest.raises(hn.IndexFormatError, match="CRC"):
        hdask.ShardedIndex(bad)
    cases = [
        {"bounds": (2000, 1000)},  # not increasing
        {"metric": "nope"},
        {"config": {**m.config, "m": 1}},
        {"dtype": "int8"},
    ]
    from dataclasses import replace

    for change in cases:
        body = replace(m, **change).to_attrs()
        write(body)
        with pytest.raises(hn.IndexFormatError):
            hdask.ShardedIndex(bad)
    shard0 = replace(m.shards[0], key_max=1500)  # overlaps shard 1's range
    write(replace(m, shards=(shard0,) + m.shards[1:]).to_attrs())
    with pytest.raises(hn.IndexFormatError, match="range"):
        hdask.ShardedIndex(bad)
    # a manifest whose counts disagree with a shard: found when the shard is opened
    (bad / "shards").symlink_to(target / "shards")
    write(replace(m, shards=(replace(m.shards[0], count=999),) + m.shards[1:]).to_attrs())
    keys, _ = hdask.ShardedIndex(bad).search(da.from_array(data[1][:10]), 3)
    with pytest.raises(hn.IndexFormatError, match="manifest says"):
        keys.compute()
    write(replace(m, shards=(replace(m.shards[0], checksum=m.shards[0].checksum ^ 1),) + m.shards[1:]).to_attrs())
    keys, _ = hdask.ShardedIndex(bad).search(da.from_array(data[1][:10]), 3)
    with pytest.raises(hn.IndexFormatError, match="checksum"):
        keys.compute()
    with pytest.raises(hn.InvalidParameterError):
        hdask.build(data[0], tmp_path / "x", metric="l2")  # not a dask array nor a path
    with pytest.raises(hn.InvalidParameterError):
        hdask.build(da.from_array(data[0]), index_dir(tmp_path), metric="l2")  # holds a plain index


def index_dir(tmp_path: Path) -> Path:
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=4))
    st = hn.InMemoryVectorStore(DIM, 4)
    idx.insert(st, 1, np.ones(DIM, np.float32))
    hn.save(tmp_path / "plain.zarr", idx, st)
    return tmp_path / "plain.zarr"


def _kill_busy_worker(client, pids: dict) -> str:
    """SIGKILL the process of a worker that is running a task now; returns its address."""
    for _ in range(400):
        busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            return busy[0]
        time.sleep(0.005)
    raise AssertionError("no worker was busy")


def test_worker_killed_during_search_and_build(client, built, data, tmp_path) -> None:
    index, target = built
    x, q, path = data
    queries = da.from_array(np.concatenate([q] * 10), chunks=(200, DIM)).persist()
    keys, dists = index.search(queries, 10, ef=48)
    want = dask.compute(keys, dists)
    pids = client.run(os.getpid)
    futures = client.compute([keys, dists])
    _kill_busy_worker(client, pids)
    got = client.gather(futures)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    client.wait_for_workers(2, timeout=60)

    # a build whose worker dies mid-way: Dask reruns the shard elsewhere, same shards
    ref = hdask.build(str(path), tmp_path / "ref.zarr", metric="l2", n_shards=6, m=12, ef_construction=100)
    pids = client.run(os.getpid)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("i", hdask.build(
        str(path), tmp_path / "faulty.zarr", metric="l2", n_shards=6, m=12, ef_construction=100)))
    t.start()
    _kill_busy_worker(client, pids)
    t.join(120)
    faulty = box["i"]
    assert [s.checksum for s in faulty.manifest.shards] == [s.checksum for s in ref.manifest.shards]
    client.wait_for_workers(2, timeout=60)


def _wait_idle(client) -> None:
    """Until no worker runs a task (a cancelled task runs on to its end)."""
    deadline = time.monotonic() + 120
    while any(client.run(lambda dask_worker: len(dask_worker.state.all_running_tasks)).values()):
        assert time.monotonic() < deadline, "the workers stayed busy"
        time.sleep(0.05)


def test_a_failed_write_returns_after_its_running_tasks(client, tmp_path) -> None:
    """A rebuild whose first shard fails at once while the other is being built: the build
    raises once that shard's task has ended and its directory is removed, so the index and
    its files stay as they were.

    Fails when the failed write cleans up right after cancelling: the running task (which a
    cancel does not stop) saved its shard into the index afterwards.
    """
    x = clustered(np.random.default_rng(15), 4000, DIM)
    x[0, 0] = np.nan  # shard 0 fails on its first row; shard 1 builds 2000 rows
    np.save(tmp_path / "bad.npy", x)
    target = tmp_path / "kept.zarr"
    hdask.build(da.from_array(x[1:401], chunks=200), target, metric="l2", n_shards=2, m=8, ef_construction=32)
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    with pytest.raises(hn.InvalidVectorError):
        hdask.build(str(tmp_path / "bad.npy"), target, metric="l2", n_shards=2, m=16, ef_construction=200)
    _wait_idle(client)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before


CHILD = textwrap.dedent(
    """
    import sys, threading, distributed
    import hnsw_numba.dask as hdask
    if __name__ == "__main__":
        src, targets = sys.argv[1], sys.argv[2:]
        # the whole cluster lives in this process: killing it kills every worker
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c, \\
                distributed.Client(c):
            builds = [threading.Thread(target=hdask.build, args=(src, t), kwargs=dict(
                metric="l2", n_shards=12, m=12, ef_construction=100)) for t in targets]
            for b in builds:
                b.start()
            for b in builds:
                b.join()
    """
)


def test_cluster_killed_during_build_keeps_previous_index(client, data, tmp_path) -> None:
    x, q, path = data
    fresh, kept = tmp_path / "fresh.zarr", tmp_path / "kept.zarr"
    old = hdask.build(da.from_array(x[:900], chunks=300), kept, metric="l2", n_shards=2, m=8, ef_construction=64)
    names = {s.name for s in old.manifest.shards}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = subprocess.Popen([sys.executable, str(script), str(path), str(fresh), str(kept)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())

    def new_shards(target: Path) -> int:
        d = target / "shards"
        return sum(1 for e in d.iterdir() if e.is_dir() and not e.name.startswith(".") and e.name not in names) if d.exists() else 0

    try:
        deadline = time.monotonic() + 120
        while not (new_shards(fresh) and new_shards(kept)):  # kill once both builds wrote a shard
            assert time.monotonic() < deadline, "the builds never wrote a shard"
            assert p.poll() is None, "the child ended before it was killed"
            time.sleep(0.01)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    again = hdask.ShardedIndex(kept)  # the previous index, whole
    assert {s.name for s in again.manifest.shards} == names and len(again) == 900
    for i in range(again.n_shards):
        again.load_shard(i)  # checksum, counts and configuration match the manifest
    with pytest.raises(FileNotFoundError):  # no index where there was none
        hdask.ShardedIndex(fresh)
    # the next build over each target removes what the killed one left
    for t in (fresh, kept):
        ix = hdask.build(da.from_array(x[:600], chunks=300), t, metric="l2", n_shards=2, m=8, ef_construction=64)
        assert sorted(e.name for e in (t / "shards").iterdir()) == sorted([s.name for s in ix.manifest.shards] + ["zarr.json"])


def test_merge_ranked_ties_by_shard_whatever_the_grouping() -> None:
    from hnsw_numba.dask.tasks import merge_ranked

    r = np.random.default_rng(8)
    n, k, shards = 40, 5, 5
    parts = [(r.integers(0, 10**6, (n, k)), np.sort(r.integers(0, 3, (n, k)), 1).astype(np.float32),
              np.full((n, k), s, np.int32)) for s in range(shards)]  # distances 0-2: many ties
    kk, dd = np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)
    order = np.lexsort((np.repeat(np.arange(shards), k)[None, :].repeat(n, 0), dd), axis=1)[:, :k]
    want = np.take_along_axis(kk, order, 1), np.take_along_axis(dd, order, 1)
    # the groups one worker each would hold (not contiguous), merged in another order
    got = merge_ranked([merge_ranked([parts[3], parts[1]], k), merge_ranked([parts[4], parts[0], parts[2]], k)], k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_key_ranges_and_row_plan() -> None:
    from hnsw_numba.dask.write import plan_rows

    e = [hdask.ShardEntry(f"0000{i}-0000000{i}", 1, 1, lo, lo, 0, 0) for i, lo in enumerate((0, 10, 20))]
    m = Manifest("l2", "float", "float32", {"dim": 2, "m": 4, "ef_construction": 8, "ef_search": 8, "seed": 0},
                 tuple(e), (10, 20))
    np.testing.assert_array_equal(m.owner_of([-(2**63), -5, 0, 9, 10, 19, 20, 2**63 - 1]), [0, 0, 0, 0, 1, 1, 2, 2])
    assert m.next_key == 21 and Manifest.from_attrs(m.to_attrs(), "m") == m
    assert plan_rows(10, 3, None) == [(0, 3), (3, 6), (6, 10)]
    assert plan_rows(10, None, 4) == [(0, 3), (3, 6), (6, 10)]  # ceil(10 / 4) near-equal blocks
    for bad in ((10, 0, None), (10, 11, None), (10, 2, 5), (10, None, 0)):
        with pytest.raises(hn.InvalidParameterError):
            plan_rows(*bad)


def test_large_shards_are_saved_renumbered(monkeypatch, tmp_path) -> None:
    from hnsw_numba.core import reorder

    monkeypatch.setattr(reorder, "READ_MOSTLY_REORDER", 250)  # shards of 300 rows: renumbered
    x = clustered(np.random.default_rng(9), 600, 8)
    with dask.config.set(scheduler="synchronous"):  # in this process, so the threshold applies
        ix = hdask.build(da.from_array(x, chunks=300), str(tmp_path / "r"), metric="l2", n_shards=2, m=8, ef_construction=32)
        k, _ = dask.compute(*hdask.search(str(tmp_path / "r"), da.from_array(x[:60], chunks=30), 3, metric="l2"))
    assert (k[:, 0] == np.arange(60)).mean() >= 0.95
    for i, lo in ((0, 0), (1, 300)):
        shard, _ = hn.load(ix.shard_url(i), hn.L2())
        shard.check_integrity()
        ids = [shard.node_id(key) for key in range(lo, lo + 300)]
        assert sorted(ids) == list(range(300)) and ids != list(range(300))


def test_fsspec_url_target_without_a_cluster() -> None:
    pytest.importorskip("fsspec")
    import fsspec

    x = clustered(np.random.default_rng(8), 600, 8)
    url = "memory://hnsw-test/sharded"
    with dask.config.set(scheduler="synchronous"):  # Dask's local scheduler, no client
        ix = hdask.build(da.from_array(x, chunks=200), url, metric="cosine", n_shards=3, m=8, ef_construction=32,
                         dtype="float16")
        assert hdask.is_sharded(url) and ix.placement() is None
        k, _ = dask.compute(*hdask.search(url, da.from_array(x[:40], chunks=20), 3, metric="cosine"))
        assert (k[:, 0] == np.arange(40)).mean() >= 0.95
        ix.delete([1, 500])
        names = sorted(s.name for s in hdask.ShardedIndex(url).manifest.shards)
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/hnsw-test/sharded/shards", detail=False)) == names + ["zarr.json"]
    assert len(hn.load(ix.shard_url(0), hn.Cosine())[0]) == 199
    fs.rm("/hnsw-test", recursive=True)


def test_a_bad_progress_value_fails_before_any_file(tmp_path) -> None:
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    target = tmp_path / "never.zarr"
    for bad in ("yes", 1, 0.5):
        with pytest.raises(hn.InvalidParameterError, match="progress"):
            hdask.build(da.from_array(x, chunks=25), target, metric="l2", n_shards=2, progress=bad)
    assert not target.exists()


def test_a_key_twice_in_one_mutation_is_a_bad_parameter(tmp_path) -> None:
    """delete / set with a repeated key raise InvalidParameterError (a ValueError), as
    Hnsw.delete_batch and Index.set do, not KeyExistsError (a key already in the index);
    nothing changes."""
    x = clustered(np.random.default_rng(12), 200, 8)
    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), tmp_path / "dup.zarr", metric="l2", n_shards=2, m=8,
                            ef_construction=32)
        names = [s.name for s in index.manifest.shards]
        for write in (lambda: index.delete([4, 7, 4]), lambda: index.set([4, 4], x[:2])):
            with pytest.raises(hn.InvalidParameterError, match="key 4 appears twice") as info:
                write()
            assert isinstance(info.value, ValueError) and not isinstance(info.value, KeyError)
        # keys no shard can hold are refused up front, not wrapped (uint64 past int64 read as negative)
        for write, shown in ((lambda: index.set([-3], x[:1]), "-3"), (lambda: index.delete(np.array([2**64 - 1], np.uint64)), str(2**64 - 1)),
                             (lambda: index.set(np.array([2**63 + 5], np.uint64), x[:1]), str(2**63 + 5))):
            with pytest.raises(hn.InvalidKeyError, match=shown):
                write()
        assert [s.name for s in hdask.read_manifest(tmp_path / "dup.zarr").shards] == names


def test_key_lists_are_read_as_index_reads_them(tmp_path) -> None:
    """A key list went through NumPy's conversion: delete([True, 5]) deleted key 1 (Index
    refuses a bool key) and [np.int64(7), np.uint64(8)] became floats, refused as no ints."""
    x = clustered(np.random.default_rng(15), 200, 8)
    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), tmp_path / "bool.zarr", metric="l2", n_shards=2, m=8,
                            ef_construction=32)
        for write in (lambda: index.delete([True, 5]), lambda: index.set([5, False], x[:2])):
            with pytest.raises(hn.InvalidKeyError, match="bool"):
                write()
        assert len(index) == 200
        index.delete([np.int64(7), np.uint64(8)])
        assert len(index) == 198
        k, _ = dask.compute(*index.search(da.from_array(x[1:2], chunks=1), 1))
        assert k[0, 0] == 1


def test_writers_take_turns_and_workers_forget_removed_shards(tmp_path) -> None:
    """Two threads appending to and updating one sharded index: every write lands (the
    write lock serialises them) and every shard the manifest names is on disk; the
    searching process holds only the shards that exist.

    Fails before the lock: each write's clean-up removed the other's new shards, leaving a
    manifest naming a missing shard and lost rows. Before the eviction: one cached shard
    more per update (the replaced ones, removed from disk, stayed loaded).
    """
    x = clustered(np.random.default_rng(10), 1000, DIM)
    target = str(tmp_path / "w.zarr")
    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=500), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        other = hdask.ShardedIndex(target)
        errors: list[BaseException] = []

        def run(fn) -> None:
            try:
                for i in range(3):
                    fn(i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        grow = threading.Thread(target=run, args=(lambda i: index.append(da.from_array(clustered(np.random.default_rng(i), 200, DIM), chunks=200)),))
        move = threading.Thread(target=run, args=(lambda i: other.set([i], x[i + 500 : i + 501]),))
        grow.start(), move.start()
        grow.join(), move.join()
        assert not errors
        m = hdask.read_manifest(target)
        assert m.count == 1000 + 3 * 200 and all((Path(target) / "shards" / s.name).is_dir() for s in m.shards)
        hdask.clear_cache()
        for i in range(4):
            other.set([10], x[20 + i : 21 + i])
            k, _ = dask.compute(*other.search(da.from_array(x[20 + i : 21 + i], chunks=1), 2))  # ties with key 20 + i
            assert 10 in k[0].tolist()
        assert len(hdask.cached_targets()) <= m.n_shards


def test_a_sharded_index_is_never_replaced_by_another_kind_of_save(tmp_path) -> None:
    """``hn.save`` (or ``Index.save``) to a sharded index's path raises and keeps every shard;
    numbered appends past int64 and a manifest nested past the JSON parser are typed errors.

    Fails before: the shards were swapped aside and removed for a single index; an
    OverflowError and a RecursionError.
    """
    x = clustered(np.random.default_rng(11), 400, DIM)
    target = tmp_path / "s.zarr"
    with dask.config.set(scheduler="synchronous"):
        ix = hdask.build(da.from_array(x, chunks=200), str(target), metric="l2", n_shards=2, m=8, ef_construction=32)
        single = hn.Index(DIM, "l2")
        single.add(x[:10])
        with pytest.raises(FileExistsError, match="holds a sharded index") as refused:
            single.save(target)
        assert isinstance(refused.value, hn.PersistError)
        assert hdask.is_sharded(str(target)) and hdask.read_manifest(str(target)).count == 400
        ix.append(da.from_array(x[:1], chunks=1), keys=np.array([2**63 - 1]))
        with pytest.raises(hn.InvalidParameterError, match="pass keys"):
            ix.append(da.from_array(x[:2], chunks=2))
    user = tmp_path / "user"  # a folder of the user's that happens to hold a shards/ directory
    (user / "shards").mkdir(parents=True)
    (user / "shards" / "figure.png").write_bytes(b"png")
    (user / "notes.txt").write_text("mine")
    with dask.config.set(scheduler="synchronous"), pytest.raises(hn.InvalidParameterError, match="not a sharded index"):
        hdask.build(da.from_array(x, chunks=200), str(user), metric="l2", n_shards=2, m=8, ef_construction=32)
    assert sorted(p.name for p in user.rglob("*")) == ["figure.png", "notes.txt", "shards"]
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "zarr.json").write_text("[" * 100_000 + "]" * 100_000)
    assert not hdask.is_sharded(str(deep))
    with pytest.raises(hn.IndexFormatError, match="nested too deep"):
        hdask.read_manifest(str(deep))


def test_a_failed_first_build_leaves_nothing_and_names_the_data_row(tmp_path) -> None:
    """A NaN in data row 150: the build named "vector 50" (its row in the shard) and left
    TARGET/shards/zarr.json where there was nothing."""
    x = clustered(np.random.default_rng(13), 200, 8)
    x[150, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    with dask.config.set(scheduler="synchronous"):
        for data in (da.from_array(x, chunks=100), str(tmp_path / "x.npy")):
            with pytest.raises(hn.InvalidVectorError, match=r"rows \[100, 200\) of the data .*vector 50"):
                hdask.build(data, tmp_path / "t.zarr", metric="l2", n_shards=2, m=8, ef_construction=32)
            assert not (tmp_path / "t.zarr").exists()


def test_writes_refuse_what_index_set_refuses_and_name_the_callers_key(tmp_path) -> None:
    """ShardedIndex.set refuses numeric text and complex vectors (InvalidVectorError, as
    hn.Index.set), ragged key lists raise InvalidKeyError, and a build with uint64 keys past
    int64 names the key as given; nothing is written."""
    x = clustered(np.random.default_rng(14), 200, 8)
    target = tmp_path / "strict.zarr"
    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        names = [s.name for s in index.manifest.shards]
        for bad in (np.full((1, 8), "1.5"), x[:1] + 1j):
            with pytest.raises(hn.InvalidVectorError, match="cannot read vectors as float32"):
                index.set([3], bad)
        for write in (lambda: index.delete([[1], [2, 3]]), lambda: index.set([[1], [2, 3]], x[:2])):
            with pytest.raises(hn.InvalidKeyError):
                write()
        assert [s.name for s in hdask.read_manifest(target).shards] == names
        k, d = dask.compute(*index.search(da.from_array(x[3:4], chunks=1), 1))
        assert (k[0, 0], d[0, 0]) == (3, 0.0)
        keys = np.arange(2**63, 2**63 + 200, dtype=np.uint64)
        for given in (keys, da.from_array(keys, chunks=100)):
            with pytest.raises(hn.InvalidKeyError, match=r"key 922337203685477\d{4} is not an int64 key"):  # as given, not wrapped
                hdask.build(da.from_array(x, chunks=100), tmp_path / "u64.zarr", metric="l2", n_shards=2, keys=given)
            assert not (tmp_path / "u64.zarr").exists()
        with pytest.raises(hn.InvalidKeyError):
            hdask.build(da.from_array(x[:2], chunks=2), tmp_path / "r.zarr", metric="l2", keys=[[1], [2, 3]])


def test_a_save_over_a_shard_is_refused_and_the_sharded_index_still_searches(built, data) -> None:
    """``Index.save`` onto a shard's directory was accepted; every search of the sharded index
    then failed on the shard's checksum. New entries beside the shards stay allowed."""
    index, target = built
    _, q, _ = data
    before = dask.compute(*index.search(da.from_array(q[:5], chunks=5), 3, ef=32))
    small = hn.Index(DIM, metric="l2")
    small.add(q[:3])
    with pytest.raises(hn.PersistError, match="part of the sharded index"):
        small.save(index.shard_url(0))
    after = dask.compute(*hdask.ShardedIndex(target).search(da.from_array(q[:5], chunks=5), 3, ef=32))
    np.testing.assert_array_equal(after[0], before[0])


def test_a_target_no_folder_can_be_made_at_raises_typed(tmp_path, monkeypatch) -> None:
    """A target whose folders the OS cannot make (under /proc, or relative to a removed
    working directory) raised FileNotFoundError inside the write lock, which took it for a
    target another writer had removed and made it again for ever."""
    x = clustered(np.random.default_rng(1), 60, DIM)
    with dask.config.set(scheduler="synchronous"):
        if os.path.isdir("/proc/self"):
            with pytest.raises(hn.PersistError) as info:
                hdask.build(da.from_array(x, chunks=30), "/proc/hnsw-numba-nowhere/t.zarr", metric="l2", n_shards=1)
            assert isinstance(info.value, FileNotFoundError)
        gone = tmp_path / "gone"
        gone.mkdir()
        monkeypatch.chdir(gone)
        gone.rmdir()
        with pytest.raises(hn.PersistError) as info:
            hdask.build(da.from_array(x, chunks=30), "t.zarr", metric="l2", n_shards=1)
        assert isinstance(info.value, FileNotFoundError)
