"""A small phase-fair readers-writer lock whose release runs no Python code.

Searches and mutations take it shared (the kernels synchronise among themselves);
growth, loading and saving take it exclusive because they replace arrays. A waiting writer
holds back new readers (a stream of searches cannot starve a save), and the readers waiting
when a writer got in go in before the next writer (saves back to back cannot starve an
insert). The thread that holds it exclusive may take it again, either way (``with
index.lock.exclusive(): store.resize(n); index.resize(n)``), and so may a thread that holds
it shared take it shared again (it does not wait behind a writer that waits for it); a
thread holding it shared must not ask for it exclusive (:class:`LockOrderError`).

Python runs SIGINT's handler where a Python frame begins or a C call returns, so a release
written in Python (a ``contextmanager`` generator's ``__exit__``) can be interrupted before
it counts its holder off, and the lock stays held for as long as the traceback lives (a
REPL keeps it: the ``save`` in ``except KeyboardInterrupt:`` waited for ever). Each hold is
a C re-entrant lock (:class:`Hold`) that ``shared`` / ``exclusive`` take before they return
it: the ``with`` statement enters it without a Python frame and releases it through C alone.
A nested hold is a no-op context (nothing to release); a waiter that waits on no hold sleeps
briefly and looks again (a ``threading.Condition`` re-takes its lock in Python: interrupted
there, the ``with`` around it released a mutex another thread held).
"""

from __future__ import annotations

import _thread
import contextlib
import threading
import time
import weakref

from .errors import LockOrderError

__all__ = ["RWLock", "Hold", "POLL"]

#: Seconds a thread waiting on another's hold blocks before it looks at the lock again.
POLL = 0.05
#: Seconds a thread waiting on no hold (a writer waiting for readers to go in, a reader
#: waiting for a waiting writer to get in) sleeps before it looks again.
_NAP = 0.0002
#: What a nested hold returns: the outer hold excludes what it must, nothing to release.
_NESTED = contextlib.nullcontext()


class Hold(_thread.RLock):
    """One thread's hold of an :class:`RWLock`: taken when ``shared()`` / ``exclusive()``
    returns it, released by its C ``__exit__``; entering it only reads."""

    __slots__ = ()
    __enter__ = _thread.RLock._is_owned


class RWLock:
    """The counts change under ``_mutex`` (a C lock: ``with`` on it runs no Python frame);
    a waiter blocks on the hold it waits for (woken by its C release) or naps.

    Every thread has a reader and a writer hold; writers probe the reader holds (a
    non-blocking acquire), readers the last writer's hold.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._local = threading.local()
        self._readers: dict[int, weakref.ref] = {}  # every thread's reader hold (dead ones till the next writer)
        self._writer: Hold | None = None  # the hold of the last thread to take it exclusive
        # The threads waiting, by ident: a thread leaves with one set.discard, a single C
        # call (a count decremented under the mutex skipped its decrement when a Ctrl-C
        # interrupted the mutex's blocking acquire, and the lock stayed wedged)
        self._writers_waiting: set[int] = set()
        self._readers_waiting: set[int] = set()
        # How many waiting readers go in ahead of waiting writers: set when a writer gets in
        # (the readers waiting then), spent as they go in; it counts only while readers wait
        self._turn = 0

    def _holds(self) -> tuple[Hold, Hold]:
        local = self._local
        try:
            return local.r, local.w
        except AttributeError:
            r, w = Hold(), Hold()
            with self._mutex:  # a thread's end drops its holds; exclusive() forgets the dead refs
                self._readers[id(r)] = weakref.ref(r)
            local.r, local.w = r, w
            return r, w

    def shared(self) -> Hold | contextlib.nullcontext:
        """Take the lock shared; ``with lock.shared():`` releases it."""
        r, w = self._holds()
        if r._is_owned() or w._is_owned():  # held by this thread already (exclusive excludes more)
            return _NESTED
        me, probing = threading.get_ident(), None
        try:
            with self._mutex:
                if self._writer is None and not self._writers_waiting:
                    r.acquire()
                    return r
                self._readers_waiting.add(me)
            while True:
                with self._mutex:
                    writer = self._writer
                    if writer is not None:
                        probing = writer
                        if writer.acquire(False):  # let go: no writer holds it
                            writer.release()
                            self._writer = writer = None
                        probing = None
                    if writer is None and (not self._writers_waiting or self._turn):
                        self._readers_waiting.discard(me)
                        if self._turn:
                            self._turn -= 1
                        r.acquire()
                        return r
                if writer is None:  # a writer waits for the readers in: it gets in soon
                    time.sleep(_NAP)
                    continue
                probing = writer  # blocks until the writer lets go (C), or a poll
                if writer.acquire(True, POLL):
                    writer.release()
                probing = None
        except BaseException:
            # inline, one C call each, each later one in a finally: a Python helper's frame,
            # or a second Ctrl-C after one call, would skip the rest (no finally runs on the
            # way out of a success: a call there, interrupted, lost the hold it returned)
            try:
                try:
                    r.release()
                except RuntimeError:  # not taken
                    pass
            finally:
                try:
                    if probing is not None:
                        try:
                            probing.release()
                        except RuntimeError:  # not taken
                            pass
                finally:
                    self._readers_waiting.discard(me)
            raise

    def exclusive(self) -> Hold | contextlib.nullcontext:
        """Take the lock exclusive; ``with lock.exclusive():`` releases it."""
        r, w = self._holds()
        if w._is_owned():  # taken again by its holder
            return _NESTED
        if r._is_owned():
            raise LockOrderError("this thread holds the index's lock shared: it cannot take it exclusive")
        me, probing = threading.get_ident(), None
        try:
            self._writers_waiting.add(me)
            while True:
                with self._mutex:
                    busy = self._writer
                    if busy is not None:
                        probing = busy
                        if busy.acquire(False):
                            busy.release()
                            self._writer = busy = None
                        probing = None
                    if busy is None:
                        for key, ref in list(self._readers.items()):
                            hold = ref()
                            if hold is None:
                                if self._readers.get(key) is ref:
                                    del self._readers[key]
                                continue
                            probing = hold
                            if not hold.acquire(False):
                                busy = hold
                                probing = None
                                break
                            hold.release()
                            probing = None
                    if busy is None and not (self._turn and self._readers_waiting):
                        self._writers_waiting.discard(me)
                        self._turn = len(self._readers_waiting)  # they go in before the next writer
                        self._writer = w
                        w.acquire()
                        return w
                if busy is None:  # the readers' turn: they go in soon
                    time.sleep(_NAP)
                    continue
                probing = busy  # blocks until that holder lets go (C), or a poll
                if busy.acquire(True, POLL):
                    busy.release()
                probing = None
        except BaseException:
            try:  # as in shared()
                try:
                    w.release()
                except RuntimeError:
                    pass
            finally:
                try:
                    if probing is not None:
                        try:
                            probing.release()
                        except RuntimeError:
                            pass
                finally:
                    self._writers_waiting.discard(me)
            raise
