"""Writes of a sharded index without a cluster (Dask's local schedulers): concurrent
writers, reruns of shard tasks, failed calls leaving the files as they were, and the
per-process cache of the shards that writes replace."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import dask  # noqa: E402

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402
from hnsw_numba.dask.manifest import new_shard_name, shard_url  # noqa: E402
from hnsw_numba.dask.tasks import build_shard, mutate_shard  # noqa: E402

from conftest import clustered  # noqa: E402

DIM = 8


def gated(x: np.ndarray, gate) -> "da.Array":
    """``x`` as a one-chunk dask array whose chunk is made by ``gate(x)`` when a task reads it."""
    return da.from_delayed(dask.delayed(gate, pure=False)(x), x.shape, x.dtype)


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def memory_url():
    fsspec = pytest.importorskip("fsspec")
    name = f"hnsw-writes-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}/idx"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.mark.parametrize("spelling", ["same", "root slash"])
def test_writers_of_one_process_take_turns_on_an_fsspec_url(memory_url, spelling) -> None:
    """An append and a delete from two threads on an object-store target: the delete waits
    for the append (which holds it up to 1.5 s while it builds), then starts from its manifest.
    The delete names the target as given or as ``memory:///...``, which fsspec reads as the
    same path.

    Fails without the per-target lock, or with a lock per spelling: the delete committed and
    removed the shard the append still named; the append's manifest then named a missing
    shard and lost the delete.
    """
    import fsspec

    x = clustered(np.random.default_rng(1), 400, DIM)
    deleted = threading.Event()
    building = threading.Event()

    def hold(block: np.ndarray) -> np.ndarray:
        building.set()
        deleted.wait(1.5)
        return block

    errors: list[BaseException] = []

    def run(fn) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=200), memory_url, metric="l2", n_shards=2, m=8, ef_construction=32)
        other = hdask.ShardedIndex(memory_url if spelling == "same" else memory_url.replace("://", ":///"))
        grow = threading.Thread(target=run, args=(lambda: index.append(gated(x[:10], hold)),))
        grow.start()
        assert building.wait(30)
        run(lambda: other.delete([0]))
        deleted.set()
        grow.join(60)
        assert not errors
        m = hdask.read_manifest(memory_url)
        fs, root = fsspec.core.url_to_fs(memory_url)
        on_store = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/shards", detail=False)}
        assert m.count == 400 + 10 - 1 and {s.name for s in m.shards} | {"zarr.json"} == on_store
        k, _ = dask.compute(*hdask.ShardedIndex(memory_url).search(da.from_array(x[1:4], chunks=3), 1))
        np.testing.assert_array_equal(k[:, 0], [1, 2, 3])


def test_a_failed_first_build_does_not_remove_the_target_under_a_waiting_writer(tmp_path) -> None:
    """Two threads make the first build of one target; the first fails (a NaN row) while the
    second waits for the write lock. The second builds the index.

    Fails when the failed build removes the target after releasing the lock: the second
    writer then saved its shards into a removed directory and failed.
    """
    x = clustered(np.random.default_rng(2), 300, DIM)
    target = tmp_path / "first.zarr"
    waiting = threading.Event()
    building = threading.Event()

    def fail_late(block: np.ndarray) -> np.ndarray:
        building.set()
        waiting.wait(30)
        threading.Event().wait(0.5)  # the second writer is blocked on the lock by now
        bad = block.copy()
        bad[-1, 0] = np.nan
        return bad

    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            hdask.build(gated(x, fail_late), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        except hn.InvalidVectorError as exc:
            outcome["first"] = exc

    def second() -> None:
        try:
            outcome["second"] = len(hdask.build(da.from_array(x[:200], chunks=100), target, metric="l2", n_shards=2,
                                                m=8, ef_construction=32))
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["second"] = exc

    with dask.config.set(scheduler="synchronous"):
        a = threading.Thread(target=first)
        a.start()
        assert building.wait(30)
        b = threading.Thread(target=second)
        b.start()
        waiting.set()
        a.join(60), b.join(60)
    assert isinstance(outcome["first"], hn.InvalidVectorError)
    assert outcome["second"] == 200 and hdask.read_manifest(target).count == 200


def test_a_rerun_shard_task_saves_beside_its_earlier_attempt(tmp_path) -> None:
    """Dask reruns the finished tasks of a worker that died: a build or a mutation of a
    shard saving where its first attempt saved keeps that copy and saves an identical one
    under another fresh name of the same position; the next write removes the unnamed one.

    Fails when the rerun saves over the first attempt: hn.save refuses a directory of a
    sharded index (PersistFileExistsError), and the whole write failed.
    """
    x = clustered(np.random.default_rng(3), 300, DIM)
    target = tmp_path / "rerun.zarr"
    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=150), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        m = index.manifest
        url = shard_url(str(target), new_shard_name(2))
        runs = [build_shard(x[:50], 0, 50, 1000, url, "l2", "float32", m.config, 1) for _ in range(2)]
        dst = shard_url(str(target), new_shard_name(0))
        runs += [mutate_shard(index.shard_url(0), dst, "l2", m.shards[0], m.config, "float32", np.array([3]), None, None, 1)
                 for _ in range(2)]
        for first, again, pos in ((runs[0], runs[1], "00002-"), (runs[2], runs[3], "00000-")):
            assert again.name != first.name and again.name.startswith(pos) and first.name.startswith(pos)
            assert (again.checksum, again.count, again.key_min) == (first.checksum, first.count, first.key_min)
            assert hn.load(shard_url(str(target), again.name), hn.L2())[0].node_count == first.nodes
        index.delete([5])
        names = {s.name for s in hdask.read_manifest(target).shards}
        assert {p.name for p in (target / "shards").iterdir()} == names | {"zarr.json"}


def test_knn_graph_checks_its_parameters_before_it_builds(tmp_path) -> None:
    """Bad k, ef, exclude_self, chunk_rows or mmap of a sharded knn_graph leave the index at
    ``target`` as it was (and make none where there was none).

    Fails when they are checked after the build: the old index was replaced by the new data.
    """
    r = np.random.default_rng(4)
    old, new = clustered(r, 300, DIM), da.from_array(clustered(r, 200, DIM), chunks=100)
    target = tmp_path / "old.zarr"
    with dask.config.set(scheduler="synchronous"):
        hdask.build(da.from_array(old, chunks=100), target, metric="l2", n_shards=3, m=8, ef_construction=32)
        before = files(target)
        for bad in (dict(k=0), dict(k=3, exclude_self="no"), dict(k=3, chunk_rows=0), dict(k=3, ef=-1), dict(k=3, mmap=1)):
            with pytest.raises(hn.InvalidParameterError):
                hdask.knn_graph(new, target=target, n_shards=2, m=8, ef_construction=32, **bad)
            assert files(target) == before and hdask.read_manifest(target).count == 300
        with pytest.raises(hn.InvalidParameterError):
            hdask.knn_graph(new, 0, target=tmp_path / "none.zarr", n_shards=2)
    assert not (tmp_path / "none.zarr").exists()


def test_failed_builds_leave_the_files_as_they_were(tmp_path) -> None:
    """A build that fails into an empty directory leaves it empty; one refused inside a saved
    index leaves no directory there; a non-bool fsync is refused before any file.

    Fails before: ``shards/zarr.json`` stayed in the empty directory, ``x/`` inside the
    saved index, and ``fsync="x"`` was taken as true.
    """
    nan = da.from_array(np.full((10, 4), np.nan, np.float32), chunks=5)
    ones = da.ones((10, 4), chunks=5, dtype=np.float32)
    empty = tmp_path / "empty"
    empty.mkdir()
    saved = tmp_path / "plain.zarr"
    single = hn.Index(4, metric="l2")
    single.add(np.ones((3, 4), np.float32))
    single.save(saved)
    inside = files(saved)
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(hn.InvalidVectorError):
            hdask.build(nan, empty, metric="l2", n_shards=2)
        assert files(empty) == []
        with pytest.raises(hn.PersistError):
            hdask.build(ones, saved / "x" / "y", metric="l2", n_shards=2)
        assert files(saved) == inside
        with pytest.raises(hn.InvalidParameterError, match="fsync"):
            hdask.build(ones, tmp_path / "f.zarr", metric="l2", n_shards=2, fsync="x")
        assert not (tmp_path / "f.zarr").exists()
        with pytest.raises(hn.InvalidVectorError):  # a missing parent made for the build goes with it
            hdask.build(nan, tmp_path / "new" / "deeper" / "t.zarr", metric="l2", n_shards=2)
        assert not (tmp_path / "new").exists()


def test_searching_processes_forget_the_shards_a_write_replaced_on_an_fsspec_url(memory_url) -> None:
    """Updates and searches in turn on an object-store target: this process holds only the
    shards the manifest names.

    Fails when only local shards are evicted: one more cached shard per update.
    """
    x = clustered(np.random.default_rng(5), 400, DIM)
    with dask.config.set(scheduler="threads"):
        index = hdask.build(da.from_array(x, chunks=200), memory_url, metric="l2", n_shards=2, m=8, ef_construction=32)
        hdask.clear_cache()
        for i in range(4):
            index.set([i], x[i + 200 : i + 201])
            dask.compute(*index.search(da.from_array(x[:4], chunks=4), 2))
        assert len(hdask.cached_targets()) == index.n_shards
        # nor do its other records of them: one entry per shard ever loaded grew without bound
        from hnsw_numba.dask import locks

        assert len(hdask.load_counts()) == index.n_shards
        assert len(locks._process_locks) == 0  # no write runs: no lock of a target kept
    hdask.clear_cache()


def test_merge_topk_of_one_part_is_its_k_best_sorted() -> None:
    """merge_topk cuts and sorts a single part as it does several (it returned it unchanged)."""
    part = (np.array([[7, 3, 5]]), np.array([[0.9, 0.1, 0.5]], np.float32))
    keys, dists = hdask.merge_topk([part], 2)
    np.testing.assert_array_equal(keys, [[3, 5]])
    np.testing.assert_array_equal(dists, np.array([[0.1, 0.5]], np.float32))


@pytest.mark.parametrize("executor", [False, True], ids=["threads", "executor"])
def test_a_failed_write_on_the_threaded_scheduler_returns_after_its_running_tasks(tmp_path, monkeypatch, executor) -> None:
    """Dask's local threaded scheduler, or a user's Executor as the scheduler: shard 0 of a
    build fails (a NaN row) while the task of shard 1 is saving. The call raises once that
    save is over, and the write's clean-up removes the saved shard: the target holds what it
    held before.

    Fails when the call raises at the first error: the running task saved its shard after
    the clean-up, and a directory named by no manifest stayed.
    """
    import concurrent.futures

    from hnsw_numba.dask import tasks

    x = clustered(np.random.default_rng(6), 300, DIM)
    target = tmp_path / "threads.zarr"
    with dask.config.set(scheduler="synchronous"):
        hdask.build(da.from_array(x[:100], chunks=50), target, metric="l2", n_shards=2, m=8, ef_construction=32)
    before = files(target)
    saving, failed, saved = threading.Event(), threading.Event(), []
    save = tasks.save_shard

    def slow_save(*args, **kwargs):
        saving.set()
        failed.wait(5)
        threading.Event().wait(0.3)  # shard 0's error reaches the scheduler meanwhile
        saved.append(save(*args, **kwargs))
        return saved[-1]

    def fail_once_saving(block: np.ndarray) -> np.ndarray:
        saving.wait(5)
        failed.set()
        bad = block.copy()
        bad[0, 0] = np.nan
        return bad

    monkeypatch.setattr(tasks, "save_shard", slow_save)
    data = da.concatenate([gated(x[:150], fail_once_saving), da.from_array(x[150:], chunks=150)])
    pool = concurrent.futures.ThreadPoolExecutor(2) if executor else None
    with dask.config.set(scheduler=pool or "threads", num_workers=2):
        with pytest.raises(hn.InvalidVectorError):
            hdask.build(data, target, metric="l2", n_shards=2, m=8, ef_construction=32)
    if pool is not None:
        pool.shutdown()
    assert len(saved) == 1 and files(target) == before
    assert hdask.read_manifest(target).count == 100


def test_a_good_first_build_succeeds_while_a_failed_one_removes_the_target(tmp_path, monkeypatch) -> None:
    """Two threads make the first build of one target: the first fails (a NaN row) while the
    second makes the target it found. The failed build removes what it made only after the
    second has opened it; the second then finds it gone and makes it anew.

    Fails when making the target and removing it do not take turns: the second writer
    opened a removed directory and raised PersistFileNotFoundError.
    """
    from hnsw_numba.dask import write

    x = clustered(np.random.default_rng(7), 300, DIM)
    target = tmp_path / "p" / "first.zarr"
    prepared, first_done, building = threading.Event(), threading.Event(), threading.Event()
    prepare = write.prepare_target
    outcome: dict[str, object] = {}

    def slow_prepare(text: str) -> None:
        prepare(text)
        if threading.current_thread().name == "second" and not prepared.is_set():
            prepared.set()
            first_done.wait(1.0)  # the first writer's clean-up runs now where it can

    def fail_when_prepared(block: np.ndarray) -> np.ndarray:
        building.set()
        prepared.wait(30)
        bad = block.copy()
        bad[0, 0] = np.nan
        return bad

    def first() -> None:
        try:
            hdask.build(gated(x, fail_when_prepared), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["first"] = exc
        finally:
            first_done.set()

    def second() -> None:
        try:
            outcome["second"] = len(hdask.build(da.from_array(x[:200], chunks=100), target, metric="l2", n_shards=2,
                                                m=8, ef_construction=32))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["second"] = exc

    monkeypatch.setattr(write, "prepare_target", slow_prepare)
    with dask.config.set(scheduler="synchronous"):
        a = threading.Thread(target=first)
        a.start()
        assert building.wait(30)
        b = threading.Thread(target=second, name="second")
        b.start()
        a.join(60), b.join(60)
    assert isinstance(outcome["first"], hn.InvalidVectorError)
    assert outcome["second"] == 200 and hdask.read_manifest(target).count == 200


def test_a_waiting_writer_whose_target_became_a_file_raises_a_persist_error(tmp_path) -> None:
    """A delete waits for an append's lock; meanwhile the target is moved away and a file put
    at its path. The delete raises a PersistError (a NotADirectoryError).

    Fails when the waiting writer's check of the directory it locked is untyped: a bare
    NotADirectoryError.
    """
    x = clustered(np.random.default_rng(8), 200, DIM)
    target = tmp_path / "moved.zarr"
    release = threading.Event()
    building = threading.Event()

    def hold(block: np.ndarray) -> np.ndarray:
        building.set()
        release.wait(30)
        return block

    outcome: dict[str, object] = {}

    def run(name: str, fn) -> None:
        try:
            fn()
            outcome[name] = "ok"
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome[name] = exc

    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        other = hdask.ShardedIndex(target)
        grow = threading.Thread(target=run, args=("append", lambda: index.append(gated(x[:10], hold))))
        grow.start()
        assert building.wait(30)
        wait = threading.Thread(target=run, args=("delete", lambda: other.delete([0])))
        wait.start()
        threading.Event().wait(0.5)  # the delete waits for the lock by now
        target.rename(tmp_path / "elsewhere.zarr")
        target.write_text("not an index")
        release.set()
        grow.join(60), wait.join(60)
    assert isinstance(outcome["delete"], hn.PersistError) and isinstance(outcome["delete"], NotADirectoryError)


def _forked(child) -> int:
    """Fork a child running ``child()`` (its exit status: 0 when it returns) and return its pid."""
    import os

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def _exited(pid: int, seconds: float) -> int | None:
    """The exit status of child ``pid`` within ``seconds``, or None (the child is then killed)."""
    import os
    import signal
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork: POSIX")
def test_a_child_forked_during_a_local_write_does_not_hold_its_lock(tmp_path) -> None:
    """A child forked while an append holds the lock of a local target lives on after the
    append: the next write of this process takes the lock at once.

    Fails when the child keeps the lock's inherited descriptor (a ``flock`` belongs to the
    open file, shared with the child): the next write waited for the child to exit.
    """
    import os

    x = clustered(np.random.default_rng(9), 200, DIM)
    target = tmp_path / "fork.zarr"
    release, building, deleted = threading.Event(), threading.Event(), threading.Event()

    def hold(block: np.ndarray) -> np.ndarray:
        building.set()
        release.wait(30)
        return block

    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        grow = threading.Thread(target=lambda: index.append(gated(x[:10], hold)))
        grow.start()
        assert building.wait(30)
        r, w = os.pipe()
        pid = _forked(lambda: (os.close(w), os.read(r, 1)))  # lives until this process closes w
        os.close(r)
        try:
            release.set()
            grow.join(60)
            threading.Thread(target=lambda: (index.delete([0]), deleted.set()), daemon=True).start()
            assert deleted.wait(5)
        finally:
            os.close(w)
            assert _exited(pid, 10) == 0
        assert deleted.wait(30) and hdask.read_manifest(target).count == 200 + 10 - 1


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork: POSIX")
def test_a_child_forked_during_an_fsspec_write_takes_the_lock_of_its_own(memory_url) -> None:
    """A child forked while an append holds this process's lock of an object-store target
    takes that lock at once: the thread holding it does not exist in the child.

    Fails when the child inherits the lock held: its write waited for ever.
    """
    from hnsw_numba.dask.locks import writing

    x = clustered(np.random.default_rng(10), 200, DIM)
    release, building = threading.Event(), threading.Event()

    def hold(block: np.ndarray) -> np.ndarray:
        building.set()
        release.wait(30)
        return block

    def in_child() -> None:
        with writing(memory_url):
            pass

    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), memory_url, metric="l2", n_shards=2, m=8, ef_construction=32)
        grow = threading.Thread(target=lambda: index.append(gated(x[:10], hold)))
        grow.start()
        assert building.wait(30)
        try:
            pid = _forked(in_child)
            assert _exited(pid, 5) == 0
        finally:
            release.set()
            grow.join(60)
        assert hdask.read_manifest(memory_url).count == 210


def test_knn_graph_over_a_sharded_index_checks_metric_and_dimension(tmp_path) -> None:
    """``knn_graph(build=False)`` over a sharded cosine index refuses ``metric="l2"``
    (MetricMismatchError) and data of another dimension (DimensionMismatchError), as the
    fan-out path does.

    Fails when the sharded path skips the checks: cosine distances came back as the l2
    graph, and 3-d data was joined with an 8-d index.
    """
    x = clustered(np.random.default_rng(11), 200, DIM)
    data = da.from_array(x, chunks=100)
    target = tmp_path / "cos.zarr"
    with dask.config.set(scheduler="synchronous"):
        hdask.build(data, target, metric="cosine", n_shards=2, m=8, ef_construction=32)
        with pytest.raises(hn.MetricMismatchError):
            hdask.knn_graph(data, 3, target=target, metric="l2", build=False)
        with pytest.raises(hn.DimensionMismatchError):
            hdask.knn_graph(da.zeros((200, 3), chunks=100, dtype=np.float32), 3, target=target, metric="cosine", build=False)


def test_knn_graph_takes_a_numpy_false_as_false(tmp_path) -> None:
    """``build=np.False_`` joins a sharded index as ``build=False`` does.

    Fails when the sharded path is chosen by ``build is False``: np.False_ took the fan-out
    path, which cannot open a sharded index.
    """
    x = clustered(np.random.default_rng(12), 200, DIM)
    data = da.from_array(x, chunks=100)
    target = tmp_path / "np.zarr"
    with dask.config.set(scheduler="synchronous"):
        hdask.build(data, target, metric="l2", n_shards=2, m=8, ef_construction=32)
        want = dask.compute(*hdask.knn_graph(data, 3, target=target, build=False))
        got = dask.compute(*hdask.knn_graph(data, 3, target=target, build=np.False_))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_a_first_build_killed_writing_its_manifest_leaves_a_target_the_next_build_takes(tmp_path) -> None:
    """A first build killed after its manifest's temporary file was written, before its
    rename, leaves ``shards/`` and that file (with its lock file) in the target: every
    later build refused the target ("exists and is not a sharded index"). The next build
    removes the dead writer's files and builds."""
    import os

    target = tmp_path / "idx.zarr"
    (target / "shards").mkdir(parents=True)
    (target / "shards" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    dead = 2**22 + 12345  # beyond pid_max on common systems: no such process
    while True:
        try:
            os.kill(dead, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        dead += 1
    stray = target / f".zarr.json.tmp-{dead}-deadbeef-0badf00d"
    stray.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    (target / f"{stray.name}.lock").touch()
    x = clustered(np.random.default_rng(13), 200, DIM)
    with dask.config.set(scheduler="synchronous"):
        hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
    assert len(hdask.ShardedIndex(target)) == 200
    assert sorted(p.name for p in target.iterdir()) == ["shards", "zarr.json"]


def test_a_failed_rebuild_leaves_the_shards_group_file_whole(tmp_path, monkeypatch) -> None:
    """Every build rewrote ``shards/zarr.json`` in place: a full disk there left it empty (the
    index no longer a Zarr hierarchy). It is written only when it differs, and atomically."""
    import errno
    import zarr

    x = clustered(np.random.default_rng(2), 200, DIM)
    target = tmp_path / "g.zarr"
    with dask.config.set(scheduler="synchronous"):
        hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        before = (target / "shards" / "zarr.json").read_bytes()
        real = Path.write_bytes

        def full(self, data):
            if self.name == "zarr.json" and self.parent.name == "shards":
                real(self, b"")
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", full)
        try:
            hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        except hn.PersistError:
            pass
    assert (target / "shards" / "zarr.json").read_bytes() == before
    zarr.open_group(str(target), mode="r")["shards"]


def test_shard_directories_a_write_cannot_remove_are_warned_about(tmp_path, monkeypatch) -> None:
    """A committed write whose replaced shard directories stayed (their removal failed) said
    nothing; the warning the docs promise comes, and the next write removes them."""
    from hnsw_numba.dask import manifest

    x = clustered(np.random.default_rng(3), 200, DIM)
    target = tmp_path / "w.zarr"
    with dask.config.set(scheduler="synchronous"):
        index = hdask.build(da.from_array(x, chunks=100), target, metric="l2", n_shards=2, m=8, ef_construction=32)
        monkeypatch.setattr(manifest, "remove", lambda path: None)
        with pytest.warns(hn.HnswWarning, match="removing the shard directories"):
            index.delete([0, 1])
        monkeypatch.undo()
        index.delete([2])
    names = {e.name for e in hdask.read_manifest(target).shards}
    assert sorted(p.name for p in (target / "shards").iterdir() if p.is_dir()) == sorted(names)
