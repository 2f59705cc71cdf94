"""The map between users' keys (int or str) and dense NodeIds.

NodeId -> key lives in a NumPy array (int64 while every key is an int that fits, object
otherwise) so batch results convert with one fancy-index; key -> NodeId is a dict.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable

import numpy as np

from .errors import InvalidKeyError

__all__ = ["KeyMap", "normalize_key", "normalize_keys"]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def normalize_key(key: Any) -> Hashable:
    """Return ``key`` as a plain ``int`` or ``str``; other types raise InvalidKeyError."""
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, np.bool_)):
        raise InvalidKeyError(f"keys must be int or str, got a bool ({key!r})")
    if isinstance(key, (int, np.integer)):
        return int(key)
    raise InvalidKeyError(f"keys must be int or str, got {type(key).__name__} ({key!r})")


def normalize_keys(keys: Any, n: int) -> tuple[list, np.ndarray | None]:
    """Validate a batch of ``n`` keys; returns (list of keys, int64 array or None)."""
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        if keys.ndim != 1 or keys.shape[0] != n:
            raise InvalidKeyError(f"expected {n} keys, got an array of shape {keys.shape}")
        if keys.dtype.kind == "u" and keys.size and keys.max() > _I64_MAX:
            lst = [int(k) for k in keys]
            return lst, None
        arr = keys.astype(np.int64)
        return arr.tolist(), arr
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__len__"):
        keys = list(keys) if not isinstance(keys, (str, bytes)) else [keys]
    if len(keys) != n:
        raise InvalidKeyError(f"expected {n} keys, got {len(keys)}")
    lst = [normalize_key(k) for k in keys]
    if all(type(k) is int and _I64_MIN <= k <= _I64_MAX for k in lst):
        return lst, np.asarray(lst, dtype=np.int64) if lst else np.empty(0, np.int64)
    return lst, None


class KeyMap:
    """Bijection between keys and NodeIds ``0 .. count - 1`` (deleted nodes keep theirs)."""

    def __init__(self, capacity: int):
        self._to_node: dict[Hashable, int] = {}
        self.node_keys: np.ndarray = np.zeros(max(capacity, 1), np.int64)

    @classmethod
    def from_node_keys(cls, node_keys: np.ndarray, count: int, capacity: int) -> "KeyMap":
        """Rebuild from the NodeId -> key array (used by loaders, which check uniqueness)."""
        self = cls(capacity)
        keys = node_keys[:count]
        if keys.dtype == object:
            self.node_keys = np.empty(max(capacity, 1), object)
        self.node_keys[:count] = keys
        self._to_node = dict(zip(keys.tolist(), range(count)))
        return self

    def __len__(self) -> int:
        return len(self._to_node)

    @property
    def is_int(self) -> bool:
        return self.node_keys.dtype != object

    def get(self, key: Hashable) -> int:
        """NodeId of ``key`` or -1."""
        return self._to_node.get(key, -1)

    def get_many(self, keys: Iterable[Hashable]) -> np.ndarray:
        get = self._to_node.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64)

    def add(self, keys: list, node_ids: np.ndarray, int_keys: np.ndarray | None) -> None:
        """Record new keys (the caller checked they are new and unique)."""
        if int_keys is None and self.is_int:
            self.node_keys = self.node_keys.astype(object)
            self.node_keys[: len(self._to_node)] = [int(k) for k in self.node_keys[: len(self._to_node)]]
        self.node_keys[node_ids] = int_keys if (int_keys is not None and self.is_int) else keys
        self._to_node.update(zip(keys, node_ids.tolist()))

    def key(self, node_id: int) -> Hashable:
        k = self.node_keys[node_id]
        return int(k) if self.is_int else k

    def keys_for(self, node_ids: np.ndarray) -> np.ndarray:
        """Keys of a (padded) NodeId array; -1 ids become key -1 (int keys) or None."""
        safe = np.where(node_ids >= 0, node_ids, 0)
        out = self.node_keys[safe]
        if self.is_int:
            out[node_ids < 0] = -1
        else:
            out[node_ids < 0] = None
        return out

    def resize(self, capacity: int) -> None:
        new = np.zeros(max(capacity, 1), self.node_keys.dtype)
        n = min(capacity, self.node_keys.shape[0])
        new[:n] = self.node_keys[:n]
        self.node_keys = new

    def nbytes(self) -> int:
        """Approximate bytes held (array plus dict and key objects)."""
        import sys

        total = self.node_keys.nbytes + sys.getsizeof(self._to_node)
        if not self.is_int:
            total += sum(sys.getsizeof(k) for k in self._to_node)
        else:
            total += 32 * len(self._to_node)  # the dict's int key objects
        return int(total)
