"""hnswlib's on-disk format: header parsing and vectorised validation.

The layout is what hnswlib's ``HierarchicalNSW::saveIndex`` (``hnswalg.h``) writes: a
96-byte header, ``N`` fixed level-0 blocks of ``S`` bytes
``[u32 count|flags][maxM0 u32 ids][vector][u64 label]`` and ``N`` variable upper-level
records ``[u32 L][L bytes of (1 + maxM) word blocks]``.

Nothing here trusts the file: every size is checked with Python ints (no wrap-around)
before an offset derived from it is used, and every per-element check is NumPy over views
of the buffer, so a Python loop never runs per element. Each error starts with the name
of the failed check in brackets (``[level0-truncated]`` ...); the exception carries the
name as ``.check`` too.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, NoReturn

import numpy as np

from ..core.config import MAX_DIM, MAX_EF, MAX_LEVEL, MAX_M, MAX_NODES
from ..core.errors import IndexFormatError, LegacyFormatError
from ..core.store import UNIT_TOLERANCE
from ..core.store_base import value_limit, within_limit
from ..kernels.layout import COUNT_MASK

__all__ = ["HEADER_BYTES", "Header", "fail", "parse_header", "walk_upper", "check_entry", "check_finite",
           "check_flag_bits", "check_labels", "graph_check", "COSINE_FILE_TOLERANCE"]

HEADER_BYTES = 96
_HEADER_DTYPE = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"),
    ("size_per_element", "<u8"), ("label_offset", "<u8"), ("offset_data", "<u8"),
    ("max_level", "<i4"), ("entry_point", "<u4"), ("max_m", "<u8"), ("max_m0", "<u8"),
    ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8"),
])
assert _HEADER_DTYPE.itemsize == HEADER_BYTES
_NO_ENTRY = 0xFFFFFFFF  # enterpoint_node_ of an empty index (-1 as uint32)
_ROWS = 1 << 16  # elements per block of the level-0 scans: bounds the temporaries


class Header(NamedTuple):
    """The 13 header fields (hnswlib's member names without the trailing underscore)."""

    offset_level0: int
    max_elements: int
    count: int
    size_per_element: int
    label_offset: int
    offset_data: int
    max_level: int
    entry_point: int
    max_m: int
    max_m0: int
    m: int
    mult: float
    ef_construction: int

    @property
    def dim(self) -> int:
        """float32 components per vector, ``(label_offset - offset_data) / 4``."""
        return (self.label_offset - self.offset_data) // 4


def fail(check: str, message: str) -> NoReturn:
    """Raise LegacyFormatError ``[check] message`` with ``.check`` set."""
    err = LegacyFormatError(f"[{check}] {message}")
    err.check = check
    try:
        raise err
    finally:  # no cycle through the traceback: the frames it holds (the file's mapping) go with it
        del err


def parse_header(buf: np.ndarray, dim: int | None) -> Header:
    """Read and check the header against the file length (checks 1-10 of the format doc).

    Parameters
    ----------
    buf : uint8[len]
        The whole file.
    dim : int or None
        The caller's dimension; ``None`` takes it from the file.
    """
    size = buf.shape[0]
    if size < HEADER_BYTES:
        fail("header-truncated", f"{size} bytes, the header alone needs {HEADER_BYTES}")
    raw = buf[:HEADER_BYTES].view(_HEADER_DTYPE)[0]
    h = Header(*(float(raw[f]) if f == "mult" else int(raw[f]) for f in _HEADER_DTYPE.names))
    if h.offset_level0 != 0:
        fail("offset-level0", f"offsetLevel0_ is {h.offset_level0}, hnswlib always writes 0")
    if h.count > h.max_elements:
        fail("count-exceeds-capacity", f"cur_element_count {h.count} > max_elements_ {h.max_elements}")
    if h.count >= _NO_ENTRY:
        fail("count-too-large", f"cur_element_count {h.count} does not fit a 32-bit internal id")
    if h.count > MAX_NODES:
        fail("count-too-large", f"cur_element_count {h.count} exceeds the {MAX_NODES:,} nodes hnsw_numba supports")
    if h.max_elements > _NO_ENTRY:
        fail("capacity-range", f"max_elements_ {h.max_elements} exceeds hnswlib's 32-bit internal ids")
    if not 1 <= h.max_m0 <= COUNT_MASK:
        fail("maxM0-range", f"maxM0_ {h.max_m0} outside [1, 65535] (the link count has 16 bits)")
    if not 1 <= h.max_m <= h.max_m0:
        fail("maxM-range", f"maxM_ {h.max_m} outside [1, maxM0_ = {h.max_m0}]")
    if h.m != h.max_m or h.max_m0 != 2 * h.m:
        fail("m-relation", f"M_ {h.m}, maxM_ {h.max_m}, maxM0_ {h.max_m0}: hnswlib writes maxM_ = M_ and maxM0_ = 2 M_")
    if not 2 <= h.m <= MAX_M:
        fail("m-range", f"M_ {h.m} outside [2, {MAX_M}]")
    if h.offset_data != 4 + 4 * h.max_m0:
        fail("offset-data", f"offsetData_ {h.offset_data}, layout implies 4 + 4 * maxM0_ = {4 + 4 * h.max_m0}")
    vec_bytes = h.label_offset - h.offset_data
    if vec_bytes <= 0 or vec_bytes % 4:
        fail("label-offset", f"label_offset_ {h.label_offset} - offsetData_ {h.offset_data} is not a positive multiple of 4 "
                             "(float32 vectors)")
    if h.dim > MAX_DIM:
        fail("dim-mismatch", f"the file's vectors have {h.dim} components, more than {MAX_DIM}")
    if dim is not None and h.dim != dim:
        fail("dim-mismatch", f"the file stores {h.dim}-dimensional vectors, {dim} were expected")
    if h.size_per_element != h.label_offset + 8:
        fail("size-data-per-element", f"size_data_per_element_={h.size_per_element}, layout implies {h.label_offset + 8}")
    expected_mult = 1.0 / math.log(h.m)
    if not (math.isfinite(h.mult) and h.mult > 0 and math.isclose(h.mult, expected_mult, rel_tol=1e-9)):
        fail("mult", f"mult_ {h.mult!r} is not 1/ln(M_) = {expected_mult!r}, the only value hnswlib writes")
    if not 1 <= h.ef_construction <= MAX_EF:
        fail("ef-construction", f"ef_construction_ {h.ef_construction} outside [1, {MAX_EF}]")
    need = HEADER_BYTES + h.count * h.size_per_element  # Python ints: no wrap-around
    if need > size:
        fail("level0-truncated", f"level-0 region needs {need} bytes, file has {size}")
    return h


def walk_upper(words: np.ndarray, tail: int, n: int, block_words: int) -> np.ndarray:
    """Word offsets (int32, or int64 for huge files) of the ``n`` upper-level records in ``words`` (check 11).

    Record ``i`` starts at word ``p_i`` with its byte length ``L = words[p_i]`` and the next
    starts at ``p_i + 1 + L / 4``. Every position is given a successor (or a terminal: exact
    end, truncated, size not a multiple of a block, level too high, beyond reach), and
    the chain from 0 is read off by pointer doubling: ``log2(n)`` gathers instead of a
    loop over records. ``tail`` is the number of bytes after the last whole word.

    A record holds at most ``MAX_LEVEL`` blocks, so ``n`` records span at most
    ``n * (1 + MAX_LEVEL * block_words)`` words: only that prefix is examined, which
    bounds time and memory whatever follows it.
    """
    w = words.shape[0]
    if n == 0:
        if w or tail:
            fail("trailing-bytes", f"an empty index has {4 * w + tail} bytes after its header")
        return np.empty(0, np.int32)
    reach = min(w, n * (1 + MAX_LEVEL * block_words))
    end, trunc, bad, high, beyond = reach, reach + 1, reach + 2, reach + 3, reach + 4
    idx = np.int64 if reach + 5 > 2**31 - 1 else np.int32
    jump = np.empty(reach + 5, idx)
    jump[reach:] = np.arange(reach, reach + 5)  # terminals stay where they are
    for c0 in range(0, reach, _ROWS):  # chunks bound the int64 temporaries
        length = words[c0 : min(c0 + _ROWS, reach)].astype(np.int64)
        raw = np.arange(c0, c0 + length.shape[0], dtype=np.int64) + 1 + length // 4
        nxt = raw.copy()
        nxt[raw >= reach] = beyond
        nxt[raw == w] = end  # (only when reach == w)
        nxt[raw > w] = trunc
        nxt[length > MAX_LEVEL * 4 * block_words] = high
        nxt[length % (4 * block_words) != 0] = bad
        jump[c0 : c0 + length.shape[0]] = nxt
    chain = np.array([0 if reach else end], idx)  # chain[d] = position after d records
    while chain.shape[0] < n + 1:
        if chain[-1] >= reach:
            break  # reached a terminal: the rest of the chain stays there
        chain = np.concatenate([chain, jump[chain]])[: n + 1]
        if chain.shape[0] < n + 1:
            jump = jump[jump]  # jump now skips as many records as chain holds
    del jump
    term = np.flatnonzero(chain >= reach)
    first = int(term[0]) if term.shape[0] else n + 1
    if first <= n:
        kind = int(chain[first])
        p = int(chain[first - 1]) if first else 0
        size = int(words[p]) if first else 0
        if kind == bad:
            fail("upper-size", f"element {first - 1}: {size} bytes is not a multiple of {4 * block_words}")
        if kind == high:
            fail("level-range", f"element {first - 1}: {size} bytes of upper levels is level {size // (4 * block_words)}, "
                                f"above the {MAX_LEVEL} levels hnsw_numba supports")
        if kind == trunc:
            fail("upper-truncated", f"element {first - 1}'s upper-level record ({size} bytes at byte "
                                    f"{4 * p} of the upper region) runs past the end of the file")
        if kind == end and first < n:
            fail("upper-truncated", f"the file ends after {first} of {n} upper-level records")
        if kind == end and tail:
            fail("trailing-bytes", f"{tail} bytes follow the last upper-level record")
        if kind == end:
            return chain[:n]
    stop = int(chain[n]) if first > n else None
    where = f"word {stop} of {w}" if stop is not None else f"beyond word {reach} of {w}"
    fail("trailing-bytes", f"the {n} upper-level records end at {where}; bytes follow them")


def check_entry(h: Header, levels: np.ndarray) -> None:
    """Entry point and top level against the element levels (check 12)."""
    n = h.count
    if n == 0:
        if h.max_level != -1 or h.entry_point != _NO_ENTRY:
            fail("entry-point", f"empty index with maxlevel_ {h.max_level} / enterpoint_node_ {h.entry_point}, "
                                "hnswlib writes -1 / 0xFFFFFFFF")
        return
    if h.entry_point >= n:
        fail("entry-point", f"enterpoint_node_={h.entry_point} >= cur_element_count {n}")
    top = int(levels.max())
    if h.max_level != top:
        fail("max-level", f"maxlevel_={h.max_level}, highest element level {top}")
    if int(levels[h.entry_point]) != top:
        fail("entry-point-level", f"entry point {h.entry_point} has level {int(levels[h.entry_point])}, "
                                  f"maxlevel_ is {top}")


def check_flag_bits(head0: np.ndarray, upper_heads: np.ndarray) -> None:
    """No stray bits in the link-count words (checks 13-14, ``flag-bits``).

    ``head0`` is the level-0 header word of every element (count in bits 0-15, the delete
    mark in bit 16, nothing above); ``upper_heads`` the header word of every upper block
    (count only).
    """
    for r0 in range(0, head0.shape[0], _ROWS):
        stray = (head0[r0 : r0 + _ROWS] >> 17) != 0
        if stray.any():
            i = r0 + int(np.argmax(stray))
            fail("flag-bits", f"element {i}: level-0 header word {int(head0[i]):#010x} has bits above the delete mark")
    stray = (upper_heads >> 16) != 0
    if stray.any():
        j = int(np.argmax(stray))
        fail("flag-bits", f"upper-level block header word {int(upper_heads[j]):#010x} has bits above the link count")


def check_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels unique (check 15); returns ``(argsort int32, sorted labels)`` for look-ups."""
    perm = np.argsort(labels, kind="stable").astype(np.int32)
    s = labels[perm]
    same = s[1:] == s[:-1]
    if same.any():
        j = int(np.argmax(same))
        fail("duplicate-label", f"label {int(s[j])} is carried by internal ids {int(perm[j])} and {int(perm[j + 1])} "
                                "(hnswlib's replace_deleted can write this; its loader keeps the last id)")
    return perm, s


# validate_graph (shared with the Zarr loader) names the problem in its message; map it
# to the check names of this module.
_GRAPH_CHECKS = [
    (re.compile(r"links, more than|links on level \d+, more than"), "link-count"),
    (re.compile(r"neighbour id .* out of range"), "neighbour-id"),
    (re.compile(r"links on level \d+ to node \d+, whose top level"), "neighbour-level"),
    (re.compile(r"entry point|max level"), "entry-point"),
]
_KERNEL_CHECKS = {6: "self-loop", 7: "duplicate-neighbour", 8: "neighbour-level", 4: "link-count", 5: "neighbour-id"}


def graph_check(arrays, n: int, m: int, used: int) -> None:
    """Run the Zarr loader's graph validation (NumPy, then ``check_graph_kernel``) on the views.

    The NumPy pass bounds every count, id and level before the kernel reads the arrays;
    the kernel adds what is cheaper in a loop (self loops, duplicate neighbours).
    """
    from .checks import validate_graph
    from ..kernels.integrity import INTEGRITY_MESSAGES, check_graph_kernel

    try:
        validate_graph(arrays, n, m, used, "hnswlib file")
    except IndexFormatError as exc:
        msg = str(exc).removeprefix("hnswlib file: ")
        check = next((name for pat, name in _GRAPH_CHECKS if pat.search(msg)), "graph")
        fail(check, msg)
    code, node, level = check_graph_kernel(arrays)
    if code:
        fail(_KERNEL_CHECKS.get(code, "graph"), f"element {node}, level {level}: {INTEGRITY_MESSAGES[code]}")


#: How far from 1 a cosine file's norms may be: the loosest storage rounding (``save_hnswlib``
#: writes bfloat16 and Qi8 rows widened, norms 0.998 and 1.001 measured), where an l2 file's
#: rows are off by far more.
COSINE_FILE_TOLERANCE = max(UNIT_TOLERANCE.values())


def check_finite(vectors: np.ndarray, n: int, dim: int, unit: bool = False, finite: bool = True) -> None:
    """Check ``finite-vectors``: the first ``dim`` floats of each of ``n`` rows are finite and
    within :func:`~hnsw_numba.core.store_base.value_limit`; with ``unit`` (a cosine index)
    ``unit-vectors``: each finite row's norm is 0 or 1 within ``COSINE_FILE_TOLERANCE``
    (``finite``: False skips the first check).

    A NaN vector compares false with everything, so a search would rank it arbitrarily
    (often first); past the limit float32 distances overflow and tie at inf. ``insert``
    refuses both anyway. Cosine distances are ``1 - dot`` of stored unit vectors (hnswlib's
    cosine space normalises them too): other rows would get distances outside 0..2 and be
    ranked by their length.
    """
    step = max(1, (1 << 22) // max(dim, 1))  # rows per block: bounds the boolean temporary
    for r0 in range(0, n, step):
        block = vectors[r0 : min(r0 + step, n), :dim]
        ok = within_limit(block) if finite else np.ones(block.shape[0], bool)  # False for NaN too
        if not ok.all():
            row = r0 + int(np.argmin(ok))
            fail("finite-vectors", f"vector {row} holds NaN, inf or a component beyond +-{value_limit(dim):.3g}, past which distances "
                                   "overflow float32 (load_hnswlib(..., allow_nonfinite=True) to inspect it)")
        if unit:
            with np.errstate(over="ignore", invalid="ignore"):
                norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            off = np.isfinite(norms) & (norms != 0) & (np.abs(norms - 1) > COSINE_FILE_TOLERANCE)  # NaN: the first check's
            if off.any():
                row = r0 + int(np.argmax(off))
                fail("unit-vectors", f"vector {row} has norm {norms[row - r0]:.4g}: a cosine index holds unit vectors "
                                     "(hnswlib's cosine space stores them normalised; open this file with metric 'l2' or 'ip')")
