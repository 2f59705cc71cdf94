"""A process checks each copy of a shard it loads against the manifest, the first and every later one.

Synchronous scheduler: the searching process is the one that holds the shards, so a
test sees the state a worker keeps between searches.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import dask  # noqa: E402

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402
from hnsw_numba.dask import tasks  # noqa: E402

DIM = 8


@pytest.fixture
def sync():
    hdask.clear_cache()
    with dask.config.set(scheduler="synchronous"):
        yield
    hdask.clear_cache()


def build(path, x: np.ndarray):
    return hdask.build(da.from_array(x, chunks=(20, DIM)), str(path), metric="l2", n_shards=2, m=8, ef_construction=32, seed=1)


def search(index, q: np.ndarray):
    return dask.compute(*index.search(da.from_array(q, chunks=(len(q), DIM)), 2, ef=32))


def test_a_shard_replaced_under_its_name_is_refused_by_a_process_that_searched_it(sync, tmp_path) -> None:
    """Same keys, counts and config, other vectors: the checksum differs from the manifest's.

    Fails when only a process's first load is checked: the replacement's keys answer.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, DIM)).astype(np.float32)
    index = build(tmp_path / "a.zarr", x)
    keys, _ = search(index, x[:2] + 0.01)
    assert keys[:, 0].tolist() == [0, 1]
    url = index.shard_url(0)
    other = hn.Hnsw(hn.L2(), hn.HnswConfig(max_nodes=20, **index.manifest.config))
    store = hn.InMemoryVectorStore(DIM, 20, "float32")
    other.insert_batch(store, np.arange(20), 5 * rng.normal(size=(20, DIM)).astype(np.float32))
    shutil.rmtree(url)
    hn.save(url, other, store)
    with pytest.raises(hn.IndexFormatError, match="checksum"):
        search(hdask.ShardedIndex(index.target), x[:2])
    with pytest.raises(hn.IndexFormatError, match="checksum"):
        index.load_shard(0)
    assert url not in hdask.cached_targets()  # the refused copy is not kept for the next search


@pytest.mark.parametrize("warm", [False, True])
def test_a_missing_shard_is_an_index_format_error_before_and_after_a_search(sync, tmp_path, warm) -> None:
    """Fails on a process that searched first when its reload reports the missing files as
    PersistFileNotFoundError rather than the documented IndexFormatError."""
    x = np.random.default_rng(1).normal(size=(40, DIM)).astype(np.float32)
    index = build(tmp_path / "m.zarr", x)
    if warm:
        search(index, x[:2])
    shutil.rmtree(index.shard_url(1))
    with pytest.raises(hn.IndexFormatError):
        search(index, x[:2])
    with pytest.raises(hn.IndexFormatError):
        index.load_shard(1)


def test_searches_of_checked_shards_do_not_hash_their_files(sync, tmp_path, monkeypatch) -> None:
    """The checksum runs once per loaded copy (and per manifest entry), not per search."""
    x = np.random.default_rng(2).normal(size=(40, DIM)).astype(np.float32)
    index = build(tmp_path / "h.zarr", x)
    hashed: list[str] = []
    real = tasks.shard_checksum
    monkeypatch.setattr(tasks, "shard_checksum", lambda url: hashed.append(url) or real(url))
    first, _ = search(index, x[:3])
    assert sorted(hashed) == sorted(index.shard_url(i) for i in range(2))
    hashed.clear()
    for _ in range(3):
        keys, _ = search(hdask.ShardedIndex(index.target), x[:3])
        np.testing.assert_array_equal(keys, first)
    assert hashed == []
    assert hdask.load_counts() == {index.shard_url(i): 1 for i in range(2)}
