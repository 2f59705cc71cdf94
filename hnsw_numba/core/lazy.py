"""Modules and objects made on first use, so that a build and a first answer import only
what they run (the filtered-search, health, k-NN graph and pickling code waits until called)."""

from __future__ import annotations

import importlib
import threading
from typing import Any

__all__ = ["OnFirstUse", "made_once"]


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


_MAKING = threading.Lock()


def made_once(owner: Any, attr: str, module: str, cls: str, *args: Any) -> Any:
    """``owner.<attr>``, set to ``module.cls(*args)`` by the first caller that finds it ``None``.

    Callers test the attribute first (``owner.x or made_once(owner, "x", ...)``), so after the
    first call the object is an ordinary attribute read: a proxy object forwarding every call
    (``__getattr__``) costs ~2 us a call, a tenth of a small filtered search.
    """
    with _MAKING:  # two threads' first calls make one object
        obj = getattr(owner, attr)
        if obj is None:
            obj = getattr(importlib.import_module(module), cls)(*args)
            setattr(owner, attr, obj)
    return obj
