"""Ctrl-C held back while an index changes in steps that must all happen.

Python raises ``KeyboardInterrupt`` in the main thread at any bytecode boundary. Between two
steps of one change (a batch's NodeIds handed out before the code that tombstones unlinked
ones on failure is in place; a store's rows moved before the graph built over them is
installed; a Qi8 row's codes written before its scale) it leaves the index inconsistent:
unlinked live items, every key answering with another key's vector, a row of two vectors.
:class:`held_interrupts` lets such a change finish: while it runs, SIGINT only records that
it arrived, and the handler that was installed before runs once the change is whole.
"""

from __future__ import annotations

import threading
from typing import Any

try:  # the C functions: signal's enum-converting wrappers cost ~4 us a call, these 0.05-0.5
    from _signal import SIGINT, getsignal, signal
except ImportError:  # another interpreter
    from signal import SIGINT, getsignal, signal

__all__ = ["held_interrupts"]


class held_interrupts:
    """Run a ``with`` block with SIGINT recorded, not raised; the previous handler runs at its end.

    Only the main thread receives SIGINT's ``KeyboardInterrupt``, and only a Python handler
    raises it (``SIG_IGN`` / ``SIG_DFL`` raise nothing), so elsewhere the block runs as is.
    Nested blocks hand the signal outwards. Costs ~2.7 us, two ``sigaction`` calls of it (a
    class, not a generator context manager: that cost 4.4).
    """

    __slots__ = ("_previous", "_caught")

    def __enter__(self) -> None:
        self._previous = self._caught = None
        if threading.current_thread() is not threading.main_thread():
            return
        previous = getsignal(SIGINT)
        if callable(previous):
            self._previous = previous
            signal(SIGINT, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self._caught = (signum, frame)

    def __exit__(self, *exc: Any) -> bool:
        previous = self._previous
        if previous is not None:
            signal(SIGINT, previous)
            if self._caught is not None:
                previous(*self._caught)
        return False
