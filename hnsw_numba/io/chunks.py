"""Checksums of saved arrays: the running CRC-32C of chunk files, and per-array digests.

Every chunk file ends with the CRC-32C of its bytes, which proves the chunk intact but
not that it belongs where it lies: a chunk copied over another array's chunk of the same
size carries a valid CRC. Each array therefore also records a digest (attribute
``hnsw_numba_digest``, from format version 2): the CRC-32C of its path in the hierarchy,
dtype, shape and its group's ``hnsw_numba`` attribute (less the library version),
followed by the CRC-32C of every chunk in order. A chunk moved between arrays, chunk
positions or saves, or an edited metric or configuration, changes the digest.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import google_crc32c
import numpy as np

__all__ = ["BLOCK", "DIGEST_ATTR", "Crc", "bound_attrs", "digest", "chunk_crcs"]

BLOCK = 32 << 20  # bytes per read/write call: bounds temporaries, keeps the CRC in cache
#: Array attribute holding the digest (8 hex digits).
DIGEST_ATTR = "hnsw_numba_digest"


def bound_attrs(attrs: Any) -> str:
    """The part of a group's attributes its arrays' digests cover: the ``hnsw_numba``
    attribute (metric, config, key encoding, store kind...) without ``library_version``,
    as canonical JSON; "" for none."""
    info = attrs.get("hnsw_numba") if isinstance(attrs, dict) else None
    if not isinstance(info, dict):
        return ""
    info = {k: v for k, v in info.items() if k != "library_version"}
    return json.dumps(info, sort_keys=True, separators=(",", ":"), allow_nan=True)


def digest(path: str, dtype: Any, shape: tuple[int, ...], crcs: Iterable[int], group: str = "") -> str:
    """The digest of an array at ``path`` whose chunks have the CRC-32C values ``crcs``;
    ``group`` is :func:`bound_attrs` of the group holding it."""
    seed = f"{path}|{np.dtype(dtype).str}|{tuple(int(x) for x in shape)}|{group}".encode()
    value = google_crc32c.value(seed)
    value = google_crc32c.extend(value, np.asarray(list(crcs), "<u4").tobytes())
    return f"{value:08x}"


def chunk_crcs(data: np.ndarray, rows: int) -> list[int]:
    """CRC-32C of each row chunk of C-contiguous ``data`` as stored (the last one zero-padded)."""
    n = data.shape[0]
    if n == 0:
        return []
    buf = data.reshape(-1).view(np.uint8)
    step = rows * (data.nbytes // n)
    out = []
    for b0 in range(0, buf.shape[0], step):
        b1 = min(b0 + step, buf.shape[0])
        value = 0
        for off in range(b0, b1, BLOCK):
            value = google_crc32c.extend(value, buf[off : min(off + BLOCK, b1)])
        if step - (b1 - b0):
            value = google_crc32c.extend(value, bytes(step - (b1 - b0)))
        out.append(value)
    return out


class Crc:
    """Running CRC-32C of a byte stream.

    google_crc32c holds the GIL while file reads and writes release it, so big pieces are
    summed in a helper thread (in order: one worker) while the caller does the I/O.
    """

    def __init__(self) -> None:
        self.value = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list = []

    def add(self, piece: Any) -> None:
        if self._pool is None and len(piece) < (4 << 20):
            self.value = google_crc32c.extend(self.value, piece)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hnsw-crc")
        self._pending.append(self._pool.submit(self._extend, piece))

    def _extend(self, piece: Any) -> None:
        self.value = google_crc32c.extend(self.value, piece)

    def result(self) -> int:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            for fut in self._pending:
                fut.result()
            self._pool, self._pending = None, []
        return self.value

    def __enter__(self) -> "Crc":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:  # on errors too: never leave the worker behind
            self._pool.shutdown(wait=True)


