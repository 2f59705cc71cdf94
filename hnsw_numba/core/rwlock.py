"""A small phase-fair readers-writer lock.

Searches and mutations take it shared (the kernels synchronise among themselves);
growth, loading and saving take it exclusive because they replace arrays. A waiting writer
holds back new readers (a stream of searches cannot starve a save), and the readers waiting
when an exclusive hold ends go in before the next writer (saves back to back cannot starve
an insert). The thread that
holds it exclusive may take it again, either way (``with index.lock.exclusive():
store.resize(n); index.resize(n)``), and so may a thread that holds it shared take it shared
again (it does not wait behind a writer that waits for it); a thread holding it shared must
not ask for it exclusive (it would wait for itself).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


#: Seconds a waiting thread sleeps before it checks the counts again by itself: a wake-up
#: lost to a Ctrl-C in the thread that gave it costs that much, not a hang.
POLL = 0.05


class RWLock:
    """The lock's counts change under ``_mutex`` taken by ``with`` (a C lock: entering and
    leaving it run no Python frame, where a Ctrl-C could land between a release and its count
    update and leave the lock held for good); wake-ups go through ``_cond`` over that mutex."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        # How many of the waiting readers go in ahead of waiting writers: set when an
        # exclusive hold ends, never above _readers_waiting (a reader that leaves the wait,
        # in or interrupted, takes its share with it).
        self._turn = 0
        self._owner = 0  # the exclusive holder's thread ident while _writer
        self._held = threading.local()  # .depth: how many shared holds this thread has

    @contextmanager
    def shared(self) -> Iterator[None]:
        if self._writer and self._owner == threading.get_ident():
            yield  # this thread holds it exclusive, which excludes more than shared does
            return
        held = self._held
        depth = getattr(held, "depth", 0)
        if depth:  # held shared already: a waiting writer waits for this thread
            held.depth = depth + 1
            try:
                yield
            finally:
                held.depth = depth
            return
        entered = False
        try:
            with self._mutex:
                self._readers_waiting += 1
                try:
                    while self._writer or (self._writers_waiting and not self._turn):
                        self._cond.wait(POLL)
                finally:
                    self._readers_waiting -= 1
                    self._turn = min(self._turn, self._readers_waiting)
                self._readers += 1
                entered = True
            held.depth = 1
            yield
        finally:
            if entered:
                held.depth = 0
                with self._mutex:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._writer and self._owner == threading.get_ident():
            yield  # taken again by its holder
            return
        # A Ctrl-C (KeyboardInterrupt) can arrive while waiting: the waiting writer is
        # counted off again, or every later shared() would wait for it forever.
        acquired = False
        try:
            with self._mutex:
                self._writers_waiting += 1
                try:
                    while self._writer or self._readers or self._turn:
                        self._cond.wait(POLL)
                finally:
                    self._writers_waiting -= 1
                    self._cond.notify_all()  # readers held back by this writer check again
                acquired = True  # before the flag: an interrupt between the two resets a flag not set
                self._owner = threading.get_ident()
                self._writer = True
            yield
        finally:
            if acquired:
                with self._mutex:
                    self._writer = False
                    self._owner = 0
                    self._turn = self._readers_waiting
                    self._cond.notify_all()
