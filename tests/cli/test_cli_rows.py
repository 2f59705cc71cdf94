"""A bad row of a vector file is named by file and row, before any work where it can be; a
shape the index cannot take is a data error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hnsw_numba.core.index import Hnsw
from conftest import cli_call as call


@pytest.fixture()
def d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    x = np.random.default_rng(7).standard_normal((100, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    x[80] *= 1e30
    np.save(tmp_path / "big.npy", x)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list:
    calls: list = []
    real = getattr(Hnsw, name)

    def spy(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Hnsw, name, spy)
    return calls


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_build_names_the_file_and_row_of_a_huge_component_before_building(d, capsys, monkeypatch, metric) -> None:
    """A row past the float32-safe range was reported as "vector 16 has a component beyond
    ..." (its place in an insert block, no file) by the insert of its block, after the
    rows before it were built; a NaN row got "<file>: row N" before any work."""
    inserts = _calls(monkeypatch, "insert_batch")
    rc, _, err = call(capsys, "build", "big.npy", "--out", "o.zarr", "--metric", metric, "-q")
    assert rc == 1
    assert "hnsw-numba: error: big.npy: row 80 has a component beyond +-" in err, err
    assert inserts == [] and not (d / "o.zarr").exists()


def test_build_cosine_takes_a_huge_row(d, capsys) -> None:
    """Cosine normalises the rows: the up-front check does not refuse what the index takes."""
    rc, _, err = call(capsys, "build", "big.npy", "--out", "o.zarr", "--metric", "cosine", "-q")
    assert rc == 0, err


def test_search_names_the_file_and_row_of_a_huge_query_before_searching(d, capsys, monkeypatch) -> None:
    """A huge query row was reported as "vector 80 ..." without the file (its place in the
    search block, which is the file's row only in the first block)."""
    rc, _, err = call(capsys, "build", "x.npy", "--out", "i.zarr", "-q")
    assert rc == 0, err
    searches = _calls(monkeypatch, "search_batch")
    rc, _, err = call(capsys, "search", "i.zarr", "big.npy", "--k", "1", "-q")
    assert rc == 1
    assert "hnsw-numba: error: big.npy: row 80 has a component beyond +-" in err, err
    assert searches == []


def test_a_row_the_store_refuses_is_named_by_file_and_row(d, capsys) -> None:
    """A float16 store refuses a component past 65504, which is within the float32 limit:
    the store's "vector 16" (row 80 less the 64 rows inserted first) named no file and the
    wrong row."""
    x = np.load(d / "x.npy")
    x[80, 0] = 1e6
    np.save(d / "f16big.npy", x)
    rc, _, err = call(capsys, "build", "f16big.npy", "--out", "o.zarr", "--dtype", "f16", "-q")
    assert rc == 1
    assert "hnsw-numba: error: f16big.npy: row 80 " in err, err


def test_a_file_too_wide_for_an_index_is_a_data_error_naming_it(d, capsys) -> None:
    """A file of dimension 70,000 (past MAX_DIM) was a usage error (exit 2, the usage text)
    saying "dim must be in [1, 65536], got 70000" without naming the file."""
    np.save(d / "wide.npy", np.zeros((2, 70_000), np.float32))
    rc, _, err = call(capsys, "build", "wide.npy", "--out", "o.zarr", "-q")
    assert rc == 1, err
    assert "usage:" not in err
    assert "hnsw-numba: error: wide.npy: dim must be in [1, 65536], got 70000" in err, err
    assert not (d / "o.zarr").exists()
