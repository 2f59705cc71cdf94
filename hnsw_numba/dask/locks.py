"""The write lock of a sharded index: the writers of one target take turns.

A local target's lock is an exclusive ``flock`` on its ``shards`` directory (every process
and thread of the machine takes turns); a remote target's lock is a lock of this process,
one per store path (``memory://a/b`` and ``memory:///a/b`` are one target). Making a local
target and removing one a failed first build made take turns in this process, so a writer
never opens a target another one is removing. A child forked during a write holds none of
its parent's locks: it closes the lock descriptors it inherits and starts with fresh locks.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.errors import InvalidParameterError, PersistError, persist_errors
from ..core.interrupts import held_interrupts
from .manifest import is_remote, remote_fs

__all__ = ["writing", "making", "lock_key"]

# lock_key(remote target) -> lock of this process's writers, while a writer holds or waits
# for it (weak values: one entry per target ever written grew without bound)
_process_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_table_lock = threading.Lock()  # finding or making an entry of _process_locks is one step
_making = threading.Lock()  # making a local target, or removing one a failed first build made
_fds: set[int] = set()  # descriptors of this process holding (or waiting for) a flock
_fds_lock = threading.Lock()  # _fds and the descriptors in it change together


def _after_fork_in_child() -> None:
    """Drop the parent's locks: the threads holding them do not exist in the child."""
    global _process_locks, _table_lock, _making, _fds_lock
    for fd in _fds:  # the flock stays the parent's: its own descriptor still holds it
        with contextlib.suppress(OSError):
            os.close(fd)
    _fds.clear()
    _process_locks, _table_lock = weakref.WeakValueDictionary(), threading.Lock()
    _making, _fds_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    # _fds is consistent at the fork: a descriptor opened and not yet recorded would stay open in the child
    os.register_at_fork(before=lambda: _fds_lock.acquire(), after_in_parent=lambda: _fds_lock.release(),
                        after_in_child=_after_fork_in_child)


def lock_key(target: str) -> str:
    """What names ``target``'s store location: fsspec's own spelling of a URL, an absolute local path."""
    if not is_remote(target):
        with persist_errors(f"cannot write a sharded index at {target}"):  # a relative path in a removed working directory
            return os.path.normcase(os.path.abspath(target))
    try:
        fs, path = remote_fs(target)
    except InvalidParameterError:  # the write itself reports what fsspec cannot open
        return target
    return fs.unstrip_protocol(path)


@contextlib.contextmanager
def making() -> Iterator[None]:
    """Hold this process's turn to make a local target or remove what a failed first build made."""
    with _making:
        yield


@contextlib.contextmanager
def writing(target: str, prepare: Callable[[], Any] | None = None) -> Iterator[Any]:
    """Hold ``target``'s write lock for one write, from reading the manifest to removing what
    the new one does not name; yields what ``prepare`` returned (None without it).

    A local target's lock is an exclusive ``flock`` on its ``shards`` directory, taken anew
    when that directory was removed or replaced while this writer waited; ``prepare`` (which
    makes the target) runs before each attempt. A remote target's lock serialises the threads
    of this process. A second writer waits, then starts from the manifest the first
    committed: unlocked, each write's clean-up removes the other's new shards and a
    manifest names a shard no longer there.
    """
    if is_remote(target) or not hasattr(os, "O_DIRECTORY"):  # flock: POSIX only
        key = lock_key(target)
        with _table_lock:
            lock = _process_locks.get(key)
            if lock is None:
                lock = _process_locks[key] = threading.Lock()
        with lock:  # this reference keeps the entry while the write runs
            yield prepare() if prepare is not None else None
        return
    fd, made = _lock_shards(target, prepare)
    try:
        yield made
    finally:
        _close(fd)  # releases the lock


def _open(path: Path, what: str) -> int:
    """A descriptor of directory ``path``, recorded for a forked child to close."""
    # Ctrl-C held from the open until the descriptor is recorded: in between it leaked it
    with held_interrupts(), _fds_lock:
        with persist_errors(what):  # the directory itself: no lock file to leave behind
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _fds.add(fd)
    return fd


def _close(fd: int) -> None:
    with held_interrupts(), _fds_lock:
        _fds.discard(fd)
        os.close(fd)


#: Times a writer makes or locks a target whose ``shards`` directory other processes keep
#: removing or replacing before it gives up (each time another writer went through).
_ATTEMPTS = 100


def _lock_shards(target: str, prepare: Callable[[], Any] | None) -> tuple[int, Any]:
    """``(fd, prepare())`` with ``fd`` an exclusive ``flock`` on the live ``shards`` directory."""
    import fcntl

    shards = Path(target) / "shards"
    what = f"cannot lock {target} for writing"
    for attempt in range(_ATTEMPTS):
        with _making:  # a failed first build of this process removes what it made in turn
            made = prepare() if prepare is not None else None  # its own errors propagate (a path no folder can be made at)
            try:
                fd = _open(shards, what)
            except FileNotFoundError:
                if prepare is None or attempt == _ATTEMPTS - 1:
                    raise
                continue  # another process's failed first build removed what it made: make it anew
        try:
            with persist_errors(what):
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                now = os.stat(shards)
        except FileNotFoundError:  # the writer before removed the target it had made
            now = None
        except BaseException:
            _close(fd)
            raise
        if now is not None and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            return fd, made
        _close(fd)  # removed or replaced while this writer waited: lock what is there now
    raise PersistError(f"{what}: its shards directory was replaced {_ATTEMPTS} times while this writer waited")
