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
import errno
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.storage import LocalStore, ZipStore

from . import swap
from .chunks import BLOCK, DIGEST_ATTR, Crc, bound_attrs, chunk_crcs, digest
from .swap import Target
from .localfiles import check_regular_tree, open_regular
from .read_faults import read_error, thread_refused  # the stored tree is wrong (IndexFormatError), or the read failed (PersistError)
from .zarr_write import DEFAULT_CHUNK_ROWS, Writer, open_writer
from ..core.errors import HnswError, IndexFormatError, InvalidParameterError, PersistFileNotFoundError, backend_error, is_backend_error, persist_errors

__all__ = ["open_writer", "open_reader", "Writer", "Reader", "DEFAULT_CHUNK_ROWS"]


#: Bytes a zarr.json of a saved index can hold (a few kilobytes in practice).
MAX_METADATA_BYTES = 16 << 20


def _format_error(what: str, exc: BaseException) -> HnswError:
    """Zarr's complaint about stored data as IndexFormatError; a remote filesystem's own error
    (:func:`~hnsw_numba.core.errors.is_backend_error`: the storage failed, not the data) as
    PersistError."""
    if is_backend_error(exc):
        return backend_error(exc, f"{what}: cannot read")
    refused = thread_refused(exc)
    if refused is not None:  # the OS refused zarr's I/O thread: a good copy may be there
        return read_error(what, refused)
    return IndexFormatError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _as_format_error(what: str) -> Iterator[None]:
    """Turn zarr's complaints about stored data into IndexFormatError, the OS's read faults into PersistError."""
    try:
        yield
    except HnswError:
        raise
    except MemoryError:
        raise
    except RecursionError:  # JSON metadata nested beyond the parser's depth
        raise IndexFormatError(f"{what}: metadata nested too deeply") from None
    except OSError as exc:
        raise read_error(what, exc) from exc
    except Exception as exc:  # zarr raises ValueError, KeyError, TypeError, JSON errors...
        fault = exc.__cause__ or exc.__context__
        if isinstance(fault, OSError):  # zipfile reports a failed read as a bad zip file
            raise read_error(what, fault) from exc
        raise _format_error(what, exc) from exc


# ---------------------------------------------------------------------------- reading
def _read_exact(f: Any, n: int) -> bytes:
    """``n`` bytes of ``f`` (fewer only at its end): a read may return fewer than it asked
    for (FUSE, NFS, a signal), which would read as a bad checksum."""
    out = b""
    while len(out) < n:
        part = f.read(n - len(out))
        if not part:
            break
        out += part
    return out


class Reader:
    """Reads and checks the arrays of one Zarr hierarchy written by :class:`Writer`."""

    def __init__(self, store: Store, local_root: Path | None, where: str):
        self.local_root = local_root
        self.where = where
        #: Every array must carry its digest (format version 2 and later; set by format.group_info)
        self.require_digest = False
        self._bound: dict[str, str] = {}  # group path -> bound_attrs of its attributes
        #: Declared (uncompressed) sizes of a zip file's entries; None for other stores
        self.entry_sizes: dict[str, int] | None = None
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
        except OSError as exc:
            raise read_error(what, exc) from exc
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
        if chunks[1:] != tuple(shape[1:]) or not 1 <= chunks[0] <= max(shape[0], 1):
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
            self._check_digest(arr, path, out.dtype, out.shape, [])
            return
        rows = int(arr.metadata.chunk_grid.chunk_shape[0])
        what = f"{self.where}: array {path}"
        if self._chunk_file(arr, path, 0) is None:
            if self.entry_sizes is not None:
                self._check_entry_sizes(arr, path, -(-n // rows), rows * (out.nbytes // n) + 4, what)
            with _as_format_error(what):
                expected = -(-n // rows)
                if arr.nchunks_initialized != expected:  # absent chunks would read as zeros
                    raise IndexFormatError(f"{what}: {expected - arr.nchunks_initialized} chunk(s) missing")
                for r0 in range(0, n, rows):
                    out[r0 : r0 + rows] = arr[r0 : r0 + rows]
            self._check_digest(arr, path, out.dtype, out.shape, chunk_crcs(out, rows))
            return
        buf = out.reshape(-1).view(np.uint8)
        step = rows * (out.nbytes // n)
        crcs = [self._read_chunk(self._chunk_file(arr, path, i), buf[b0 : min(b0 + step, buf.shape[0])], step, f"{what} chunk {i}")
                for i, b0 in enumerate(range(0, buf.shape[0], step))]
        self._check_digest(arr, path, out.dtype, out.shape, crcs)

    def check_stored(self, path: str, dtype: Any, shape: tuple[int, ...]) -> None:
        """Check ``path`` against ``dtype`` and ``shape`` and, where sizes are known without
        reading (a local directory's chunk files, a zip file's entries), that every chunk
        is stored at its full size, up to the first one that is not.

        A loader calls it before allocating for sizes a header declares, so that a small
        file claiming many rows fails before the room for them is made.
        """
        arr = self.array(path, dtype, shape)
        n = shape[0]
        if n == 0:
            return
        rows = int(arr.metadata.chunk_grid.chunk_shape[0])
        size = rows * int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize + 4
        what = f"{self.where}: array {path}"
        if self._chunk_file(arr, path, 0) is None:
            if self.entry_sizes is not None:
                self._check_entry_sizes(arr, path, -(-n // rows), size, what, missing=True)
            return
        for i in range(-(-n // rows)):
            fpath = self._chunk_file(arr, path, i)
            try:
                stored = os.stat(fpath).st_size
            except FileNotFoundError:
                raise IndexFormatError(f"{what} chunk {i}: file {fpath.name} is missing") from None
            except OSError as exc:
                raise read_error(what, exc) from exc
            if stored != size:
                raise IndexFormatError(f"{what} chunk {i}: file is {stored} bytes, expected {size} (truncated or corrupt)")

    def _check_entry_sizes(self, arr: zarr.Array, path: str, chunks: int, size: int, what: str, missing: bool = False) -> None:
        """Every chunk entry of a zip file declares a chunk's size (its bytes and CRC).

        zarr reads an entry whole before its checksum is checked, so a deflated entry of a
        few hundred kilobytes declaring gigabytes would be inflated first. A missing entry
        is left to the count of initialised chunks, or refused with ``missing``.
        """
        md = arr.metadata
        for i in range(chunks):
            key = md.encode_chunk_key((i,) + (0,) * (arr.ndim - 1))
            key = f"{path}/{key}" if path else key
            declared = self.entry_sizes.get(key)
            if declared is None and missing:
                raise IndexFormatError(f"{what} chunk {i}: zip entry {key} is missing")
            if declared is not None and declared != size:
                raise IndexFormatError(f"{what} chunk {i}: zip entry of {declared} bytes, expected {size}")

    def _check_digest(self, arr: zarr.Array, path: str, dtype: Any, shape: tuple, crcs: list[int]) -> None:
        """Check the array's recorded digest against its chunks' CRCs (binds chunks to the array)."""
        what = f"{self.where}: array {path}"
        with _as_format_error(what):
            want = arr.attrs.get(DIGEST_ATTR)
        if want is None and not self.require_digest:
            return  # format version 1: chunk CRCs only
        group = path.rpartition("/")[0]
        if group not in self._bound:
            self._bound[group] = bound_attrs(self.attrs(group))
        if want != digest(path, dtype, shape, crcs, self._bound[group]):
            raise IndexFormatError(f"{what}: digest mismatch (a chunk from another array, position or save)")

    @staticmethod
    def _read_chunk(fpath: Path, dest: np.ndarray, step: int, what: str) -> int:
        """Read one chunk file into ``dest``; returns its (verified) CRC-32C."""
        try:
            with open_regular(fpath, lambda msg: IndexFormatError(f"{what}: {msg}")) as f:
                size = os.fstat(f.fileno()).st_size
                if size != step + 4:
                    raise IndexFormatError(f"{what}: file is {size} bytes, expected {step + 4} (truncated or corrupt)")
                with Crc() as crc:
                    for off in range(0, dest.shape[0], BLOCK):
                        piece = dest[off : off + BLOCK]
                        got, want = 0, piece.shape[0]
                        while got < want:
                            r = f.readinto(piece[got:])
                            if not r:
                                raise IndexFormatError(f"{what}: file shrank while being read")
                            got += r
                        crc.add(piece)
                    pad = step - dest.shape[0]
                    if pad:
                        crc.add(_read_exact(f, pad))
                    stored = _read_exact(f, 4)
                    value = crc.result()
        except FileNotFoundError:
            raise IndexFormatError(f"{what}: file {fpath.name} is missing") from None
        except OSError as exc:
            raise read_error(what, exc) from exc
        if len(stored) != 4 or struct.unpack("<I", stored)[0] != value:
            raise IndexFormatError(f"{what}: CRC-32C checksum mismatch (corrupt data)")
        return value

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
            with open_regular(fpath, lambda msg: IndexFormatError(f"{what}: {msg}")) as f:
                size = os.fstat(f.fileno()).st_size
                if size != step + 4:
                    raise IndexFormatError(f"{what}: file is {size} bytes, expected {step + 4} (truncated or corrupt)")
                # the file whose size was checked: mapped by path, a save swapping the directory
                # in between gives another file (shorter: ValueError past its end)
                raw = np.memmap(f, dtype=np.uint8, mode="c", shape=(size,))
        except FileNotFoundError:
            raise IndexFormatError(f"{what}: chunk file is missing") from None
        except OSError as exc:
            raise read_error(what, exc) from exc
        if verify:
            crc = 0
            for off in range(0, step, BLOCK):
                crc = google_crc32c.extend(crc, raw[off : min(off + BLOCK, step)])
            if struct.unpack("<I", bytes(raw[step:]))[0] != crc:
                raise IndexFormatError(f"{what}: CRC-32C checksum mismatch (corrupt data)")
            self._check_digest(arr, path, dtype, shape, [crc])
        return raw[: n * row_bytes].view(dtype).reshape(shape)


@contextlib.contextmanager
def open_reader(target: Target) -> Iterator[Reader]:
    """A :class:`Reader` over ``target`` (closing any store opened here)."""
    if target.kind in ("dir", "zip"):
        swap.clean_leftovers(target.path)
    if target.kind == "dir":
        root = swap.local_dir_for_read(target.path)
        if not (root / "zarr.json").is_file():  # no save: refused before a walk of what may be a large tree
            raise IndexFormatError(f"{target.path}: no saved index there (no zarr.json)")
        with _as_format_error(str(target.path)):
            check_regular_tree(root, lambda msg: IndexFormatError(f"{target.path}: {msg}"))
        yield Reader(LocalStore(root, read_only=True), root, str(target.path))
        return
    if target.kind == "zip":
        with persist_errors(f"cannot open {target.path}"):  # a name too long, a loop of links
            is_file = target.path.is_file()
        if not is_file:
            raise PersistFileNotFoundError(errno.ENOENT, "no saved index", str(target.path))
        with _as_format_error(f"{target.path}: cannot open the zip file"):
            sizes = _zip_entry_sizes(target.path)
            store = ZipStore(target.path, mode="r")
        try:
            reader = Reader(store, None, str(target.path))
            reader.entry_sizes = sizes
            yield reader
        finally:
            try:
                store.close()
            except AttributeError:  # a ZipStore whose open failed has no file to close: the open's error propagates
                pass
        return
    store = target.store
    sizes = None
    if isinstance(store, ZipStore) and store.read_only:  # the same size checks as for a .zip path
        with _as_format_error(f"{store.path}: cannot open the zip file"):
            sizes = _zip_entry_sizes(Path(store.path))
    reader = Reader(store, None, str(store))
    reader.entry_sizes = sizes
    yield reader


def _zip_entry_sizes(path: Path) -> dict[str, int]:
    """The declared (uncompressed) size of each entry of the zip file ``path``, read from its
    directory; IndexFormatError for a metadata entry above ``MAX_METADATA_BYTES`` (zarr
    reads metadata whole: a deflated entry could declare gigabytes)."""
    with zipfile.ZipFile(path) as zf:
        sizes = {info.filename: info.file_size for info in zf.infolist()}
    big = next((name for name, size in sizes.items() if name.endswith("zarr.json") and size > MAX_METADATA_BYTES), None)
    if big is not None:
        raise IndexFormatError(f"{path}: {big} declares {sizes[big]:,} bytes, more than metadata can hold")
    return sizes
