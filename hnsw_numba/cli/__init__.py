"""The ``hnsw-numba`` command line (also ``python -m hnsw_numba``); see :mod:`.main`."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
