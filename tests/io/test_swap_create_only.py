"""Create-only saves: the step that puts a copy in place refuses a target that exists, so a
save that appeared after every check is never replaced, and nothing of the refused save stays."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.io import swap
from conftest import once_at_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="rename semantics")


def _index(n: int) -> tuple:
    idx, store = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=n, seed=1)), hn.InMemoryVectorStore(4, n)
    idx.insert_batch(store, np.arange(n), np.arange(4 * n, dtype=np.float32).reshape(n, 4))
    return idx, store


@pytest.mark.parametrize("name", ["a.zarr", "a.zip"])
def test_a_save_made_during_a_create_only_save_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """save() replaced whatever was at the path when its copy was ready: a save that another
    process made after the checks was lost."""
    once_at_checkpoint(monkeypatch, "write: flushed", lambda: hn.save(tmp_path / name, *_index(3)))
    with pytest.raises(swap.TargetExistsError) as info:
        hn.save(tmp_path / name, *_index(9), replace=False)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, hn.HnswError)
    assert len(hn.load(tmp_path / name)[0]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_create_only_files_take_back_the_ones_made_when_a_later_one_exists(tmp_path: Path) -> None:
    """Files that belong together (search results' .npy pair) had no create-only write: each
    replaced what was there. One that exists refuses the set; the earlier ones the call made
    are removed again, the existing one is kept."""
    (tmp_path / "b.npy").write_bytes(b"theirs")
    files = [(tmp_path / name, lambda f: f.write(b"ours"), f"cannot write {name}") for name in ("a.npy", "b.npy")]
    with pytest.raises(swap.TargetExistsError):
        swap.put_new_files(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npy"]
    assert (tmp_path / "b.npy").read_bytes() == b"theirs"
    (tmp_path / "b.npy").unlink()
    swap.put_new_files(files)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes() == b"ours"


def test_a_directory_copy_is_refused_by_a_non_empty_directory(tmp_path: Path) -> None:
    """swap_in had no create-only mode: a directory there was moved aside and deleted."""
    target = tmp_path / "t"
    target.mkdir()
    (target / "x").write_text("theirs")
    tmp = tmp_path / "new"
    tmp.mkdir()
    (tmp / "y").write_text("ours")
    with pytest.raises(swap.TargetExistsError):
        swap.swap_in(tmp, target, replace=False)
    assert [p.name for p in target.iterdir()] == ["x"] and (tmp / "y").exists()


def test_a_ctrl_c_after_the_first_file_of_a_pair_takes_it_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C right after the first file was linked in left it alone (a results pair half
    written, and the next run without --overwrite refused): it was counted as made only
    after its put_new returned."""
    files = [(tmp_path / "r.keys.npy", lambda f: np.save(f, np.arange(6).reshape(2, 3)), "keys"),
             (tmp_path / "r.distances.npy", lambda f: np.save(f, np.zeros((2, 3), np.float32)), "distances")]

    def interrupt(event: str) -> None:
        if event == "swap: renamed in":
            raise KeyboardInterrupt

    monkeypatch.setattr(swap, "checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        swap.put_new_files(files)
    assert sorted(os.listdir(tmp_path)) == []
