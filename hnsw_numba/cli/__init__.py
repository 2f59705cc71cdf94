"""The ``hnsw-numba`` command line (also ``python -m hnsw_numba``); see :mod:`.main`.

This module imports nothing else at import time: the console script imports it before
:func:`main` runs, and everything heavier (NumPy, Numba, the subcommands) loads inside
:func:`main`, where a Ctrl-C ends with one line instead of a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hnsw-numba`` command (see :func:`hnsw_numba.cli.main.main`)."""
    try:
        from .main import main as run
    except KeyboardInterrupt:
        globals()["main"] = entry
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print("\nhnsw-numba: interrupted; nothing was written", file=sys.stderr, flush=True)
        return 130
    # Importing the submodule ``main`` rebinds this package's name ``main`` to it: the entry
    # point keeps the name.
    globals()["main"] = entry
    return run(argv)


entry = main


def build_parser():  # noqa: ANN201 - argparse.ArgumentParser, imported lazily
    """The command line's parser (see :mod:`.parser`)."""
    from .parser import build_parser as build

    return build()
