"""A save's temporary copy and its lock file: never leaked by a Ctrl-C, never removed under a
live save by another process's cleaner, never held by a forked child.

A save names its copy with :func:`~hnsw_numba.io.localfiles.tmp_name`, which makes the
copy's lock file (``<copy>.lock``, ``flock``-ed while the save runs) and registers the name
in ``localfiles._in_use``; :func:`~hnsw_numba.io.localfiles.release_tmp` lets both go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.interrupts import held_interrupts
from hnsw_numba.io import atomic, localfiles, swap, zarr_write
from hnsw_numba.io.atomic import write_atomically
from conftest import interrupt_each_step

pytestmark = pytest.mark.skipif(sys.platform == "win32" or localfiles.fcntl is None, reason="POSIX signals and flock")

#: The functions that take, use and let go of a copy's name: a Ctrl-C is simulated at each
#: call they make and at each C call's return in them (where SIGINT's handler runs).
_WATCHED = (localfiles.tmp_name, localfiles.release_tmp, swap.drop_aside, swap.tmp_sibling,
            atomic.write_files_atomically, atomic.replace_file, atomic._drop, zarr_write.open_writer)

#: Clean-ups whose first frame a Ctrl-C is not simulated on: none. Every clean-up a save
#: runs after success runs inside its try or under a hold entered before it, so one Ctrl-C
#: on a clean-up's first frame (or its hold's ``__enter__``) is cleaned up as any error; a
#: second one, during the clean-up a first started, is not simulated.
_CLEANUPS = ()


def _codes(functions) -> set:
    return {getattr(f, "__wrapped__", f).__code__ for f in functions}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def ctrl_c_at_each_step(call, after_interrupt, watched, limit: int = 2000) -> int:
    """Run ``call()`` with a Ctrl-C at its n-th step, n = 1, 2, ..., ``after_interrupt()``
    after each interrupted run, until a run finishes; returns the runs taken.

    A step is a call made by a function of ``watched`` or into one (SIGINT's handler runs as
    a Python function starts) and a C call's return in one. Outside ``held_interrupts`` the
    KeyboardInterrupt is raised there; inside, SIGINT is sent, recorded and raised where the
    block ends, as a real Ctrl-C's is."""
    watch, skip, hold = _codes(watched), _codes(_CLEANUPS), held_interrupts.__enter__.__code__

    def step(n: int, seen: list):
        def profiler(frame, event, arg):
            if event == "c_return":
                step = frame.f_code in watch
            elif event == "call" and frame.f_code.co_name != "__del__":  # a finalizer ignores it
                caller = frame.f_back.f_code if frame.f_back is not None else None
                step = frame.f_code not in skip and not (frame.f_code is hold and caller in skip) and (frame.f_code in watch or caller in watch)
            else:
                return
            if step:
                seen[0] += 1
                if seen[0] == n:
                    if getattr(signal.getsignal(signal.SIGINT), "__func__", None) is held_interrupts._record:
                        signal.raise_signal(signal.SIGINT)
                    else:
                        raise KeyboardInterrupt

        return profiler

    return interrupt_each_step(call, step, after_interrupt, limit)[1]



def _saves(tmp_path: Path) -> dict:
    """``(target, save)`` of each kind of save through a temporary copy."""
    index = hn.Index(4, "l2", seed=1)
    index.add(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))

    def results() -> None:
        from hnsw_numba.cli.files import write_results

        write_results(str(tmp_path / "r.zarr"), np.arange(6).reshape(3, 2), np.ones((3, 2), np.float32))

    return {
        "zip": (tmp_path / "ix.zip", lambda: index.save(tmp_path / "ix.zip")),
        "directory": (tmp_path / "ix.zarr", lambda: index.save(tmp_path / "ix.zarr")),
        "one file": (tmp_path / "f.bin", lambda: write_atomically(tmp_path / "f.bin", lambda f: f.write(b"x" * 100), fsync=False)),
        "results": (tmp_path / "r.zarr", results),
    }


@pytest.mark.parametrize("kind", ["zip", "directory", "one file", "results"])
def test_a_ctrl_c_anywhere_in_a_save_leaks_no_lock(tmp_path, sigint_raises, kind) -> None:
    """A Ctrl-C held while ``tmp_name`` made the copy's lock file is raised as its block ends,
    before the caller has the name; one between a caller's ``tmp_name`` and the ``try`` that
    removes the copy skips the removal too. Either way nothing released the name: its lock
    file, descriptor and ``_in_use`` entry stayed for the life of the process (55 per 1,100
    interrupted ``.zip`` saves in a reviewer's run), and no later save removed the copy (its
    lock held)."""
    from hnsw_numba.cli import files

    target, save = _saves(tmp_path)[kind]
    save()
    save()  # a directory save's first swap leaves the code of later ones to run
    in_use, fds = set(localfiles._in_use), _fds()

    def nothing_leaked() -> None:
        assert set(localfiles._in_use) == in_use
        assert _fds() == fds
        assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock") or ".lk-" in p.name]

    runs = ctrl_c_at_each_step(save, nothing_leaked, _WATCHED + (files.write_results,))
    assert runs > 10
    save()  # removes the copies interrupted saves left
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    nothing_leaked()


_CLEANER = """
import sys
from pathlib import Path
from hnsw_numba.io.localfiles import clean_leftovers
clean_leftovers(Path(sys.argv[1]))
"""

#: Holds a flock on each lock file of a copy of ``argv[1]`` until stdin closes, as another
#: process's clean_leftovers does for an instant while it tells a live copy from a dead one.
_PROBE = """
import fcntl, os, sys
from pathlib import Path
from hnsw_numba.io.localfiles import sibling_name
target = Path(sys.argv[1])
prefix = sibling_name(target, "tmp-").name
fds = []
for name in os.listdir(target.parent):
    if name.startswith(prefix) and name.endswith(".lock"):
        fd = os.open(target.parent / name, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(fd)
print(len(fds), flush=True)
sys.stdin.read()
"""


def _run(script: str, target: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", script, str(target)], env=env, text=True, **kw)


@pytest.mark.parametrize("other", ["cleans", "probes"])
def test_a_cleaner_running_as_a_copy_is_named_does_not_lose_the_save(tmp_path, monkeypatch, other) -> None:
    """Another process's clean_leftovers between the creation of a copy's lock file and its
    ``flock`` saw an unlocked lock file with no copy and unlinked it, or held it for its probe
    so that the saver's ``flock`` failed; the copy was written with no lock file, and a
    cleaner in another PID namespace (where the saver's pid is dead: 999999999 here) removed
    it under the save (1-2 of 350 saves in a reviewer's run across ``unshare -p``)."""
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    real_flock, real_getpid = localfiles.fcntl.flock, os.getpid
    probes: list[subprocess.Popen] = []

    def flock(fd, op):  # the saver's, as tmp_name makes the lock file
        monkeypatch.setattr(localfiles.fcntl, "flock", real_flock)
        if other == "cleans":
            assert _run(_CLEANER, target).wait() == 0
        else:
            probes.append(_run(_PROBE, target, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            probes[0].stdout.readline()
        return real_flock(fd, op)

    def write(f) -> None:
        f.write(b"new")
        f.flush()
        assert _run(_CLEANER, target).wait() == 0  # another PID namespace's: the saver's pid is no pid there

    monkeypatch.setattr(localfiles.fcntl, "flock", flock)
    monkeypatch.setattr(os, "getpid", lambda: 999999999)
    try:
        write_atomically(target, write, fsync=False)
    finally:
        monkeypatch.setattr(os, "getpid", real_getpid)
        for probe in probes:
            probe.communicate("")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_a_lock_file_left_before_its_rename_goes_once_stale(tmp_path) -> None:
    """A process killed between making a copy's lock file (under a name no cleaner probes at
    once) and renaming it to ``<copy>.lock`` leaves it: removed once a minute old and
    unlocked; a fresh one, a held one and another target's sibling are kept."""
    target = tmp_path / "ix.bin"
    target.write_bytes(b"x")
    stale = tmp_path / ".ix.bin.lk-999999999-0badf00d-12345678"
    fresh = tmp_path / ".ix.bin.lk-999999999-0badf00d-87654321.old"
    held = tmp_path / ".ix.bin.lk-999999999-0badf00d-abcdef01.d"
    other = tmp_path / ".ix.bin.lk-1.tmp-999999999-0badf00d-12345678"  # a copy of "ix.bin.lk-1"'s save
    for p in (stale, fresh, held, other):
        p.touch()
    old = time.time() - 2 * getattr(localfiles, "_PRE_LOCK_AGE", 60)
    for p in (stale, held, other):
        os.utime(p, (old, old))
    fd = os.open(held, os.O_RDONLY)
    try:
        localfiles.fcntl.flock(fd, localfiles.fcntl.LOCK_EX)
        localfiles.clean_leftovers(target)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ix.bin", fresh.name, held.name, other.name])


def test_a_child_forked_while_a_copy_is_named_holds_no_lock(tmp_path, monkeypatch) -> None:
    """A fork from another thread between the opening of a copy's lock file and its entry in
    ``_in_use`` gave the child a descriptor its fork handler did not know: the child held the
    lock after the parent let it go (25-36 of 500 forks while another thread saved)."""
    if not hasattr(os, "register_at_fork"):
        pytest.skip("no fork handlers")
    real_flock = localfiles.fcntl.flock
    go, forked, status = threading.Event(), threading.Event(), []

    def forker() -> None:
        go.wait()
        pid = os.fork()
        if pid == 0:  # the child: how many descriptors of files in tmp_path does it hold?
            held = 0
            for fd in os.listdir("/proc/self/fd"):
                try:
                    held += os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
                except OSError:
                    pass
            os._exit(held)
        forked.set()
        status.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    def flock(fd, op):  # the saver's, between the lock file's os.open and its entry in _in_use
        monkeypatch.setattr(localfiles.fcntl, "flock", real_flock)
        go.set()
        forked.wait(1.0)  # a fork that waits for the entry comes after it
        return real_flock(fd, op)

    thread = threading.Thread(target=forker)
    thread.start()
    monkeypatch.setattr(localfiles.fcntl, "flock", flock)
    try:
        tmp = localfiles.tmp_name(tmp_path / "f.bin")
    finally:
        go.set()
        thread.join()
    localfiles.release_tmp(tmp)
    assert status == [0]
    assert not list(tmp_path.iterdir())
