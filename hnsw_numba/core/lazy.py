"""Modules and objects made on first use, so that a build and a first answer import only
what they run (the filtered-search, health, k-NN graph and pickling code waits until called)."""

from __future__ import annotations

import importlib
import threading
from typing import Any

__all__ = ["OnFirstUse", "Deferred"]


class OnFirstUse:
    """Stands for the module ``name``: imports it on the first attribute access.

    Parameters
    ----------
    name : str
        Absolute module name, e.g. ``"hnsw_numba.core.health"``.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


class Deferred:
    """Stands for ``module.cls(*args)``: imports ``module`` and makes the object (once,
    thread-safely) on the first attribute access, then forwards every access to it."""

    __slots__ = ("_spec", "_obj", "_lock")

    def __init__(self, module: str, cls: str, *args: Any) -> None:
        self._spec = (module, cls, args)
        self._obj: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        obj = self._obj
        if obj is None:
            with self._lock:
                if self._obj is None:
                    module, cls, args = self._spec
                    self._obj = getattr(importlib.import_module(module), cls)(*args)
                obj = self._obj
        return getattr(obj, attr)
