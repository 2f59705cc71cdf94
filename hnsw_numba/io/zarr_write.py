"""Writing a Zarr v3 hierarchy of checksummed arrays (see :mod:`hnsw_numba.io.zarr_io`).

Local directories get their chunk files written directly (raw little-endian bytes plus
their CRC-32C); other stores go through zarr-python. Every array records its digest
(:mod:`hnsw_numba.io.chunks`).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.storage import MemoryStore, ZipStore

from . import swap
from .chunks import BLOCK, DIGEST_ATTR, Crc, bound_attrs, chunk_crcs, digest
from .localfiles import walk
from .swap import Target
from .places import check_place, through_link
from .read_faults import thread_refused
from ..core.errors import HnswError, IndexFormatError, InvalidParameterError, PersistError, persist_error, persist_errors
from ..core.validate import check_flag

__all__ = ["open_writer", "Writer", "DEFAULT_CHUNK_ROWS"]

#: Rows per chunk on stores other than a local directory (where one chunk per array
#: keeps the vectors memory-mappable).
DEFAULT_CHUNK_ROWS = 65536


class Writer:
    """Writes groups and checksummed arrays into one Zarr hierarchy.

    Into a local directory (``local_root``) every file is written from the calling
    thread: chunk files as they come, the metadata documents (which zarr-python keeps in
    memory meanwhile) by :meth:`write_metadata`. zarr-python writes them from worker
    threads that go on after the first one fails: a failed save's cleanup would race them,
    and they would recreate its temporary copy.
    """

    def __init__(self, store: Store | None, local_root: Path | None, chunk_rows: int | None, attrs: dict | None = None,
                 root_bind: dict | None = None):
        self.local_root = local_root
        self.chunk_rows = chunk_rows
        self._docs: dict = {}  # metadata documents of a local hierarchy: key -> zarr Buffer
        if local_root is not None:
            store = MemoryStore(self._docs)
        # group path -> the attributes its arrays' digests cover (the root's may come last)
        self.bound = {"": bound_attrs(root_bind if root_bind is not None else attrs)}
        # mode "w" empties the store; attributes given here are written with the group
        self.root = zarr.open_group(store, mode="w", zarr_format=3, attributes=attrs)
        swap.checkpoint("write: root group")

    def group(self, path: str, attrs: dict) -> None:
        self.root.create_group(path, attributes=attrs)
        self.bound[path] = bound_attrs(attrs)
        swap.checkpoint(f"write: group {path}")

    def write_metadata(self) -> None:
        """Write the metadata documents of a local hierarchy (after its chunk files)."""
        for key in sorted(self._docs):
            fpath = self.local_root / key
            fpath.parent.mkdir(parents=True, exist_ok=True)
            with open(fpath, "wb") as f:
                f.write(self._docs[key].to_bytes())
            swap.checkpoint(f"write: {key}")

    def set_root_attrs(self, attrs: dict) -> None:
        self.root.update_attributes(attrs)
        swap.checkpoint("write: root attributes")

    def array(self, path: str, data: np.ndarray, *, rows: int | None = None, scale: int = 1, attrs: dict | None = None) -> None:
        """Write ``data`` chunked along axis 0.

        ``rows`` per chunk, by default the writer's ``chunk_rows`` times ``scale`` (or one
        chunk when ``chunk_rows`` is None).
        """
        data = np.ascontiguousarray(data)
        if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and not np.little_endian):
            data = data.astype(data.dtype.newbyteorder("<"))  # the files are little endian
        n = data.shape[0]
        if rows is None:
            rows = self.chunk_rows * scale if self.chunk_rows is not None else n
        rows = max(1, min(int(rows), n))
        attrs = dict(attrs or {})
        group = self.bound.get(path.rpartition("/")[0], "")
        if self.local_root is None or n == 0:  # the local path sums the chunks as it writes them
            attrs[DIGEST_ATTR] = digest(path, data.dtype, data.shape, chunk_crcs(data, rows), group)
        arr = self.root.create_array(
            path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(rows,) + data.shape[1:],
            serializer=BytesCodec(),
            compressors=[Crc32cCodec()],
            filters=[],
            fill_value=0,
            attributes=attrs,
            config={"write_empty_chunks": True},
        )
        swap.checkpoint(f"write: {path}/zarr.json")
        if n == 0:
            return
        if self.local_root is not None:
            crcs = self._chunks_local(path, data, rows)
            arr.update_attributes({DIGEST_ATTR: digest(path, data.dtype, data.shape, crcs, group)})
            swap.checkpoint(f"write: {path} digest")
        else:
            for i, r0 in enumerate(range(0, n, rows)):
                arr[r0 : r0 + rows] = data[r0 : r0 + rows]
                swap.checkpoint(f"write: {path} chunk {i}")

    def _chunks_local(self, path: str, data: np.ndarray, rows: int) -> list[int]:
        """Write the chunk files of ``data``; returns their CRC-32C values in order."""
        crcs = []
        buf = data.reshape(-1).view(np.uint8)
        step = rows * (data.nbytes // data.shape[0])
        tail = ("0",) * (data.ndim - 1)
        base = self.local_root / path / "c"
        for i, b0 in enumerate(range(0, buf.shape[0], step)):
            b1 = min(b0 + step, buf.shape[0])
            fpath = base.joinpath(str(i), *tail)
            fpath.parent.mkdir(parents=True, exist_ok=True)
            pad = step - (b1 - b0)  # Zarr stores edge chunks at full size
            pieces = [buf[off : min(off + BLOCK, b1)] for off in range(b0, b1, BLOCK)]
            if pad:
                pieces.append(np.zeros(pad, np.uint8))
            with open(fpath, "wb") as f, Crc() as crc:
                for piece in pieces:
                    crc.add(piece)
                    f.write(piece)
                crcs.append(crc.result())
                f.write(struct.pack("<I", crcs[-1]))
            swap.checkpoint(f"write: {path} chunk {i}")
        return crcs


@contextlib.contextmanager
def open_writer(target: Target, *, chunk_rows: int | None, root_attrs: dict, fsync: bool,
                check: Callable[[Target], None] | None = None, replace: bool = True) -> Iterator[Writer]:
    """A :class:`Writer` whose hierarchy replaces ``target`` only if the body completes
    (``replace`` False: only creates a local ``target``, see :func:`swap.put_new`).

    Local directories and ``.zip`` paths are written to a temporary sibling, flushed,
    loaded back by ``check`` (the checks of a load: a copy that does not load never
    replaces the previous save; IndexFormatError, or PersistError when the OS fails to
    read it back) and swapped in (see :func:`swap.swap_in`).
    Other stores are written in place: the root group's ``hnsw_numba`` attribute is written
    last, so an interrupted save reads as incomplete (a ``ZipStore`` only becomes readable
    when closed anyway). An OS error (disk full, I/O error, no permission) raises
    :class:`PersistError` with its errno and built-in subclass.
    """
    check_flag("fsync", fsync)
    if target.kind in ("dir", "zip"):
        path = through_link(target.path)
        check_place(path, directory=target.kind == "dir", kind=root_attrs.get("hnsw_numba", {}).get("kind"))
        with persist_errors(f"cannot save {path} (the previous save is kept)"), _refused_threads(f"cannot save {path} (the previous save is kept)"):
            swap.recover(path)
            tmp = tmp_dir = None
            try:  # names taken inside: a Ctrl-C between taking one and the try would leak its lock file and descriptor
                tmp = swap.tmp_sibling(path)
                tmp_dir = tmp if target.kind == "dir" else swap.tmp_sibling(path, ".d")
                writer = Writer(None, tmp_dir, chunk_rows, root_attrs)
                yield writer
                writer.write_metadata()
                if target.kind == "zip":
                    _zip_dir(tmp_dir, tmp)
                    swap.remove(tmp_dir)  # Ctrl-C held there
                if check is not None:
                    try:
                        check(Target(target.kind, tmp))
                    except PersistError as exc:  # the OS failed to read the copy back: not a format error
                        raise persist_error(exc, f"cannot save {path}: reading the new copy back failed, "
                                                 "the previous save is kept") from exc
                    except HnswError as exc:
                        raise IndexFormatError(f"{path}: the new copy does not load, the previous save is kept: {exc}") from exc
                if fsync:
                    swap.fsync_tree(tmp)
                    swap.checkpoint("write: flushed")
                swap.swap_in(tmp, path, replace=replace)
                swap.remove(tmp)  # its name: in the try, so that a Ctrl-C at the removal's start is an error handled below
            except BaseException:  # only after an error: a clean-up a save's own end ran could lose its start to a Ctrl-C
                try:
                    if tmp is not None:
                        swap.remove(tmp)  # Ctrl-C held there
                finally:
                    if tmp_dir is not None and tmp_dir != tmp:
                        swap.remove(tmp_dir)
                raise
        return
    store = target.store
    what = f"cannot save to {store} (written in place: a save cut short there does not load)"
    with persist_errors(what), _refused_threads(what):
        if isinstance(store, ZipStore):
            if not _store_empty(store):
                raise InvalidParameterError(
                    "zip entries cannot be replaced: save into an empty ZipStore, or to a '.zip' path "
                    "(written to a temporary file and swapped in)"
                )
            yield Writer(store, None, chunk_rows or DEFAULT_CHUNK_ROWS, root_attrs)  # written once: no duplicate entry
            return
        writer = Writer(store, None, chunk_rows or DEFAULT_CHUNK_ROWS, root_bind=root_attrs)
        yield writer
        writer.set_root_attrs(root_attrs)  # the completion marker


@contextlib.contextmanager
def _refused_threads(what: str) -> Iterator[None]:
    """A thread the OS refuses (zarr's I/O thread; memory or process limits) as PersistError:
    a bare RuntimeError otherwise, and zarr's unstarted loop hung the process's next save."""
    try:
        yield
    except RuntimeError as exc:
        refused = thread_refused(exc)
        if refused is None:
            raise
        raise persist_error(refused, what) from exc


def _store_empty(store: Store) -> bool:
    from zarr.core.sync import sync

    if not store._is_open:
        sync(store._open())
    return sync(store.is_empty(""))


def _zip_dir(src: Path, dest: Path) -> None:
    """Pack a written directory into an uncompressed zip (what ZipStore reads); a directory
    the OS cannot list (too many open files) raises its OSError, not a zip without it."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for dirpath, dirs, files in walk(src):
            dirs.sort()
            for name in sorted(files):
                full = Path(dirpath) / name
                zf.write(full, full.relative_to(src).as_posix())
    swap.checkpoint("write: zip packed")


