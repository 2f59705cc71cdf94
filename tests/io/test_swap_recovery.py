"""What a killed or overtaken save leaves to readers and to the next save: the aside copy's
deletion cut short, readers meeting a swap (metadata reads, a load putting the aside copy
back while another reads), and the temporary copies of killed hnswlib-format saves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.io import persist, swap

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, rename semantics and flock")


def _index(n: int, seed: int = 0, m: int = 8) -> hn.Index:
    idx = hn.Index(8, metric="l2", m=m, seed=1)
    idx.add(np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32))
    return idx


def _dead_pid() -> int:
    pid = 2**22 + 12345  # beyond pid_max on common systems: no such process
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


KILLED_DELETING_THE_OLD_COPY = textwrap.dedent(
    """
    import os, shutil, signal, sys
    import numpy as np, hnsw_numba as hn

    path = sys.argv[1]
    idx = hn.Index(8, metric="l2", seed=1)
    idx.add(np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32))
    idx.save(path, fsync=False)
    real = shutil.rmtree

    def rmtree(p, *args, **kwargs):
        # the old copy's deletion, cut short after its first unlink: on tmpfs rmtree meets the
        # newest file, the root zarr.json, first
        if os.path.isfile(os.path.join(p, "zarr.json")) and os.path.isdir(os.path.join(p, "graph")):
            os.unlink(os.path.join(p, "zarr.json"))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(p, *args, **kwargs)

    shutil.rmtree = rmtree
    idx.add(np.ones((1, 8), np.float32))
    idx.save(path, fsync=False)
    """
)


def test_a_save_killed_while_it_deletes_the_old_copy_leaves_nothing_that_refuses_the_next(tmp_path: Path) -> None:
    """The old copy is renamed to a temporary sibling before its deletion: a deletion cut
    short under the aside name ``.<name>.old`` left a folder without a root ``zarr.json``,
    which refused every later save as someone else's folder and which no load removed."""
    path = tmp_path / "ix"
    run = subprocess.run([sys.executable, "-c", KILLED_DELETING_THE_OLD_COPY, str(path)], capture_output=True, text=True,
                         timeout=300, env=os.environ.copy())
    assert run.returncode == -9, run.stderr
    assert len(hn.open(path)) == 61  # the new copy, swapped in before the kill
    assert sorted(os.listdir(tmp_path)) == ["ix"]  # the load removed the partial old copy
    idx = _index(30)
    idx.save(path)
    assert len(hn.open(path)) == 30 and sorted(os.listdir(tmp_path)) == ["ix"]


def test_an_old_copy_that_cannot_be_renamed_stays_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the aside copy cannot be renamed out of its name it is kept whole (a partial one
    would hold no save): the next save removes it."""
    path = tmp_path / "ix"
    _index(20).save(path)
    shutil.copytree(path, tmp_path / ".ix.old")
    real = os.rename

    def rename(src, dst):
        if Path(src).name == ".ix.old":
            raise PermissionError(13, "denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(swap.os, "rename", rename)
    swap.drop_aside(path)
    monkeypatch.undo()
    assert hn.open(tmp_path / ".ix.old") is not None and sorted(os.listdir(tmp_path)) == [".ix.old", "ix"]
    _index(25).save(path)
    assert sorted(os.listdir(tmp_path)) == ["ix"]


def test_read_info_reads_again_when_a_save_moves_the_copy_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_info reads as load does: a save moving the copy aside while it read the groups
    raised IndexFormatError ("group vectors: FileNotFoundError")."""
    path = tmp_path / "ix"
    _index(40).save(path)
    real = persist.expect_kind
    armed = [True]

    def expect_kind(r, group, kind):
        out = real(r, group, kind)
        if armed[0] and group == "graph":
            armed[0] = False
            os.rename(path, tmp_path / ".ix.old")  # a save's first rename; it is killed there
        return out

    monkeypatch.setattr(persist, "expect_kind", expect_kind)
    info = persist.read_info(path)
    assert not armed[0] and info["node_count"] == 40 and path.is_dir()


def test_read_info_never_pairs_two_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save swapped in between read_info's reads of the graph and the vectors: one save's
    configuration came back with the other's row count."""
    path = tmp_path / "ix"
    _index(40, m=8).save(path)
    real = persist.expect_kind
    armed = [True]

    def expect_kind(r, group, kind):
        out = real(r, group, kind)
        if armed[0] and group == "graph":
            armed[0] = False
            _index(25, seed=1, m=6).save(path)
        return out

    monkeypatch.setattr(persist, "expect_kind", expect_kind)
    info = persist.read_info(path)
    assert (info["config"].m, info["node_count"]) == (6, 25)


def test_a_directory_found_between_two_looks_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path is looked at once: missing at a first ``stat`` and a whole directory at a
    second (a swap's rename in between), it was called "not a directory"."""
    path = tmp_path / "ix"
    _index(20).save(path)
    real = os.stat
    calls = []

    def stat(p, *args, **kwargs):
        if os.fspath(p) == str(path) and not calls:
            calls.append(p)
            raise FileNotFoundError(2, "No such file or directory", str(p))
        return real(p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    assert swap.local_dir_for_read(path) == path
    assert calls


def test_a_load_putting_the_aside_copy_back_does_not_fail_another_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader R1 reads; a save moves the copy aside; R1's read fails; another reader's load
    puts the same copy back before R1 compares the path's identity, which is then what it
    was: R1 raised IndexFormatError where it reads again."""
    path = tmp_path / "ix"
    _index(50).save(path)
    time.sleep(0.02)  # the rename's change time is not the save's own
    real = persist.read_graph
    armed = [True]

    def read_graph(*args, **kwargs):
        if not armed[0]:
            return real(*args, **kwargs)
        armed[0] = False
        os.rename(path, tmp_path / ".ix.old")  # the saver's first rename
        try:
            return real(*args, **kwargs)  # R1's read: the files are gone
        finally:
            assert swap.local_dir_for_read(path) == path  # R2 puts the copy back

    monkeypatch.setattr(persist, "read_graph", read_graph)
    assert len(hn.open(path)) == 50 and not armed[0]


def test_a_reader_reads_the_aside_copy_in_place_while_a_save_is_under_way(tmp_path: Path) -> None:
    """With the path missing and a live save holding a temporary copy of it (its lock file
    held), a reader reads the aside copy where it is: renaming it back mid-swap hid the swap
    from other readers and made the saver move the copy aside again."""
    path = tmp_path / "ix"
    _index(30).save(path)
    aside = tmp_path / ".ix.old"
    os.rename(path, aside)
    tmp = swap.tmp_sibling(path)  # a save under way (this process's, in another thread)
    try:
        assert swap.local_dir_for_read(path) == aside
        assert len(hn.open(path)) == 30 and aside.is_dir() and not path.exists()
    finally:
        swap.remove(tmp)
    assert len(hn.open(path)) == 30  # no save under way: the aside copy is put back
    assert path.is_dir() and not aside.exists()


def test_an_aside_copy_appearing_counts_as_a_move(tmp_path: Path) -> None:
    """What a reader compares after a failed read includes the aside copy: one that appeared
    (a save's first rename) says a swap is under way, whatever the path shows."""
    path = tmp_path / "ix"
    _index(20).save(path)
    tgt = swap.resolve_target(path, write=False)
    before = persist._moves(tgt)
    shutil.copytree(path, tmp_path / ".ix.old")
    assert persist._moves(tgt) != before


def test_loading_an_hnswlib_file_removes_a_killed_saves_copy(tmp_path: Path) -> None:
    """A load of an hnswlib file removes the temporary copies dead saves of the path left
    (full-size files), as a Zarr load does; they stayed until the next save."""
    idx = _index(50)
    path = tmp_path / "ix.bin"
    hn.save_hnswlib(path, *idx.native)
    stray = tmp_path / f".ix.bin.tmp-{_dead_pid()}-deadbeef-0badf00d"
    shutil.copyfile(path, stray)
    Path(f"{stray}.lock").touch()
    h, _ = hn.load_hnswlib(hn.L2(), 8, path)
    assert h.node_count == 50
    assert sorted(os.listdir(tmp_path)) == ["ix.bin"]
