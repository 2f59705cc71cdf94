"""A Ctrl-C at the start of a save's clean-up (where CPython runs SIGINT's handler: a Python
frame's start) leaves no copy, lock file, descriptor or aside copy behind.

Python raises ``KeyboardInterrupt`` where a Python frame begins, so a clean-up that holds
interrupts only inside itself (``with held_interrupts():`` as its first statement) can lose
its start, and with it the removal of the copy and the release of its name: the lock stays
held by this process, so no later save or load of the path removes the copy. A tracer sends
a real SIGINT as the named frame starts, once; inside ``held_interrupts`` it is recorded and
raised at the block's end, as a real Ctrl-C's is.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.interrupts import held_interrupts
from hnsw_numba.io import atomic, localfiles, swap, zarr_write
from hnsw_numba.io.atomic import write_atomically

pytestmark = pytest.mark.skipif(sys.platform == "win32" or localfiles.fcntl is None, reason="POSIX signals and flock")

_ENTER = held_interrupts.__enter__.__code__
_OPEN_WRITER = zarr_write.open_writer.__wrapped__.__code__



def _ctrl_c_at(code, *callers):
    """A tracer that sends SIGINT once, as a frame of ``code`` starts whose callers (innermost
    first) run ``callers``."""

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code is code:
            caller = frame.f_back
            for c in callers:
                if caller is None or caller.f_code is not c:
                    return None
                caller = caller.f_back
            sys.settrace(None)
            signal.raise_signal(signal.SIGINT)
        return None

    return tracer


def _interrupted(call, tracer) -> None:
    """``call()`` under ``tracer``; a KeyboardInterrupt it raises is the Ctrl-C's."""
    sys.settrace(tracer)
    try:
        call()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _index(n: int) -> hn.Index:
    index = hn.Index(4, "l2", seed=1)
    index.add(np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32))
    return index


def _nothing_left(tmp_path: Path, target: Path, in_use: set, fds: int) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert set(localfiles._in_use) == in_use
    assert _fds() == fds
    assert not localfiles.save_under_way(target)


_ONE_FILE_POINTS = {
    "_drop": (atomic._drop.__code__, atomic.replace_file.__code__),
    "release_tmp": (localfiles.release_tmp.__code__, atomic._drop.__code__, atomic.replace_file.__code__),
    "its hold": (_ENTER, localfiles.release_tmp.__code__, atomic._drop.__code__, atomic.replace_file.__code__),
}


@pytest.mark.parametrize("kind", ["one file", "zip"])
@pytest.mark.parametrize("point", sorted(_ONE_FILE_POINTS))
def test_a_ctrl_c_as_a_one_file_swap_drops_the_old_link_leaves_nothing(tmp_path, sigint_raises, kind, point) -> None:
    """A Ctrl-C at the start of the removal of the hard link to the old file (``replace_file``'s
    ``finally``) kept the link ``.<name>.tmp-<pid>-...old``, its lock file and descriptor for
    the life of the process: later saves and loads saw the lock held and left them."""
    if kind == "one file":
        target = tmp_path / "f.bin"

        def save() -> None:
            write_atomically(target, lambda f: f.write(b"x" * 100), fsync=True)

        def load() -> None:
            assert target.read_bytes() == b"x" * 100
    else:
        target, index = tmp_path / "ix.zip", _index(30)

        def save() -> None:
            index.save(target)

        def load() -> None:
            assert len(hn.open(target)) == 30

    save()
    save()
    in_use, fds = set(localfiles._in_use), _fds()
    _interrupted(save, _ctrl_c_at(*_ONE_FILE_POINTS[point]))
    load()
    save()
    load()
    _nothing_left(tmp_path, target, in_use, fds)


_DIR_POINTS = {
    "drop_aside's remove": (swap.remove.__code__, swap.drop_aside.__code__),
    "drop_aside's remove's hold": (_ENTER, swap.remove.__code__, swap.drop_aside.__code__),
    "the save's remove": (swap.remove.__code__, _OPEN_WRITER),
    "the save's remove's hold": (_ENTER, swap.remove.__code__, _OPEN_WRITER),
}


@pytest.mark.parametrize("point", sorted(_DIR_POINTS))
def test_a_ctrl_c_as_a_directory_save_removes_a_copy_leaves_nothing(tmp_path, sigint_raises, point) -> None:
    """A Ctrl-C as ``swap.remove`` started, removing the previous generation renamed aside
    (``drop_aside``) or releasing the save's copy (``open_writer``), kept that whole previous
    index directory or the copy's lock file, and a descriptor, for the life of the process;
    ``save_under_way`` said a save was under way for ever."""
    target, index = tmp_path / "a.zarr", _index(30)
    index.save(target)
    index.save(target)
    in_use, fds = set(localfiles._in_use), _fds()
    index.add([1000], np.ones((1, 4), np.float32))
    _interrupted(lambda: index.save(target), _ctrl_c_at(*_DIR_POINTS[point]))
    assert len(hn.open(target)) in (30, 31)
    index.save(target)
    assert len(hn.open(target)) == 31
    _nothing_left(tmp_path, target, in_use, fds)


def test_a_ctrl_c_after_a_directory_swap_renamed_in_keeps_no_old_generation(tmp_path, sigint_raises) -> None:
    """A Ctrl-C as ``swap_in`` flushed the directory after its rename in left the previous
    generation as ``.a.zarr.old``, which loads kept: once the user deleted ``a.zarr``,
    ``hn.open`` put the old index back in its place instead of raising FileNotFoundError."""
    target, index = tmp_path / "a.zarr", _index(30)
    index.save(target)
    index.add([1000], np.ones((1, 4), np.float32))
    _interrupted(lambda: index.save(target),
                 _ctrl_c_at(_ENTER, localfiles.flush_dir.__code__, swap.swap_in.__code__))
    assert len(hn.open(target)) == 31
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]
    shutil.rmtree(target)
    with pytest.raises(FileNotFoundError):
        hn.open(target)


def test_a_load_drops_an_aside_copy_beside_a_whole_index_once_no_save_is_under_way(tmp_path) -> None:
    """An aside copy beside a whole index (a swap stopped after its rename in) was kept by
    every load, and came back as the index once the user deleted it. A live save's aside
    copy (its lock held) stays."""
    target, aside = tmp_path / "a.zarr", localfiles.sibling_name(tmp_path / "a.zarr", "old")
    _index(30).save(target)
    os.rename(target, aside)  # the previous generation, renamed aside
    _index(40).save(tmp_path / "b.zarr")
    os.rename(tmp_path / "b.zarr", target)  # the new one, renamed in
    live = localfiles.tmp_name(target)  # a save under way: its lock held
    try:
        assert len(hn.open(target)) == 40
        assert aside.is_dir()
    finally:
        localfiles.release_tmp(live)
    assert len(hn.open(target)) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]
    shutil.rmtree(target)
    with pytest.raises(FileNotFoundError):
        hn.open(target)


def test_a_ctrl_c_as_a_create_only_pair_releases_its_copies_leaves_nothing(tmp_path, sigint_raises) -> None:
    """A Ctrl-C as ``put_new_files`` released a file's copy after both were put in place (its
    ``finally`` ran on success too) kept the copy's lock file and descriptor for good."""
    files = [(tmp_path / "r.keys.npy", lambda f: np.save(f, np.arange(6)), "keys"),
             (tmp_path / "r.distances.npy", lambda f: np.save(f, np.zeros(6, np.float32)), "distances")]
    swap.put_new_files(files)
    for p in list(tmp_path.iterdir()):
        p.unlink()
    in_use, fds = set(localfiles._in_use), _fds()
    _interrupted(lambda: swap.put_new_files(files), _ctrl_c_at(swap.remove.__code__, swap.put_new_files.__code__))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.distances.npy", "r.keys.npy"]
    assert set(localfiles._in_use) == in_use
    assert _fds() == fds
