"""An hnswlib file's bytes: mapped read-only (the zero-copy view) or read into memory (a copy).

A caller's buffer is viewed only when no one can write its memory (bytes, a read-only
mapping): the loader's checks hold for the life of the index only if its bytes never
change. Any other buffer is copied once; a read-only view does not stop writes through
its writable base.

A mapping shares the file: one truncated or rewritten in place while mapped stops the
process with SIGBUS on the next read past its new end, which no Python code can catch.
Loads that copy the index therefore read the file instead, and refuse one that changes
size while it is read.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

from ..core.errors import InvalidParameterError, LegacyFormatError, persist_errors
from ..core.limits import check_allocation
from .localfiles import open_regular

__all__ = ["open_source", "map_file", "read_whole"]

_MADV_POPULATE_READ = 22 if hasattr(mmap, "MADV_HUGEPAGE") else None  # Linux value; no constant in Python 3.11


def open_source(source: Any, mapped: bool) -> tuple[np.ndarray, str]:
    """The file as a read-only, 8-byte aligned ``uint8`` array (a path mapped, or read when not ``mapped``;
    a caller's buffer viewed when its memory is immutable, else copied)."""
    ours = isinstance(source, (str, os.PathLike))
    if ours:
        where = os.fspath(source)
        if "\x00" in (where if isinstance(where, str) else os.fsdecode(where)):  # os.open raised a bare ValueError
            raise InvalidParameterError(f"{where!r}: a path cannot hold a NUL character")
        with persist_errors(f"cannot read {where}"), open_regular(where, lambda msg: _not_regular(msg)) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                buf = np.zeros(0, np.uint8)  # mmap refuses empty files
            elif mapped:
                buf = np.frombuffer(map_file(f.fileno()), np.uint8)
            else:
                buf = read_whole(f, size)
    elif isinstance(source, np.ndarray):
        where = f"<{type(source).__name__}>"
        arr = np.asarray(source)  # a memmap becomes a plain view
        if arr.dtype.hasobject or not arr.flags.c_contiguous:
            raise InvalidParameterError("source array must be C-contiguous numeric data (the raw file bytes)")
        buf = arr.reshape(-1).view(np.uint8)
    else:
        where = f"<{type(source).__name__}>"
        try:
            buf = np.frombuffer(source, np.uint8)
        except (TypeError, ValueError, BufferError) as exc:
            raise InvalidParameterError(
                f"source must be a path, bytes, a contiguous buffer or a NumPy array, got {type(source).__name__} ({exc})"
            ) from None
    if not ours and not _immutable(buf):
        check_allocation(buf.nbytes, f"{where}: a copy of the buffer")
        buf = buf.copy()  # its owner could write it after the checks, under the kernels
    buf = buf.view()
    buf.flags.writeable = False  # read-only views: one kernel type, and no writes into the file
    if buf.ctypes.data % 8:
        # a misaligned caller buffer (e.g. a sliced memoryview): float32 views need alignment
        buf = buf.copy()
        buf.flags.writeable = False
    return buf, where


def _immutable(obj: Any) -> bool:
    """Whether no one can write the memory under ``obj`` (an array or buffer): it ends in
    ``bytes`` or in a read-only ``mmap`` (the file's bytes change only as a path's
    mapping's do). A read-only array over writable memory, or one owning its data (its
    flag can be set back), is not."""
    while isinstance(obj, (np.ndarray, memoryview)):
        obj = obj.base if isinstance(obj, np.ndarray) else obj.obj
    if isinstance(obj, mmap.mmap):
        try:
            return memoryview(obj).readonly
        except ValueError:  # closed
            return False
    return isinstance(obj, bytes)


def read_whole(f: Any, size: int) -> np.ndarray:
    """The ``size`` bytes of the open file ``f`` read into memory; a file that changes size
    meanwhile (rewritten in place, as C++ hnswlib's ``saveIndex`` does) is refused."""
    buf = np.empty(size, np.uint8)
    view, got = memoryview(buf), 0
    while got < size:
        n = f.readinto(view[got : got + (64 << 20)])
        if not n:
            break
        got += n
    if got != size or f.read(1):
        raise LegacyFormatError(f"[file-size] the file changed size while it was read ({size} bytes, then {got}+): "
                                "written by another process meanwhile")
    return buf


def _not_regular(message: str) -> LegacyFormatError:
    err = LegacyFormatError(f"[regular-file] {message}")
    err.check = "regular-file"
    return err


def map_file(fd: int) -> mmap.mmap:
    """Map a file read-only, asking for huge pages, and fault it in at once.

    With 4 KiB pages a search over a large file misses the TLB often: on a 1M-element
    file, a mapping 18% on 2 MiB pages searched 7-13% slower than the materialized
    arrays, one 100% on 2 MiB pages 3-9% faster (benchmarks/results/legacy.md). Pages
    read into the page cache through a ``MADV_HUGEPAGE`` mapping come in 2 MiB folios
    and are then mapped as huge pages (in this process and later ones); a file already
    cached in small pages keeps them. Validation reads every page anyway, so populating
    the mapping up front (``MADV_POPULATE_READ``, Linux 5.14+) costs nothing extra.
    """
    mm = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    for advice in (getattr(mmap, "MADV_HUGEPAGE", None), _MADV_POPULATE_READ):
        if advice is not None:
            try:
                mm.madvise(advice)
            except (OSError, ValueError):  # unsupported by this kernel: only a hint
                pass
    return mm
