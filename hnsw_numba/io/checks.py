"""Checks of loaded key arrays, in vectorised NumPy, and the text encoding of keys.

They run before any kernel sees the arrays and name the first thing that is wrong. The
graph's checks (:func:`validate_graph`) live in :mod:`hnsw_numba.core.graph_checks`, which
pickles share; they are re-exported here.
"""

from __future__ import annotations

import re

import numpy as np

from ..core.errors import IndexFormatError
from ..core.graph_checks import validate_graph
from ..core.keymap import MAX_INT_KEY_DIGITS, stored_key_problem

__all__ = ["validate_graph", "encode_text_keys", "decode_text_keys", "check_keys"]

_DECIMAL = re.compile(r"-?[0-9]+")


def _fail(where: str, msg: str) -> None:
    raise IndexFormatError(f"{where}: {msg}")


# ---------------------------------------------------------------------------- keys
def encode_text_keys(keys: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(types uint8: 0 str / 1 int, offsets int64[n + 1], utf-8 bytes) of int/str keys.

    Ints (only here when some key is a str or does not fit int64) are kept as decimal text, at
    most ``MAX_INT_KEY_DIGITS`` digits as :func:`decode_text_keys` reads them back (the index
    takes no longer one). Raises UnicodeEncodeError for a str that is not valid Unicode (lone
    surrogates).
    """
    types = np.fromiter((type(k) is not str for k in keys), dtype=np.uint8, count=len(keys))
    blobs = [(k if type(k) is str else str(int(k))).encode("utf-8") for k in keys]
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)), out=offsets[1:])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    return types, offsets, data


def decode_text_keys(types: np.ndarray, offsets: np.ndarray, data: np.ndarray, where: str) -> np.ndarray:
    """Inverse of :func:`encode_text_keys`: an object array of str / int keys."""
    n = types.shape[0]
    if n and types.max() > 1:
        _fail(where, f"key_types: value {int(types.max())} (expected 0 for str, 1 for int)")
    blob = data.tobytes()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(where, f"key_bytes: invalid UTF-8 at byte {exc.start}")
    bounds = offsets.tolist()
    if len(text) == len(blob):  # ASCII: byte offsets are character offsets
        parts = [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    else:
        try:
            parts = [blob[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]
        except UnicodeDecodeError:
            _fail(where, "key_offsets: an offset splits a UTF-8 character")
    out = np.empty(n, dtype=object)
    for i in np.flatnonzero(types).tolist():
        p = parts[i]
        if len(p) > MAX_INT_KEY_DIGITS + p.startswith("-") or not _DECIMAL.fullmatch(p):  # the index's bound (and int()'s)
            _fail(where, f"key_bytes: int key {i} is not a decimal integer ({p[:40]!r})")
        parts[i] = int(p)
    out[:] = parts
    return out


def check_text_offsets(offsets: np.ndarray, n: int, where: str) -> int:
    """Validate ``key_offsets`` (n + 1 non-decreasing values from 0); returns the byte count."""
    if offsets.shape[0] != n + 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
        _fail(where, "key_offsets: not non-decreasing offsets starting at 0")
    return int(offsets[-1])


def check_keys(keys: np.ndarray, where: str) -> None:
    """No key appears twice and no int key is negative (int64 or object array)."""
    problem = stored_key_problem(keys)
    if problem:
        _fail(where, f"keys: {problem}")
