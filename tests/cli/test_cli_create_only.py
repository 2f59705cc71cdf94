"""Without ``--overwrite`` an output that another run makes while this one works is refused
by the step that writes it: of two runs writing one path, one keeps its output and the other
fails, never both reporting success with one output lost."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.io import swap
from conftest import cli_call as call, once_at_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="rename semantics")

DIM = 8


@pytest.fixture()
def d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(5)
    np.save(tmp_path / "a.npy", rng.standard_normal((120, DIM)).astype(np.float32))
    np.save(tmp_path / "q.npy", rng.standard_normal((4, DIM)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _other_index(n: int = 7) -> tuple:
    """The index another run saves: ``n`` vectors, so it is told from this run's 120."""
    idx, store = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=n, seed=2)), hn.InMemoryVectorStore(DIM, n)
    idx.insert_batch(store, np.arange(n), np.ones((n, DIM), np.float32) * np.arange(n)[:, None])
    return idx, store


def _saved_meanwhile(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    """Another run saves an index to ``out`` once this run's copy is written and flushed,
    after every check this run makes and before its copy goes in place."""
    once_at_checkpoint(monkeypatch, "write: flushed", lambda: hn.save(out, *_other_index()))


def _no_leftovers(d: Path) -> None:
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")], list(d.iterdir())


@pytest.mark.parametrize("name", ["same.zarr", "same.zip"])
def test_build_without_overwrite_keeps_an_index_saved_meanwhile(d, capsys, monkeypatch, name) -> None:
    """Two builds to one --out without --overwrite both exited 0 and printed "wrote", and
    the file held only the later one's index (the check came before the work, the save
    replaced whatever was there by then)."""
    out = d / name
    _saved_meanwhile(monkeypatch, out)
    rc, stdout, err = call(capsys, "build", "a.npy", "--out", name, "-q")
    assert rc == 1, (stdout, err)
    assert "wrote" not in stdout
    assert f"{name}: already exists (pass --overwrite to replace it)" in err, err
    index, _ = hn.load(out)
    assert len(index) == 7  # the other run's index, whole
    _no_leftovers(d)


def test_build_with_overwrite_still_replaces(d, capsys, monkeypatch) -> None:
    """--overwrite keeps replacing an index that appeared meanwhile (the later save wins)."""
    _saved_meanwhile(monkeypatch, d / "same.zarr")
    rc, stdout, err = call(capsys, "build", "a.npy", "--out", "same.zarr", "-q", "--overwrite")
    assert rc == 0, err
    assert len(hn.load(d / "same.zarr")[0]) == 120
    _no_leftovers(d)


def test_convert_without_overwrite_keeps_an_index_saved_meanwhile(d, capsys, monkeypatch) -> None:
    """convert-hnswlib checked --out before reading the file and saved over whatever was
    there afterwards, as build did."""
    idx, store = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=120, seed=1)), hn.InMemoryVectorStore(DIM, 120)
    idx.insert_batch(store, np.arange(120), np.load(d / "a.npy"))
    hn.save_hnswlib(d / "a.bin", idx, store)
    _saved_meanwhile(monkeypatch, d / "c.zarr")
    rc, stdout, err = call(capsys, "convert-hnswlib", "a.bin", "--space", "l2", "--dim", DIM, "--out", "c.zarr", "-q")
    assert rc == 1 and "wrote" not in stdout, (stdout, err)
    assert "c.zarr: already exists (pass --overwrite to replace it)" in err, err
    assert len(hn.load(d / "c.zarr")[0]) == 7
    _no_leftovers(d)


@pytest.fixture()
def index(d, capsys) -> Path:
    rc, _, err = call(capsys, "build", "a.npy", "--out", "i.zarr", "-q")
    assert rc == 0, err
    return d / "i.zarr"


def test_search_npy_results_without_overwrite_keep_results_written_meanwhile(d, index, capsys, monkeypatch) -> None:
    """search --out res wrote its .npy pair over a pair another run wrote after the check."""
    real = np.save
    armed = [True]

    def save(f, arr, *args, **kwargs):
        if armed[0] and not isinstance(f, (str, os.PathLike)):  # this run's results file, being written
            armed[0] = False
            real(d / "res.keys.npy", np.full((2, 2), 99))
            real(d / "res.distances.npy", np.zeros((2, 2), np.float32))
        return real(f, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    rc, stdout, err = call(capsys, "search", "i.zarr", "q.npy", "--k", "2", "--out", "res", "-q")
    assert rc == 1 and "wrote" not in stdout, (stdout, err)
    assert "res.keys.npy: already exists (pass --overwrite to replace it)" in err, err
    assert np.load(d / "res.keys.npy").tolist() == [[99, 99], [99, 99]]
    assert np.load(d / "res.distances.npy").shape == (2, 2)
    _no_leftovers(d)


def test_search_zarr_results_without_overwrite_keep_results_written_meanwhile(d, index, capsys, monkeypatch) -> None:
    """search --out res.zarr swapped its results over results another run wrote after the check."""
    rc, _, err = call(capsys, "search", "i.zarr", "q.npy", "--k", "1", "--out", "other.zarr", "-q")
    assert rc == 0, err
    real = swap.fsync_tree
    armed = [True]

    def fsync_tree(root: Path) -> None:
        real(root)
        if armed[0] and ".res.zarr.tmp-" in root.name:
            armed[0] = False
            os.rename(d / "other.zarr", d / "res.zarr")

    monkeypatch.setattr(swap, "fsync_tree", fsync_tree)
    rc, stdout, err = call(capsys, "search", "i.zarr", "q.npy", "--k", "2", "--out", "res.zarr", "-q")
    assert rc == 1 and "wrote" not in stdout, (stdout, err)
    assert "res.zarr: already exists (pass --overwrite to replace it)" in err, err
    import zarr

    assert zarr.open_group(str(d / "res.zarr"), mode="r")["keys"].shape == (4, 1)  # the other run's results
    _no_leftovers(d)


def test_save_replace_false_refuses_an_existing_path(tmp_path: Path) -> None:
    """save() had no create-only mode: every save replaced an existing save."""
    idx, store = _other_index()
    hn.save(tmp_path / "x.zarr", idx, store, replace=False)
    with pytest.raises(FileExistsError):
        hn.save(tmp_path / "x.zarr", *_other_index(3), replace=False)
    with pytest.raises(hn.HnswError):
        hn.save(tmp_path / "x.zarr", *_other_index(3), replace=False)
    assert len(hn.load(tmp_path / "x.zarr")[0]) == 7


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_symlink_that_leads_nowhere_is_written_through(d, index, capsys, overwrite) -> None:
    """--out naming a symlink to a missing path writes the output there and keeps the link,
    with or without --overwrite, as a create-only ``hn.save`` does: nothing is replaced."""
    os.mkdir(d / "real")
    for link, target in (("idx.zarr", "real/idx.zarr"), ("res.zarr", "real/res.zarr"), ("pair.keys.npy", "real/keys.npy")):
        os.symlink(target, d / link)
    for args in (["build", "a.npy", "--out", "idx.zarr"], ["search", "i.zarr", "q.npy", "--k", "2", "--out", "res.zarr"],
                 ["search", "i.zarr", "q.npy", "--k", "2", "--out", "pair"]):
        rc, stdout, err = call(capsys, *args, *overwrite, "-q")
        assert rc == 0 and "wrote" in stdout and "loop" not in err, (args, err)
    assert len(hn.load(d / "real/idx.zarr")[0]) == 120 and os.path.islink(d / "idx.zarr")
    assert os.path.islink(d / "res.zarr") and (d / "real/res.zarr/zarr.json").is_file()
    assert os.path.islink(d / "pair.keys.npy") and np.load(d / "real/keys.npy").shape == (4, 2)
    assert np.load(d / "pair.distances.npy").shape == (4, 2)
    _no_leftovers(d)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_loop_of_symlinks_is_refused_as_a_loop(d, index, capsys, overwrite) -> None:
    """A symlink loop as --out is a data error that calls it a loop of links, before any work."""
    os.symlink("loop_b", d / "loop_a")
    os.symlink("loop_a", d / "loop_b")
    for args in (["build", "a.npy", "--out", "loop_a"], ["search", "i.zarr", "q.npy", "--out", "loop_a.zarr"]):
        if args[0] == "search":
            os.symlink("loop_a", d / "loop_a.zarr")
        rc, stdout, err = call(capsys, *args, *overwrite, "-q")
        assert rc == 1 and stdout == "", (args, err)
        assert "error: loop_a" in err and "a loop of symbolic links" in err, (args, err)
    assert sorted(p.name for p in d.iterdir()) == ["a.npy", "i.zarr", "loop_a", "loop_a.zarr", "loop_b", "q.npy"]
