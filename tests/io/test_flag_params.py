"""The bool parameters of the file functions take a bool or a NumPy bool only: anything else
raises InvalidParameterError before a file is read or written (a string such as "false" is
truthy, and would turn a check off)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import hnsw_numba as hn

#: hnswlib's header: offset_level0, max_elements, count, size_per_element, label_offset, offset_data, ...
HEADER = struct.Struct("<QQQQQQiIQQQdQ")
NOT_BOOLS = ["false", "no", 1, 0.0]


@pytest.fixture
def hnswlib_file(tmp_path):
    x = np.random.default_rng(7).standard_normal((20, 8)).astype(np.float32)
    index = hn.Index(8, metric="l2", seed=0)
    index.add(x)
    path = tmp_path / "ok.bin"
    hn.save_hnswlib(path, *index.native)
    return path


def _with_nan(path, row: int):
    """A copy of the hnswlib file ``path`` whose vector ``row`` holds a NaN."""
    data = bytearray(path.read_bytes())
    _, _, _, size, _, offset_data = HEADER.unpack_from(data)[:6]
    struct.pack_into("<f", data, HEADER.size + row * size + offset_data, float("nan"))  # the rows follow the header
    out = path.with_name("nan.bin")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("value", NOT_BOOLS)
@pytest.mark.parametrize("name", ["writable", "allow_nonfinite", "mapped"])
def test_load_hnswlib_refuses_non_bool_flags(hnswlib_file, name, value) -> None:
    with pytest.raises(hn.InvalidParameterError, match=f"^{name} must be a bool"):
        hn.load_hnswlib("l2", 8, hnswlib_file, **{name: value})


def test_load_hnswlib_flags_take_bools_only(hnswlib_file) -> None:
    bad = _with_nan(hnswlib_file, 3)
    with pytest.raises(hn.LegacyFormatError, match="finite-vectors"):
        hn.load_hnswlib("l2", 8, bad)
    with pytest.raises(hn.InvalidParameterError):
        hn.load_hnswlib("l2", 8, bad, allow_nonfinite="false")
    index, _ = hn.load_hnswlib("l2", 8, bad, allow_nonfinite=np.True_)  # a NumPy bool is a bool
    assert len(index) == 20
    index, _ = hn.load_hnswlib("l2", 8, hnswlib_file, writable=np.True_, mapped=None)
    assert not index.read_only
    index, _ = hn.load_hnswlib("l2", 8, hnswlib_file, writable=np.False_, mapped=np.False_)
    assert index.read_only


@pytest.mark.parametrize("name", ["convert", "fsync"])
def test_save_hnswlib_refuses_non_bool_flags(hnswlib_file, tmp_path, name) -> None:
    index, store = hn.load_hnswlib("l2", 8, hnswlib_file)
    before = hnswlib_file.read_bytes()
    for value in NOT_BOOLS:
        with pytest.raises(hn.InvalidParameterError, match=f"^{name} must be a bool"):
            hn.save_hnswlib(tmp_path / "new.bin", index, store, **{name: value})
        with pytest.raises(hn.InvalidParameterError):
            hn.save_hnswlib(hnswlib_file, index, store, **{name: value})
    assert not (tmp_path / "new.bin").exists()
    assert hnswlib_file.read_bytes() == before


def test_vector_readers_refuse_non_bool_check_finite(tmp_path) -> None:
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(hn.VectorFileError, match="row 2"):
        hn.read_vectors(tmp_path / "x.npy")
    for value in NOT_BOOLS:
        with pytest.raises(hn.InvalidParameterError, match="^check_finite must be a bool"):
            hn.read_vectors(tmp_path / "x.npy", check_finite=value)
        with pytest.raises(hn.InvalidParameterError, match="^check_finite must be a bool"):
            next(hn.iter_vectors(tmp_path / "x.npy", 2, check_finite=value))
        src = hn.VectorSource(x)
        with pytest.raises(hn.InvalidParameterError, match="^check_finite must be a bool"):
            src.read(check_finite=value)
        with pytest.raises(hn.InvalidParameterError, match="^check_finite must be a bool"):
            next(src.batches(2, check_finite=value))
    assert np.isnan(hn.read_vectors(tmp_path / "x.npy", check_finite=np.False_)[2, 1])
