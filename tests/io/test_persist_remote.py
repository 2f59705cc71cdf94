"""Saves and loads through fsspec URLs when the filesystem's client library fails with its own
error types (an expired token, a throttled request): a PersistError (an OSError), the
backend's error kept as the cause; data Zarr cannot read stays an IndexFormatError."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.errors import is_backend_error

fsspec = pytest.importorskip("fsspec")
from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402


class TokenExpired(Exception):
    """A client library's own error type (neither OSError nor a built-in)."""


class Flaky(MemoryFileSystem):
    """An in-memory filesystem whose reads or writes of chosen keys fail with TokenExpired."""

    protocol = "flakyzarr"
    store: dict = {}
    pseudo_dirs = [""]
    fail: tuple = ("", "")  # (read|write, a substring of the keys that fail)

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(path.replace("flakyzarr://", "memory://", 1))

    def cat_file(self, path, *a, **kw):
        if Flaky.fail[0] == "read" and Flaky.fail[1] in path:
            raise TokenExpired("the access token expired")
        return super().cat_file(path, *a, **kw)

    def pipe_file(self, path, *a, **kw):
        if Flaky.fail[0] == "write" and Flaky.fail[1] in path:
            raise TokenExpired("the access token expired")
        return super().pipe_file(path, *a, **kw)


@pytest.fixture()
def flaky():
    fsspec.register_implementation("flakyzarr", Flaky, clobber=True)
    Flaky.fail = ("", "")
    yield Flaky
    Flaky.fail = ("", "")
    Flaky.store.clear()


def _index() -> tuple[hn.Hnsw, hn.InMemoryVectorStore, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=6, max_nodes=40, m=4, ef_construction=20, seed=1))
    store = hn.InMemoryVectorStore(6, 40)
    idx.insert_batch(store, np.arange(40), x)
    return idx, store, x


@pytest.mark.parametrize("keys", ["zarr.json", "/c/"])  # the metadata, the chunks
def test_a_backends_own_error_in_a_load_is_a_persist_error(flaky, keys) -> None:
    idx, store, x = _index()
    hn.save("flakyzarr://ok/ix", idx, store)
    flaky.fail = ("read", keys)
    with pytest.raises(hn.PersistError, match=r"cannot read: TokenExpired: the access token expired") as e:
        hn.load("flakyzarr://ok/ix", hn.L2())
    assert isinstance(e.value, OSError) and not isinstance(e.value, hn.IndexFormatError)
    assert type(e.value.__cause__) is TokenExpired
    flaky.fail = ("", "")  # the copy was never at fault
    idx2, store2 = hn.load("flakyzarr://ok/ix", hn.L2())
    assert idx2.search(store2, x[3], 1)[0].key == 3


@pytest.mark.parametrize("keys", ["zarr.json", "/c/"])
def test_a_backends_own_error_in_a_save_is_a_persist_error(flaky, keys) -> None:
    idx, store, _ = _index()
    flaky.fail = ("write", keys)
    with pytest.raises(hn.PersistError, match=r"cannot save to .*TokenExpired: the access token expired") as e:
        hn.save("flakyzarr://w/ix", idx, store)
    assert isinstance(e.value, OSError) and type(e.value.__cause__) is TokenExpired


def test_data_zarr_cannot_read_is_still_a_format_error(flaky) -> None:
    idx, store, _ = _index()
    hn.save("flakyzarr://bad/ix", idx, store)
    fs = flaky()
    meta = json.loads(fs.cat_file("/bad/ix/zarr.json"))
    meta["zarr_format"] = "three"  # Zarr's own complaint (a built-in ValueError), not the storage's
    fs.pipe_file("/bad/ix/zarr.json", json.dumps(meta).encode())
    with pytest.raises(hn.IndexFormatError):
        hn.load("flakyzarr://bad/ix", hn.L2())


def test_which_errors_are_a_backends() -> None:
    import zarr.errors

    assert is_backend_error(TokenExpired("x"))
    for exc in (ValueError("x"), KeyError("x"), json.JSONDecodeError("x", "{", 0), OSError(5, "x"),
                zarr.errors.MetadataValidationError("x"), hn.IndexFormatError("x"), KeyboardInterrupt()):
        assert not is_backend_error(exc), type(exc)
