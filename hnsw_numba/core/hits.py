"""Search results: ``Hit`` (one result) and ``Hits`` (the results of one query)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Hashable, Iterator, NamedTuple, overload

__all__ = ["Hit", "Hits"]


class Hit(NamedTuple):
    """One search result."""

    key: Hashable
    distance: float
    node_id: int


# Hit((key, distance, node_id)) without NamedTuple's Python-level __new__ (C calls only)
_new_hit = functools.partial(tuple.__new__, Hit)


class Hits(Sequence[Hit]):
    """The results of one query, best first: a read-only sequence of :class:`Hit`.

    It compares equal to a list of the same hits and otherwise behaves like one for
    reading (``len``, indexing, slicing, iteration). The columns are at hand without
    building a ``Hit`` per result: ``keys``, ``distances`` and ``node_ids``.

    A search answers in a few tens of microseconds, so making ten ``Hit`` objects up front
    would be a measurable part of it: they are made when read.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[Any, float, int]]) -> None:
        self.raw = raw  # (key, distance, node_id) tuples, owned by this object

    @classmethod
    def of_row(cls, keys: list, dists: list, ids: list) -> Hits:
        """The hits of one row of a batch's outputs (as lists), without its padding (NodeId -1)."""
        if ids and ids[-1] == -1:  # fewer live items than k
            n = ids.index(-1)
            ids, dists, keys = ids[:n], dists[:n], keys[:n]
        return cls(list(zip(keys, dists, ids)))

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, i: int) -> Hit: ...

    @overload
    def __getitem__(self, i: slice) -> Hits: ...

    def __getitem__(self, i: int | slice) -> Hit | Hits:
        if isinstance(i, slice):
            return Hits(self.raw[i])
        return _new_hit(self.raw[i])

    def __iter__(self) -> Iterator[Hit]:
        return map(_new_hit, self.raw)

    def __reversed__(self) -> Iterator[Hit]:
        return map(_new_hit, reversed(self.raw))

    def __contains__(self, value: object) -> bool:
        return value in self.raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hits):
            return self.raw == other.raw
        if isinstance(other, list):
            return self.raw == other  # a Hit equals the plain tuple of its fields
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking like a list: unhashable

    def __repr__(self) -> str:
        return repr(list(self))

    def __reduce__(self) -> tuple:
        return (Hits, (self.raw,))

    @property
    def keys(self) -> list:
        """The keys, best first."""
        return [h[0] for h in self.raw]

    @property
    def distances(self) -> list[float]:
        """The distances, ascending."""
        return [h[1] for h in self.raw]

    @property
    def node_ids(self) -> list[int]:
        """The internal NodeIds, in the same order."""
        return [h[2] for h in self.raw]
