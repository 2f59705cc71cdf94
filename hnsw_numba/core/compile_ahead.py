"""Compile the kernels a process will call next in a child process, while it compiles another.

A first build on an empty Numba cache compiles the insert kernel (about 5 s, on one core:
Numba compiles under a process-wide lock) and then the single-query kernel for its first
answer (about 1.4 s). The two are independent, so while this process compiles the first, a
child process compiles the second into the shared disk cache, on another core; the first
search then loads it (milliseconds). :func:`compile_ahead` starts such a child for the
specialisations that are missing from the cache; :func:`wait_for` lets a caller about to
compile one of them wait for the child instead (docs/design.md, "Compiling ahead in a
child process").

Nothing starts when the disk cache is off (``HNSW_NUMBA_CACHE=0``), when the process may run
on one core only, when ``sys.executable`` is not a Python interpreter, or when
``HNSW_NUMBA_COMPILE_AHEAD=0``; a child that fails or is killed
costs nothing but its time (the kernel is compiled here as before).
"""

from __future__ import annotations

import base64
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..kernels.jit import CACHE, CACHE_LOCKED, cache_state, signature
from .parallel import available_cores

__all__ = ["compile_ahead", "wait_for", "enabled", "child_main", "WAIT_SECONDS"]

#: At most this long a caller waits for a child compiling what it needs (then compiles it).
WAIT_SECONDS = 120.0
#: The child's program: import this copy of the package (its kernels' cache files are keyed
#: by their source path), then compile what its last argument lists.
_CHILD = "import sys; r = sys.argv[1]; r in sys.path or sys.path.insert(0, r); from hnsw_numba.core.compile_ahead import child_main; child_main(sys.argv[2])"
#: (kernel's qualified name, signature) -> pid of the child compiling it.
_pending: dict[tuple[str, tuple], int] = {}
#: Children not reaped yet. Plain pids (``os.posix_spawn``), not ``subprocess.Popen``
#: objects: a child may outlive this process (it finishes filling the cache for the next
#: one), and a Popen collected at exit while its child runs warns (ResourceWarning).
_children: set[int] = set()
_lock = threading.Lock()


def _forget_children() -> None:
    """In a forked child: the compiling children are its parent's, and a thread of the parent
    may have held ``_lock`` at the fork."""
    global _lock
    _lock = threading.Lock()
    _children.clear()
    _pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_children)


def enabled() -> bool:
    """Whether a child may compile ahead: a disk cache written under its lock, two cores or
    more, a Python interpreter to run (not a frozen application's or an embedding server's
    binary) and ``HNSW_NUMBA_COMPILE_AHEAD`` not ``0``."""
    return (CACHE and CACHE_LOCKED and hasattr(os, "posix_spawn") and os.environ.get("HNSW_NUMBA_COMPILE_AHEAD", "1") != "0"
            and available_cores() > 1 and not getattr(sys, "frozen", False) and os.path.basename(sys.executable or "").lower().startswith("python"))


def _name(kernel: Any) -> str:
    return f"{kernel.py_func.__module__}:{kernel.py_func.__qualname__}"


def _running(pid: int) -> bool:
    """Whether child ``pid`` still runs (reaped when it has exited)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler, os.wait) or not ours after a fork
        done = pid
    if done:
        _children.discard(pid)
    return not done


def compile_ahead(jobs: list[tuple[Any, tuple]]) -> bool:
    """Compile ``(kernel, args)`` specialisations in one child process, in order.

    Only those missing from the disk cache and not being compiled by a child already go to
    the child; returns whether one was started. A child that cannot start is no error.

    Parameters
    ----------
    jobs : list of (dispatcher, tuple)
        A ``kernel`` of :mod:`~hnsw_numba.kernels.jit` (cached) and arguments of the types
        of its coming call.
    """
    if not enabled():
        return False
    with _lock:
        for pid in list(_children):
            _running(pid)
        todo = []
        for kernel, args in jobs:
            key = (_name(kernel), signature(kernel, args))
            if key not in _pending and cache_state(kernel, args) == "missing":
                todo.append(key)
        if not todo:
            return False
        try:
            payload = base64.b64encode(pickle.dumps(todo)).decode()
            env = dict(os.environ, HNSW_NUMBA_COMPILE_AHEAD="0")
            quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
            pid = os.posix_spawn(sys.executable, [sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parents[2]), payload], env,
                                 file_actions=quiet)
        except Exception:  # a type that does not pickle, no interpreter to run: compile here later
            return False
        _children.add(pid)
        for key in todo:
            _pending[key] = pid
    threading.Thread(target=_reap, args=(pid,), name="hnsw-numba-compile-ahead", daemon=True).start()
    return True


def _reap(pid: int) -> None:
    """Wait for child ``pid`` (a daemon thread's whole life): a finished child is reaped at
    once rather than left a zombie until the next compilation asks after it."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by _running meanwhile
        pass
    with _lock:
        _children.discard(pid)
        for key in [k for k, p in _pending.items() if p == pid]:
            del _pending[key]


def wait_for(kernel: Any, args: tuple, timeout: float = WAIT_SECONDS) -> None:
    """Wait (at most ``timeout`` s) until a child compiling ``kernel`` for ``args``' types, if
    one is, has written it to the disk cache or exited."""
    key = (_name(kernel), signature(kernel, args))
    with _lock:
        pid = _pending.pop(key, None)
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    # the child writes each specialisation when it is done: stop once this one is there
    while time.monotonic() < deadline and cache_state(kernel, args) == "missing":
        with _lock:
            if not _running(pid):
                return
        time.sleep(0.01)


def child_main(payload: str) -> None:
    """A child's work: compile each ``(name, signature)`` of ``payload`` (base64 of a pickled list), in order."""
    import importlib

    for name, sig in pickle.loads(base64.b64decode(payload)):
        module, qualname = name.split(":")
        kernel = importlib.import_module(module)
        for part in qualname.split("."):
            kernel = getattr(kernel, part)
        kernel.compile(sig)
