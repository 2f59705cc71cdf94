"""Index configuration."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..kernels.layout import MAX_LEVEL
from .errors import HnswError, IndexFormatError, InvalidParameterError

__all__ = ["HnswConfig", "MAX_DIM", "MAX_NODES", "MAX_M", "MAX_EF", "MAX_LEVEL", "check_int", "stored_config"]

#: Upper bounds that stop absurd requests before any large allocation.
MAX_DIM = 65_536
MAX_NODES = 2**31 - 2  # NodeIds are int32
MAX_M = 10_000  # hnswlib 0.8 caps M there too (level-0 count must fit 16 bits)
MAX_EF = 1_000_000


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Raise InvalidParameterError unless ``value`` is an int (Python or NumPy, not bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise InvalidParameterError(f"{name} must be an int, got {value!r}") from None
    if not low <= value <= high:
        raise InvalidParameterError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True, slots=True)
class HnswConfig:
    """Parameters of an HNSW index.

    Parameters
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Capacity in NodeIds (deleted nodes keep theirs); grow with ``Hnsw.resize``.
    m : int
        Links per node on the upper levels; level 0 allows ``2 * m`` (as hnswlib).
    ef_construction : int
        Beam width while inserting (hnswlib uses ``max(ef_construction, m)``).
    ef_search : int
        Default beam width for searches; a search uses ``max(ef, k)``.
    seed : int or None
        Seed of the level generator (``None``: fresh entropy).
    """

    dim: int
    max_nodes: int
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 50
    seed: int | None = None

    def __post_init__(self) -> None:
        check_int("dim", self.dim, 1, MAX_DIM)
        check_int("max_nodes", self.max_nodes, 1, MAX_NODES)
        check_int("m", self.m, 2, MAX_M)
        check_int("ef_construction", self.ef_construction, 1, MAX_EF)
        check_int("ef_search", self.ef_search, 1, MAX_EF)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**63 - 1)
        for name in ("dim", "max_nodes", "m", "ef_construction", "ef_search"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def m0(self) -> int:
        """Maximum degree on level 0 (``2 * m``)."""
        return 2 * self.m

    @property
    def level_mult(self) -> float:
        """Scale of the level distribution, ``1 / ln(m)``."""
        return 1.0 / math.log(self.m)

    @property
    def effective_ef_construction(self) -> int:
        """``max(ef_construction, m)``, as hnswlib uses it."""
        return max(self.ef_construction, self.m)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (used by persistence)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HnswConfig":
        """Inverse of :meth:`to_dict`; unknown fields are rejected."""
        fields = {"dim", "max_nodes", "m", "ef_construction", "ef_search", "seed"}
        extra = set(d) - fields
        if extra:
            raise InvalidParameterError(f"unknown configuration fields: {sorted(extra)}")
        return cls(**d)


def stored_config(value: Any, where: str) -> HnswConfig:
    """The configuration a file or a pickle holds; IndexFormatError unless ``value`` is a
    mapping of valid fields (``dict()`` of a str or a list would raise ValueError)."""
    if not isinstance(value, dict):
        raise IndexFormatError(f"{where}: invalid config attribute: expected an object, got {value!r:.80}")
    try:
        return HnswConfig.from_dict(dict(value))
    except (HnswError, TypeError) as exc:
        raise IndexFormatError(f"{where}: invalid config attribute: {exc}") from None
