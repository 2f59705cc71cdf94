"""What every part of the command line shares: names, exit codes, the usage error, messages."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["PROG", "EXIT_DATA", "EXIT_USAGE", "EXIT_INTERRUPTED", "DTYPES", "METRICS", "BUILD_BLOCK", "SEARCH_BLOCK",
           "UsageError", "formatter", "positive", "int_in", "say", "WRITTEN", "finish_write", "first_use",
           "COMPILE_NOTE_AFTER", "INTERRUPTED", "on_sigint", "created",
           "check_rows", "checked_blocks", "block_rows", "StdoutError", "guarded_stdout"]

PROG = "hnsw-numba"
EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "qi8": "qi8", "f32+f16": "float32"}
METRICS = ("l2", "cosine", "ip")
BUILD_BLOCK = 4096  # rows per insert_batch call: progress and Ctrl-C between blocks
SEARCH_BLOCK = 16384


class UsageError(Exception):
    """Arguments that parse but do not make sense together: exit status 2."""


class StdoutError(Exception):
    """The results cannot be written to stdout (closed, a full disk, an I/O error): exit status 1."""


class _GuardedStdout:
    """``stream`` (None when the process started with stdout closed) whose failed writes and
    flushes raise :class:`StdoutError`: an OSError there would read as a problem with an
    input or output file, and ``print`` to a closed stdout silently writes nothing."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def _call(self, name: str, *args: Any) -> Any:
        if self.stream is None:
            raise StdoutError("it is closed")
        try:
            return getattr(self.stream, name)(*args)
        except BrokenPipeError:  # the reader left (| head): stopped quietly by the caller
            raise
        except (OSError, ValueError) as exc:  # ValueError: a closed file object
            raise StdoutError(getattr(exc, "strerror", None) or str(exc)) from exc

    def write(self, text: str) -> int:
        return self._call("write", text)

    def flush(self) -> None:
        if self.stream is not None:
            self._call("flush")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def guarded_stdout() -> Iterator[None]:
    """Run the body with ``sys.stdout`` raising :class:`StdoutError` for failed writes, and
    flush it at the end (buffered results fail there, not unseen at exit)."""
    stream = sys.stdout
    sys.stdout = _GuardedStdout(stream)
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = stream


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help text kept as written (examples keep their lines)."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def int_in(name: str, low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]`` (the library's limits, checked at parse time)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{name.lstrip('-')} must be in [{low}, {high}], got {v}")
        return v

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def say(*parts: Any, quiet: bool = False) -> None:
    """A note on stderr unless ``quiet``."""
    if not quiet:
        print(*parts, file=sys.stderr, flush=True)


#: Outputs this process has written completely (a late Ctrl-C's message names them).
WRITTEN: list[str] = []


#: Set by :func:`on_sigint`: a Ctrl-C whose KeyboardInterrupt a ctypes callback swallowed (Numba's
#: compiler reports to llvmlite through one) still stops the command before it writes anything.
INTERRUPTED = threading.Event()


def on_sigint(signum: int, frame: Any) -> None:
    """The command's SIGINT handler: Python's own (KeyboardInterrupt), remembered in :data:`INTERRUPTED`."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


@contextmanager
def finish_write(path: str, quiet: bool = False) -> Iterator[None]:
    """Run an atomic write of ``path`` to its end, then record it in :data:`WRITTEN`.

    A first Ctrl-C while it runs is held until the write is complete (it is atomic, and
    usually seconds) and then raised, so the message can say that ``path`` was written; a
    second Ctrl-C abandons the write at once (nothing is written). Outside the main thread
    Ctrl-C is not ours to hold, and the write runs as it is.
    """
    if INTERRUPTED.is_set():  # a Ctrl-C that was swallowed before the write: write nothing
        raise KeyboardInterrupt
    if threading.current_thread() is not threading.main_thread():
        yield
        WRITTEN.append(path)
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if held:
            raise KeyboardInterrupt
        held.append(signum)
        say(f"\ninterrupt: finishing the write of {path} (Ctrl-C again to abandon it)", quiet=quiet)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    WRITTEN.append(path)
    if held:
        raise KeyboardInterrupt


@contextmanager
def created(*paths: str) -> Iterator[None]:
    """A create-only write of ``paths`` (no ``--overwrite``) that met one made after the
    command checked them (another run's): refused as the check refuses it."""
    from ..io.swap import TargetExistsError
    from .files import DataError

    try:
        yield
    except TargetExistsError:
        import os

        there = next((p for p in paths if os.path.lexists(p)), paths[0])
        raise DataError(f"{there}: already exists (pass --overwrite to replace it)") from None


def checked_blocks(src: Any, normalized: bool, size: int) -> Iterator[tuple[int, Any]]:
    """``(start, rows)`` for consecutive blocks of ``size`` rows of the vector source ``src``,
    each checked as it is read: VectorFileError names the file and row of the first bad one,
    NaN or inf (the source's own check) and, unless the metric normalises the rows (cosine),
    a component past the index's value limit (``core.store_base.value_limit``), which the
    index refuses too."""
    from ..core.errors import VectorFileError
    from ..core.store_base import value_limit, within_limit

    start = 0
    for block in src.batches(size):
        ok = within_limit(block) if not normalized else None
        if ok is not None and not ok.all():
            raise VectorFileError(f"{src.where}: row {start + int(ok.argmin())} has a component beyond "
                                  f"+-{value_limit(src.dim):.3g}: its distances would overflow float32 (scale the vectors down)")
        yield start, block
        start += block.shape[0]


def check_rows(src: Any, normalized: bool) -> None:
    """Read every row of the vector source ``src`` once, before any work, and raise for the
    first bad one (see :func:`checked_blocks`)."""
    from ..io.source import DEFAULT_BATCH

    for _ in checked_blocks(src, normalized, DEFAULT_BATCH):
        pass


@contextmanager
def block_rows(where: str, start: int) -> Iterator[None]:
    """The index's InvalidVectorError for a block of rows read from ``where`` at row
    ``start``: its "vector i" counts from the block's first row, so the message names the
    file and its row (rows a store refuses past :func:`check_rows`'s checks)."""
    import re

    from ..core.errors import InvalidVectorError, VectorFileError

    try:
        yield
    except InvalidVectorError as exc:
        m = re.match(r"vector (\d+) (.*)", str(exc), re.S)
        if m is None:
            raise
        raise VectorFileError(f"{where}: row {start + int(m[1])} {m[2]}") from exc


#: Seconds after which the kernels' first use is announced as compiling (a cache load is quicker).
COMPILE_NOTE_AFTER = 1.0


@contextmanager
def first_use(what: str, label: str, quiet: bool) -> Iterator[None]:
    """The first calls of the kernels for a store type, as a step of their own.

    Numba compiles them on first use (seconds; later runs load its disk cache), so the
    caller runs one small call here and starts its clock afterwards: throughput and ETA
    exclude compilation. The step is announced once it has taken :data:`COMPILE_NOTE_AFTER` seconds (a
    cache load is quicker and stays silent) and its time is printed when it ends.
    """
    t0 = time.perf_counter()
    shown = threading.Event()

    def announce() -> None:
        shown.set()
        say(f"{what}: compiling kernels for {label} (first use; later runs load them from the cache)", quiet=quiet)

    timer = threading.Timer(COMPILE_NOTE_AFTER, announce)
    timer.daemon = True
    if COMPILE_NOTE_AFTER <= 0:
        announce()
    else:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()
    if shown.is_set():
        say(f"{what}: kernels for {label} ready in {time.perf_counter() - t0:.1f} s", quiet=quiet)
