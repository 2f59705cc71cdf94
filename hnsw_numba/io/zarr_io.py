"""Zarr v3 plumbing for :mod:`hnsw_numba.io.persist`: checksummed arrays in and out.

Every array is written with the codec chain ``bytes`` (little endian) + ``crc32c``, so a
chunk file holds the chunk's raw little-endian bytes followed by their CRC-32C (Zarr pads
the last chunk of an axis to the full chunk shape). On a local directory this module
writes and reads those files itself (``readinto`` the destination array plus an
incremental CRC), because zarr-python's generic path costs several extra copies and runs
at a fraction of disk speed; any other store goes through zarr-python. Both paths produce
and accept the same bytes, and the reader refuses any other codec chain or dtype, so
loading never reaches a codec that could unpickle or execute anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.storage import LocalStore, ZipStore

from . import swap
from .swap import Target
from ..core.errors import HnswError, IndexFormatError, InvalidParameterError

__all__ = ["open_writer", "open_reader", "Writer", "Reader", "DEFAULT_CHUNK_ROWS"]

#: Rows per chunk on stores other than a local directory (where one chunk per array
#: keeps the vectors memory-mappable).
DEFAULT_CHUNK_ROWS = 65536
_BLOCK = 32 << 20  # bytes per read/write call: bounds temporaries, keeps the CRC in cache


def _format_error(what: str, exc: BaseException) -> IndexFormatError:
    return IndexFormatError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _as_format_error(what: str) -> Iterator[None]:
    """Turn zarr's and the OS's complaints about stored data into IndexFormatError."""
    try:
        yield
    except HnswError:
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # zarr raises ValueError, KeyError, TypeError, JSON errors...
        raise _format_error(what, exc) from exc


# ---------------------------------------------------------------------------- writing
class Writer:
    """Writes groups and checksummed arrays into one Zarr hierarchy."""

    def __init__(self, store: Store, local_root: Path | None, chunk_rows: int | None, attrs: dict | None = None):
        self.local_root = local_root
        self.chunk_rows = chunk_rows
        # mode "w" empties the store; attributes given here are written with the group
        self.root = zarr.open_group(store, mode="w", zarr_format=3, attributes=attrs)
        swap.checkpoint("write: root group")

    def group(self, path: str, attrs: dict) -> None:
        self.root.create_group(path, attributes=attrs)
        swap.checkpoint(f"write: group {path}")

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
        arr = self.root.create_array(
            path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(rows,) + data.shape[1:],
            serializer=BytesCodec(),
            compressors=[Crc32cCodec()],
            filters=[],
            fill_value=0,
            attributes=attrs or {},
            config={"write_empty_chunks": True},
        )
        swap.checkpoint(f"write: {path}/zarr.json")
        if n == 0:
            return
        if self.local_root is not None:
            self._chunks_local(path, data, rows)
        else:
            for i, r0 in enumerate(range(0, n, rows)):
                arr[r0 : r0 + rows] = data[r0 : r0 + rows]
                swap.checkpoint(f"write: {path} chunk {i}")

    def _chunks_local(self, path: str, data: np.ndarray, rows: int) -> None:
        buf = data.reshape(-1).view(np.uint8)
        step = rows * (data.nbytes // data.shape[0])
        tail = ("0",) * (data.ndim - 1)
        base = self.local_root / path / "c"
        for i, b0 in enumerate(range(0, buf.shape[0], step)):
            b1 = min(b0 + step, buf.shape[0])
            fpath = base.joinpath(str(i), *tail)
            fpath.parent.mkdir(parents=True, exist_ok=True)
            pad = step - (b1 - b0)  # Zarr stores edge chunks at full size
            pieces = [buf[off : min(off + _BLOCK, b1)] for off in range(b0, b1, _BLOCK)]
            if pad:
                pieces.append(np.zeros(pad, np.uint8))
            with open(fpath, "wb") as f, _Crc() as crc:
                for piece in pieces:
                    crc.add(piece)
                    f.write(piece)
                f.write(struct.pack("<I", crc.result()))
            swap.checkpoint(f"write: {path} chunk {i}")


class _Crc:
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

    def __enter__(self) -> "_Crc":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:  # on errors too: never leave the worker behind
            self._pool.shutdown(wait=True)


@contextlib.contextmanager
def open_writer(target: Target, *, chunk_rows: int | None, root_attrs: dict, fsync: bool,
                check: Callable[[Target], None] | None = None) -> Iterator[Writer]:
    """A :class:`Writer` whose hierarchy replaces ``target`` only if the body completes.

    Local directories and ``.zip`` paths are written to a temporary sibling, flushed,
    loaded back by ``check`` (the checks of a load: a copy that does not load never
    replaces the previous save; IndexFormatError) and swapped in (see :func:`swap.swap_in`). Other stores are written in place: the root
    group's ``hnsw_numba`` attribute is written last, so an interrupted save reads as
    incomplete (a ``ZipStore`` only becomes readable when closed anyway).
    """
    if target.kind in ("dir", "zip"):
        path = target.path
        parent = path.parent
        if not parent.is_dir():
            raise FileNotFoundError(f"directory {parent} does not exist")
        if target.kind == "dir" and path.exists() and not path.is_dir():
            raise InvalidParameterError(f"{path} exists and is not a directory")
        swap.recover(path)
        tmp = swap.tmp_sibling(path)
        tmp_dir = tmp if target.kind == "dir" else tmp.with_name(tmp.name + ".d")
        try:
            writer = Writer(LocalStore(tmp_dir), tmp_dir, chunk_rows, root_attrs)
            yield writer
            if target.kind == "zip":
                _zip_dir(tmp_dir, tmp)
                shutil.rmtree(tmp_dir)
            if check is not None:
                try:
                    check(Target(target.kind, tmp))
                except HnswError as exc:
                    raise IndexFormatError(f"{path}: the new copy does not load, the previous save is kept: {exc}") from exc
            if fsync:
                swap.fsync_tree(tmp)
                swap.checkpoint("write: flushed")
            swap.swap_in(tmp, path)
        finally:
            swap.remove(tmp)
            if tmp_dir != tmp:
                swap.remove(tmp_dir)
        return
    store = target.store
    if isinstance(store, ZipStore):
        if not _store_empty(store):
            raise InvalidParameterError(
                "zip entries cannot be replaced: save into an empty ZipStore, or to a '.zip' path "
                "(written to a temporary file and swapped in)"
            )
        yield Writer(store, None, chunk_rows or DEFAULT_CHUNK_ROWS, root_attrs)  # written once: no duplicate entry
        return
    writer = Writer(store, None, chunk_rows or DEFAULT_CHUNK_ROWS)
    yield writer
    writer.set_root_attrs(root_attrs)  # the completion marker


def _store_empty(store: Store) -> bool:
    from zarr.core.sync import sync

    if not store._is_open:
        sync(store._open())
    return sync(store.is_empty(""))


def _zip_dir(src: Path, dest: Path) -> None:
    """Pack a written directory into an uncompressed zip (what ZipStore reads)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for dirpath, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                full = Path(dirpath) / name
                zf.write(full, full.relative_to(src).as_posix())
    swap.checkpoint("write: zip packed")


# ---------------------------------------------------------------------------- reading
class Reader:
    """Reads and checks the arrays of one Zarr hierarchy written by :class:`Writer`."""

    def __init__(self, store: Store, local_root: Path | None, where: str):
        self.local_root = local_root
        self.where = where
        # A writable store without a read-only twin (ZipStore) is opened "r+": nothing here writes.
        mode = "r" if store.read_only or type(store).with_read_only is not Store.with_read_only else "r+"
        with _as_format_error(f"{where}: cannot open the Zarr group"):
            self.root = zarr.open_group(store, mode=mode, zarr_format=3)

    def attrs(self, path: str = "") -> dict:
        with _as_format_error(f"{self.where}: group {path or '/'}"):
            node = self.root if not path else self.root[path]
            if not isinstance(node, zarr.Group):
                raise IndexFormatError(f"{path} is not a group")
            return node.attrs.asdict()

    def has(self, path: str) -> bool:
        with _as_format_error(f"{self.where}: {path}"):
            return path in self.root

    def array(self, path: str, dtype: Any, shape: tuple[int, ...]) -> zarr.Array:
        """The array at ``path`` after checking codecs, dtype and shape against what we write."""
        what = f"{self.where}: array {path}"
        try:
            node = self.root[path]
        except KeyError:
            raise IndexFormatError(f"{what} is missing") from None
        except Exception as exc:
            raise _format_error(what, exc) from exc
        if not isinstance(node, zarr.Array):
            raise IndexFormatError(f"{what} is not an array")
        md = node.metadata
        codecs = getattr(md, "codecs", ())
        if (
            md.zarr_format != 3
            or len(codecs) != 2
            or not isinstance(codecs[0], BytesCodec)
            or not isinstance(codecs[1], Crc32cCodec)
            or (codecs[0].endian is not None and codecs[0].endian.value != "little")
            or getattr(md, "storage_transformers", ())
            or not isinstance(md.chunk_grid, RegularChunkGrid)
        ):
            raise IndexFormatError(f"{what}: unsupported encoding (expected bytes + crc32c codecs, regular chunks)")
        want = np.dtype(dtype)
        if node.dtype != want:
            raise IndexFormatError(f"{what}: dtype {node.dtype}, expected {want}")
        if tuple(node.shape) != tuple(shape):
            raise IndexFormatError(f"{what}: shape {tuple(node.shape)}, expected {tuple(shape)}")
        chunks = tuple(md.chunk_grid.chunk_shape)
        if chunks[1:] != tuple(shape[1:]) or chunks[0] > max(shape[0], 1):
            # we write whole-row chunks no longer than the array; anything else could make
            # zarr allocate a huge chunk buffer
            raise IndexFormatError(f"{what}: chunk shape {chunks} does not fit shape {tuple(shape)}")
        return node

    def _chunk_file(self, arr: zarr.Array, path: str, i: int) -> Path | None:
        """Local file of row chunk ``i`` when the fast path applies, else None."""
        md = arr.metadata
        if (
            self.local_root is None
            or not isinstance(md.chunk_key_encoding, DefaultChunkKeyEncoding)
            or md.chunk_key_encoding.separator != "/"
        ):
            return None
        return self.local_root.joinpath(path, "c", str(i), *(("0",) * (arr.ndim - 1)))

    def read_into(self, path: str, out: np.ndarray) -> None:
        """Fill the C-contiguous ``out`` (same dtype and shape as the checked array) from ``path``."""
        arr = self.array(path, out.dtype, out.shape)
        n = out.shape[0]
        if n == 0:
            return
        rows = int(arr.metadata.chunk_grid.chunk_shape[0])
        what = f"{self.where}: array {path}"
        if self._chunk_file(arr, path, 0) is None:
            with _as_format_error(what):
                expected = -(-n // rows)
                if arr.nchunks_initialized != expected:  # absent chunks would read as zeros
                    raise IndexFormatError(f"{what}: {expected - arr.nchunks_initialized} chunk(s) missing")
                for r0 in range(0, n, rows):
                    out[r0 : r0 + rows] = arr[r0 : r0 + rows]
            return
        buf = out.reshape(-1).view(np.uint8)
        step = rows * (out.nbytes // n)
        for i, b0 in enumerate(range(0, buf.shape[0], step)):
            self._read_chunk(self._chunk_file(arr, path, i), buf[b0 : min(b0 + step, buf.shape[0])], step, f"{what} chunk {i}")

    @staticmethod
    def _read_chunk(fpath: Path, dest: np.ndarray, step: int, what: str) -> None:
        try:
            f = open(fpath, "rb", buffering=0)
        except FileNotFoundError:
            raise IndexFormatError(f"{what}: file {fpath.name} is missing") from None
        except OSError as exc:
            raise _format_error(what, exc) from exc
        with f:
            size = os.fstat(f.fileno()).st_size
            if size != step + 4:
                raise IndexFormatError(f"{what}: file is {size} bytes, expected {step + 4} (truncated or corrupt)")
            with _Crc() as crc:
                for off in range(0, dest.shape[0], _BLOCK):
                    piece = dest[off : off + _BLOCK]
                    got, want = 0, piece.shape[0]
                    while got < want:
                        r = f.readinto(piece[got:])
                        if not r:
                            raise IndexFormatError(f"{what}: file shrank while being read")
                        got += r
                    crc.add(piece)
                pad = step - dest.shape[0]
                if pad:
                    crc.add(f.read(pad))
                stored = f.read(4)
                value = crc.result()
        if len(stored) != 4 or struct.unpack("<I", stored)[0] != value:
            raise IndexFormatError(f"{what}: CRC-32C checksum mismatch (corrupt data)")

    def mmap(self, path: str, dtype: Any, shape: tuple[int, ...], verify: bool) -> np.ndarray:
        """Map a single-chunk array copy-on-write (mode ``"c"``); ``verify`` checks its CRC."""
        arr = self.array(path, dtype, shape)
        n = shape[0]
        rows = int(arr.metadata.chunk_grid.chunk_shape[0])
        fpath = self._chunk_file(arr, path, 0)
        if fpath is None or rows < n:
            raise InvalidParameterError(
                f"mmap needs {path} in one chunk of a local directory (save with chunk_rows=None "
                "to a local path), or load without mmap"
            )
        what = f"{self.where}: array {path}"
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        step = rows * row_bytes
        try:
            size = fpath.stat().st_size
        except FileNotFoundError:
            raise IndexFormatError(f"{what}: chunk file is missing") from None
        if size != step + 4:
            raise IndexFormatError(f"{what}: file is {size} bytes, expected {step + 4} (truncated or corrupt)")
        raw = np.memmap(fpath, dtype=np.uint8, mode="c", shape=(size,))
        if verify:
            crc = 0
            for off in range(0, step, _BLOCK):
                crc = google_crc32c.extend(crc, raw[off : min(off + _BLOCK, step)])
            if struct.unpack("<I", bytes(raw[step:]))[0] != crc:
                raise IndexFormatError(f"{what}: CRC-32C checksum mismatch (corrupt data)")
        return raw[: n * row_bytes].view(dtype).reshape(shape)


@contextlib.contextmanager
def open_reader(target: Target) -> Iterator[Reader]:
    """A :class:`Reader` over ``target`` (closing any store opened here)."""
    if target.kind in ("dir", "zip"):
        swap.clean_leftovers(target.path)
    if target.kind == "dir":
        root = swap.local_dir_for_read(target.path)
        yield Reader(LocalStore(root, read_only=True), root, str(target.path))
        return
    if target.kind == "zip":
        if not target.path.is_file():
            raise FileNotFoundError(f"no saved index at {target.path}")
        with _as_format_error(f"{target.path}: cannot open the zip file"):
            store = ZipStore(target.path, mode="r")
        try:
            yield Reader(store, None, str(target.path))
        finally:
            store.close()
        return
    yield Reader(target.store, None, str(target.store))
