"""The NamedTuples the kernels see and the constants that give their fields meaning.

``GraphArrays`` carries the whole graph; one ``*Rows`` class per storage kind carries the
vectors. Distinct classes give distinct Numba types, so the distance overloads pick the
right code at typing time (f16 and bf16 are both ``uint16`` bits) and each entry point is
compiled once per storage kind.

The constants are plain module-level ints: Numba freezes globals into the compiled code,
so a named constant costs nothing over a literal.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "L2_CODE",
    "IP_CODE",
    "GraphArrays",
    "F32Rows",
    "F16Rows",
    "BF16Rows",
    "WalkRows",
    "Qi8Rows",
    "exact_rows",
    "H_ENTRY",
    "H_MAX_LEVEL",
    "H_NODES",
    "H_DELETED",
    "H_LOCK",
    "H_UPPER_USED",
    "H_M",
    "HEADER_SIZE",
    "COUNT_MASK",
    "MAX_LEVEL",
    "MAX_TAG",
    "PREP_NONE",
    "PREP_CHECK",
    "PREP_NORMALIZE",
]

#: Metric codes: the kernels branch on them once per distance call, outside the
#: dimension loop (one compiled specialisation serves every metric of a store type).
L2_CODE = 0  # squared Euclidean
IP_CODE = 1  # 1 - dot (inner product, and cosine on unit vectors)

# Slots of GraphArrays.header (int64).
H_ENTRY = 0  # entry point NodeId, -1 when the graph is empty
H_MAX_LEVEL = 1  # level of the entry point, -1 when empty
H_NODES = 2  # NodeIds handed out so far (live + deleted + being inserted)
H_DELETED = 3  # tombstoned nodes
H_LOCK = 4  # spin-lock word guarding entry point / max level
H_UPPER_USED = 5  # int32 words of upper_links handed out
H_M = 6  # the m parameter (max degree on levels >= 1)
HEADER_SIZE = 8

#: The link count of a ``[count, ids...]`` block is the low 16 bits of its first word.
#: hnswlib keeps its delete mark in byte 2 of that word, so an hnswlib file read in place
#: needs the mask; every reader of a count applies it.
COUNT_MASK = 0xFFFF

#: Highest level a node may have (levels are int8; a higher draw is astronomically unlikely).
MAX_LEVEL = 31

#: Visited arrays are ``uint16[cap + 1]`` with the current tag in the last slot; after
#: ``MAX_TAG`` searches the tags wrap and the array is cleared.
MAX_TAG = 0xFFFF

#: What ``knn_one_kernel`` / ``prepare_query`` do to a raw query before the search.
PREP_NONE = 0  # already prepared (float32, checked, normalised when the metric needs it)
PREP_CHECK = 1  # reject NaN / inf
PREP_NORMALIZE = 2  # reject NaN / inf, then scale to unit length (cosine)


class GraphArrays(NamedTuple):
    """Flat graph arrays (capacity ``cap`` NodeIds).

    levels : int8[cap]
        Top level of each node; -1 for a NodeId not handed out yet.
    links0 : int32[cap, 2m + 1]
        Level-0 adjacency: column 0 holds the count (low 16 bits), then up to 2m ids.
    upper_start : int64[cap]
        Offset into ``upper_links`` of the node's level-1 block; -1 for level-0 nodes.
    upper_links : int32[U]
        CSR-style upper levels: node i's level-l block ``[count, m ids]`` starts at
        ``upper_start[i] + (l - 1) * (m + 1)`` (hnswlib's own block layout).
    tombstones : uint8[cap]
        1 for a deleted node (kept for routing, never returned).
    locks : int32[cap]
        Per-node spin locks guarding link-list writes.
    header : int64[8]
        Scalars, see the ``H_*`` constants.
    """

    levels: np.ndarray
    links0: np.ndarray
    upper_start: np.ndarray
    upper_links: np.ndarray
    tombstones: np.ndarray
    locks: np.ndarray
    header: np.ndarray


class F32Rows(NamedTuple):
    """float32 vectors: ``data`` float32[cap, dim]."""

    data: np.ndarray


class F16Rows(NamedTuple):
    """IEEE half vectors kept as their bits: ``bits`` uint16[cap, dim]."""

    bits: np.ndarray


class BF16Rows(NamedTuple):
    """bfloat16 vectors kept as their bits: ``bits`` uint16[cap, dim]."""

    bits: np.ndarray


class WalkRows(NamedTuple):
    """float32 vectors with a float16 copy the graph walk reads.

    bits : uint16[cap, dim]
        The float16 copy, first: every distance kernel reads field 0, so the walks,
        inserts and links of this class compute on the copy (half the bytes per row).
    data : float32[cap, dim]
        The vectors themselves: the answers' distances and every exact scan use them.
    """

    bits: np.ndarray
    data: np.ndarray


def exact_rows(rows: tuple) -> tuple:
    """The rows exact distances read: ``F32Rows(rows.data)`` for ``WalkRows``, else ``rows``."""
    return F32Rows(rows.data) if isinstance(rows, WalkRows) else rows


class Qi8Rows(NamedTuple):
    """Per-vector quantized int8: value = scale * (code - zero_point).

    codes : int8[cap, dim]
    scale : float32[cap]
        Finite and > 0.
    zero : int8[cap]
        The zero point; ``|code - zero| <= 255`` always, so centred codes fit int16.
    """

    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
