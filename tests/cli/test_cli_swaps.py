"""The command line reads a saved index as a load does: the aside copy a killed save left is
put back, and a read that a save's swap overtakes runs again."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.cli import files as cli_files
from hnsw_numba.io import zarr_io
from conftest import cli_call as call

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="rename semantics")


def _saved(d: Path) -> Path:
    x = np.random.default_rng(0).standard_normal((80, 8)).astype(np.float32)
    idx = hn.Index(8, metric="l2", seed=1)
    idx.add(x)
    idx.save(d / "idx.zarr")
    np.save(d / "q.npy", x[:3])
    return d / "idx.zarr"


def test_info_and_search_put_back_the_copy_a_save_killed_mid_swap_left(tmp_path: Path, capsys) -> None:
    """A save killed between its swap's two renames leaves only ``.<name>.old``, whole:
    ``info`` and ``search`` said "no such index" where ``hn.open`` puts it back and loads."""
    path = _saved(tmp_path)
    os.rename(path, tmp_path / ".idx.zarr.old")
    rc, out, err = call(capsys, "info", path)
    assert rc == 0, err
    assert path.is_dir() and not (tmp_path / ".idx.zarr.old").exists()
    os.rename(path, tmp_path / ".idx.zarr.old")
    rc, _, err = call(capsys, "search", path, tmp_path / "q.npy", "--k", "2", "--out", tmp_path / "res", "-q")
    assert rc == 0, err
    assert np.load(tmp_path / "res.keys.npy")[:, 0].tolist() == [0, 1, 2]


def test_index_metadata_is_read_again_when_a_save_moves_the_copy_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save's first rename while the metadata was read ("group /: FileNotFoundError") was
    a DataError; the read runs again and finds the copy put back."""
    path = _saved(tmp_path)
    real = zarr_io.open_reader
    armed = [True]

    @contextlib.contextmanager
    def open_reader(target):
        with real(target) as r:
            if armed[0]:
                armed[0] = False
                os.rename(path, tmp_path / ".idx.zarr.old")  # the save is killed after this rename
            yield r

    monkeypatch.setattr(zarr_io, "open_reader", open_reader)
    meta = cli_files.read_index_meta(str(path))
    assert not armed[0] and meta["vectors"]["node_count"] == 80


def test_missing_and_foreign_paths_keep_their_messages(tmp_path: Path) -> None:
    """A path that is no index, with no aside copy, is still named so."""
    (tmp_path / "plain").mkdir()
    for name, needle in (("nothere.zarr", "no such index"), ("plain", "not a saved index (no zarr.json")):
        with pytest.raises(cli_files.DataError) as caught:
            cli_files.read_index_meta(str(tmp_path / name))
        assert str(caught.value).startswith(f"{tmp_path / name}: ") and needle in str(caught.value)
