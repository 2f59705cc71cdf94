"""A pickle whose level-generator state NumPy cannot take is refused with IndexFormatError.

NumPy's PCG64 raises OverflowError for ints past uint64 (or a C long), which is neither a
TypeError nor a ValueError; unpickling turns it into IndexFormatError like every other
field a pickle holds.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import hnsw_numba as hn


class _Crafted:
    """Unpickles as ``cls.__new__(cls)`` followed by ``__setstate__(state)``."""

    def __init__(self, cls: type, state: Any) -> None:
        self.cls, self.state = cls, state

    def __reduce__(self) -> tuple:
        return (self.cls.__new__, (self.cls,), self.state)


def _index() -> hn.Index:
    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    ix = hn.Index(8, metric="l2", seed=1)
    ix.add(x)
    return ix


RNG_EDITS = [
    ("negative state", lambda r: r["state"].__setitem__("state", -1)),
    ("state past uint128", lambda r: r["state"].__setitem__("state", 2**200)),
    ("has_uint32 2**70", lambda r: r.__setitem__("has_uint32", 2**70)),
    ("negative uinteger", lambda r: r.__setitem__("uinteger", -1)),
    ("another generator", lambda r: r.__setitem__("bit_generator", "MT19937")),
    ("state a list", lambda r: r.__setitem__("state", [1, 2])),
]


@pytest.mark.parametrize("case,edit", RNG_EDITS, ids=[c[0] for c in RNG_EDITS])
def test_a_tampered_level_generator_state_is_a_format_error(case: str, edit) -> None:
    """Fails on the unchecked conversion: a bare OverflowError for the first four cases."""
    ix = _index()
    state = ix.__getstate__()
    rng = state["index"]["rng"] = dict(state["index"]["rng"], state=dict(state["index"]["rng"]["state"]))
    edit(rng)
    with pytest.raises(hn.IndexFormatError, match="level generator"):
        pickle.loads(pickle.dumps(_Crafted(hn.Index, state)))
    with pytest.raises(hn.IndexFormatError, match="level generator"):  # an Hnsw pickled on its own
        pickle.loads(pickle.dumps(_Crafted(hn.Hnsw, state["index"])))


def test_an_untouched_level_generator_state_round_trips() -> None:
    ix = _index()
    copy = pickle.loads(pickle.dumps(ix))
    assert copy.native[0].state.rng.bit_generator.state == ix.native[0].state.rng.bit_generator.state
