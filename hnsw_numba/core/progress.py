"""Progress reporting for long operations: ``tqdm.auto`` when installed, otherwise silent.

``tqdm.auto`` draws a widget in Jupyter and text in a terminal. A bar is shown by default
(``progress=None``) when the work is expected to take longer than :data:`AUTO_SECONDS` and
someone can see it (stderr is a terminal, or the code runs in a Jupyter kernel);
``progress=True`` always shows it, ``progress=False`` never.

Compilation is a step of its own: the first call of a kernel for a store type in a process
compiles it (seconds) unless Numba's disk cache holds it. :func:`compile_step` compiles it
before the work starts, under its own line ("compiling kernels for float16"), so the work's
rate and ETA are not skewed by it.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Callable

import numpy as np

from ..kernels.jit import cache_state, compile_for
from .compile_ahead import compile_ahead, wait_for
from .compile_ahead import enabled as compile_ahead_enabled
from .errors import InvalidParameterError

__all__ = ["Progress", "want_progress", "interactive", "in_notebook", "insert_seconds", "compile_step", "AUTO_SECONDS",
           "INSERT_COST"]

#: Work expected to last longer than this (seconds) shows a bar by default.
AUTO_SECONDS = 2.0
#: Seconds per item, per unit of ``ef_construction`` and per ``dim + 440`` on one thread: a
#: fit of inserts of 10,000 clustered vectors on a shared 2-core Xeon (8-d and 128-d at
#: ef_construction 200: 0.84 and 1.1 us per unit; 384-d at 100: 1.5 us). Larger indexes
#: are slower per item, so the estimate errs towards showing no bar.
INSERT_COST = 1.8e-9
#: What the first compilation of a store type's kernels costs, for the step's label.
COMPILE_HINT = "once, ~10 s"


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (where stderr is not a terminal)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython without a shell, or a broken one: no notebook
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive() -> bool:
    """Whether someone can watch a progress bar: stderr is a terminal, or a notebook runs us."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or in_notebook()


def want_progress(progress: bool | None, seconds: float = math.inf) -> bool:
    """Resolve a ``progress=`` argument for work expected to take ``seconds``.

    ``None`` shows a bar when the work is long (> :data:`AUTO_SECONDS`) and someone can see
    it (:func:`interactive`); ``True`` / ``False`` (NumPy bools too) force it on / off.
    Anything else raises :class:`InvalidParameterError` (a str or 1 is no answer).
    """
    if progress is None:
        return seconds > AUTO_SECONDS and interactive()
    if not isinstance(progress, (bool, np.bool_)):
        raise InvalidParameterError(f"progress must be True, False or None (automatic), got {progress!r}")
    return bool(progress)


def insert_seconds(n: int, dim: int, ef_construction: int, threads: int) -> float:
    """A rough estimate of how long inserting ``n`` items takes (for the default of ``progress``)."""
    return n * ef_construction * (dim + 440) * INSERT_COST / max(threads, 1)


def _tqdm() -> Any:
    """``tqdm.auto.tqdm``, or None without tqdm.

    In a notebook without ipywidgets ``tqdm.auto`` falls back to text and warns
    (``TqdmWarning: IProgress not found``) on import: the text bar is what we want there,
    so the warning is silenced.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm
    except ImportError:  # optional dependency
        return None
    return tqdm


class Progress:
    """A minimal progress bar facade: ``update(n)`` and ``close()``; silent when disabled.

    Parameters
    ----------
    total : int
        Units of work.
    desc : str
        Label shown before the bar.
    enabled : bool
        Draw a bar (if tqdm is installed).
    unit : str
        Name of one unit.
    bar_format : str, optional
        tqdm's ``bar_format`` (a step without a bar).
    start : bool
        Draw the bar now; ``False`` waits for :meth:`start` or the first :meth:`update`
        (so a compilation step that comes first prints first).

    Notes
    -----
    A bar given as ``progress=`` to ``Hnsw.insert_batch`` is advanced by it, round by
    round, and left open: a caller that inserts in batches shows one bar for all of them.
    """

    def __init__(self, total: int, desc: str, enabled: bool, *, unit: str = "it", bar_format: str | None = None,
                 start: bool = True) -> None:
        self._bar: Any = None
        self.enabled = bool(enabled) and _tqdm() is not None
        self._args = (total, desc, unit, bar_format)
        if start:
            self.start()

    def start(self) -> None:
        """Draw the bar, if enabled and not drawn yet."""
        if self.enabled and self._bar is None:
            total, desc, unit, bar_format = self._args
            extra = {} if bar_format is None else {"bar_format": bar_format}
            self._bar = _tqdm()(total=total, desc=desc, unit=unit, mininterval=0.5, file=sys.stderr, **extra)

    def update(self, n: int) -> None:
        """Advance by ``n`` units."""
        if self.enabled:
            if self._bar is None:
                self.start()
            self._bar.update(n)

    def close(self) -> None:
        """Finish the bar (it stays on screen)."""
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Row classes to the store type their name stands for.
_ROW_LABELS = {"F32Rows": "float32", "F16Rows": "float16", "BF16Rows": "bfloat16", "WalkRows": "float32 + float16 walk copy", "Qi8Rows": "qi8"}
#: (kernel, row class) pairs already compiled or loaded in this process: a fast exit.
_READY: set = set()


def compile_step(kernel: Any, args: tuple, rows: Any, show: bool, ahead: Callable[[], list] | None = None) -> None:
    """Make sure ``kernel`` is compiled for ``args`` before timed work starts.

    A specialisation that is compiled in this process returns at once; one in the disk
    cache is loaded silently; one that a child process is compiling
    (:mod:`.compile_ahead`) is waited for and loaded; one that must be compiled is compiled
    here, shown as the step "compiling kernels for <store type> (once, ~10 s)" when
    ``show`` is true.

    Parameters
    ----------
    kernel : numba dispatcher
        The entry point about to run.
    args : tuple
        Arguments of the same types as the coming call.
    rows : NamedTuple
        The store's ``rows()``, which names the store type.
    show : bool
        Show the compilation as a step.
    ahead : callable, optional
        Returns the ``(kernel, args)`` pairs that come next (the first answer's after a
        build's): when ``kernel`` must be compiled here, a child process compiles those
        meanwhile, on another core.
    """
    key = (kernel, type(rows))
    if key in _READY:
        return
    state = cache_state(kernel, args)
    if state == "missing":  # a child compiling it ahead finishes sooner than a compilation here
        wait_for(kernel, args)
        state = cache_state(kernel, args)
    if state == "missing" and ahead is not None and compile_ahead_enabled():
        compile_ahead(ahead())
    if state == "missing" and show:
        label = _ROW_LABELS.get(type(rows).__name__, type(rows).__name__)
        with Progress(1, f"compiling kernels for {label} ({COMPILE_HINT})", True, bar_format="{desc}: {elapsed}") as bar:
            compile_for(kernel, args)
            bar.update(1)
    elif state != "compiled":
        compile_for(kernel, args)
    _READY.add(key)
