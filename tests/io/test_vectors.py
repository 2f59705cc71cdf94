"""Reading vectors: every format whole and in batches, bounded reads, bad files, missing packages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.io.vectors import VectorSource

N, DIM = 257, 6  # 257 rows: no batch size used below divides it
h5py = pytest.importorskip("h5py")
try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the Parquet cases skip; every other format still runs
    pa = pq = None
needs_arrow = pytest.mark.skipif(pa is None, reason="pyarrow not installed (pip install 'hnsw_numba[parquet]')")


def texmex(path: Path, rows: np.ndarray, dims: np.ndarray | None = None) -> None:
    """Write ``rows`` in the TEXMEX layout: per row an int32 dimension, then the values."""
    dims = np.full(rows.shape[0], rows.shape[1], np.int32) if dims is None else dims
    with open(path, "wb") as f:
        for d, r in zip(dims, rows):
            f.write(np.int32(d).tobytes() + r.tobytes())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    import zarr

    d = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    b = rng.integers(0, 256, (N, DIM)).astype(np.uint8)
    i = rng.integers(-1000, 1000, (N, DIM)).astype(np.int32)
    np.save(d / "x.npy", x)
    texmex(d / "x.fvecs", x)
    texmex(d / "x.bvecs", b)
    texmex(d / "x.ivecs", i)
    with h5py.File(d / "ann.hdf5", "w") as f:
        f["train"], f["test"] = x, x[:10]
        f.attrs["distance"] = "angular"
    zarr.save_array(str(d / "x.zarr"), x)
    zarr.open_group(str(d / "g.zarr"), mode="w").create_array("emb", data=x)
    if pa is None:
        return {"dir": d, "x": x, "b": b, "i": i}
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)
    pq.write_table(pa.table({"id": pa.array([f"doc{j}" for j in range(N)]), "emb": fixed}), d / "fixed.parquet", row_group_size=50)
    pq.write_table(pa.table({"emb": pa.array(list(x.astype(np.float64)))}), d / "list.parquet", row_group_size=64)
    pq.write_table(pa.table({f"c{j}": x[:, j] for j in range(DIM)}), d / "cols.parquet", row_group_size=100)
    return {"dir": d, "x": x, "b": b, "i": i}


FLOAT_SPECS = ["x.npy", "x.fvecs", "ann.hdf5:train", "x.zarr", "g.zarr:emb"] + [
    pytest.param(s, marks=needs_arrow) for s in ("fixed.parquet", "fixed.parquet:emb", "list.parquet", "cols.parquet")]


# ============================================================================ formats
@pytest.mark.parametrize("spec", FLOAT_SPECS)
def test_every_format_reads_the_array(files, spec) -> None:
    got = hn.read_vectors(files["dir"] / spec if ":" not in spec else f"{files['dir']}/{spec}")
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, files["x"])


@pytest.mark.parametrize("name,key", [("x.bvecs", "b"), ("x.ivecs", "i")])
def test_integer_texmex_files_keep_or_convert_their_type(files, name, key) -> None:
    raw = hn.read_vectors(files["dir"] / name, dtype=None)
    assert raw.dtype == files[key].dtype
    np.testing.assert_array_equal(raw, files[key])
    np.testing.assert_array_equal(hn.read_vectors(files["dir"] / name), files[key].astype(np.float32))


@needs_arrow
def test_dataset_keyword_equals_colon_spec(files) -> None:
    d = files["dir"]
    np.testing.assert_array_equal(hn.read_vectors(d / "ann.hdf5", dataset="test"), files["x"][:10])
    np.testing.assert_array_equal(hn.read_vectors(d / "cols.parquet", dataset=["c2", "c0"]), files["x"][:, [2, 0]])
    with hn.open_vectors(f"{d}/ann.hdf5:train") as src:
        assert (src.n, src.dim, src.metric_hint, src.dtype) == (N, DIM, "cosine", np.float32)


@pytest.mark.parametrize("spec", FLOAT_SPECS + ["x.bvecs"])
@pytest.mark.parametrize("size", [1, 7, 50, 256, 257, 1000])
def test_batches_equal_the_whole(files, spec, size) -> None:
    path = f"{files['dir']}/{spec}"
    whole = hn.read_vectors(path)
    batches = list(hn.iter_vectors(path, size))
    assert [b.shape[0] for b in batches] == [min(size, N - a) for a in range(0, N, size)]
    np.testing.assert_array_equal(np.concatenate(batches), whole)
    part = list(hn.iter_vectors(path, size, start=13, stop=200))
    np.testing.assert_array_equal(np.concatenate(part), whole[13:200])
    with hn.open_vectors(path) as src:
        np.testing.assert_array_equal(src.read(100, 163), whole[100:163])


def test_npy_is_memory_mapped_and_never_copied(files) -> None:
    got = hn.read_vectors(files["dir"] / "x.npy")
    assert not got.flags.writeable  # a view of the read-only map
    assert isinstance(got.base, np.memmap) or isinstance(getattr(got.base, "base", None), np.memmap)
    copy = hn.read_vectors(files["dir"] / "x.npy", dtype=np.float64)
    assert copy.flags.writeable and copy.dtype == np.float64


# ============================================================================ bounded reads
class Tracker:
    """An array-like that records the rows every read asks for."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.dtype, self.reads = x, x.shape, x.dtype, []

    def __getitem__(self, rows: slice) -> np.ndarray:
        self.reads.append(rows.stop - rows.start)
        return self.x[rows]


def test_batches_read_only_their_rows(files) -> None:
    t = Tracker(files["x"])
    src = VectorSource(t, "tracked")
    assert sum(b.shape[0] for b in src.batches(32)) == N
    assert max(t.reads) == 32 and sum(t.reads) == N


@needs_arrow
def test_parquet_decodes_each_row_group_once(files, monkeypatch) -> None:
    decoded: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        decoded.append(i)
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    batches = list(hn.iter_vectors(files["dir"] / "fixed.parquet", 20))
    assert sum(b.shape[0] for b in batches) == N
    assert decoded == list(range(6))  # 257 rows in groups of 50: six groups, each decoded once, in order


def test_remote_reads_are_ranged(files, monkeypatch) -> None:
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFile

    fs = fsspec.filesystem("memory")
    fs.pipe("/vec/x.fvecs", (files["dir"] / "x.fvecs").read_bytes())
    sizes: list[int] = []
    real = MemoryFile.read
    monkeypatch.setattr(MemoryFile, "read", lambda self, n=-1: sizes.append(n) or real(self, n))
    batches = list(hn.iter_vectors("memory://vec/x.fvecs", 40))
    np.testing.assert_array_equal(np.concatenate(batches), files["x"])
    rec = 4 + 4 * DIM
    assert max(sizes) == 40 * rec and -1 not in sizes  # never the whole file


# ============================================================================ URLs
@pytest.mark.parametrize("name", ["x.npy", "x.fvecs", "ann.hdf5:train", pytest.param("fixed.parquet", marks=needs_arrow), "x.zarr"])
def test_fsspec_urls(files, name) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    local = files["dir"] / name.split(":")[0]
    if local.is_dir():
        fs.put(str(local), f"/urls/{local.name}", recursive=True)
    else:
        fs.pipe(f"/urls/{local.name}", local.read_bytes())
    url = f"memory://urls/{name}"
    np.testing.assert_array_equal(hn.read_vectors(url), files["x"])
    np.testing.assert_array_equal(np.concatenate(list(hn.iter_vectors(url, 60))), files["x"])
    with pytest.raises(hn.VectorFileNotFoundError, match="memory://urls/nothing.npy"):
        hn.read_vectors("memory://urls/nothing.npy")


@pytest.mark.parametrize("fails", ["exists", "open"])
def test_a_remote_backends_own_error_is_a_vector_file_error(fails) -> None:
    """Remote filesystems raise more than OSError (an expired token, a client library's error
    types): such an error is a VectorFileError naming the URL, its type kept as the cause."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFileSystem

    class TokenExpired(Exception):
        pass

    class Flaky(MemoryFileSystem):
        protocol = "flakyvectors"
        store: dict = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            return MemoryFileSystem._strip_protocol(path.replace("flakyvectors://", "memory://", 1))

        def exists(self, path, **kw):
            if fails == "exists":
                raise TokenExpired("the access token expired")
            return super().exists(path, **kw)

        def _open(self, path, mode="rb", *a, **kw):
            if mode == "rb" and fails == "open":
                raise TokenExpired("the access token expired")
            return super()._open(path, mode, *a, **kw)

    fsspec.register_implementation("flakyvectors", Flaky, clobber=True)
    Flaky().pipe("/v/x.npy", b"\x93NUMPY")
    with pytest.raises(hn.VectorFileError, match=r"flakyvectors://v/x.npy: cannot read: TokenExpired: the access token expired") as e:
        hn.read_vectors("flakyvectors://v/x.npy")
    assert isinstance(e.value.__cause__, TokenExpired)


# ============================================================================ bad files
def typed(exc_info, *needles: str) -> None:
    """A VectorFileError (so an HnswError and a ValueError) whose message says each needle."""
    e = exc_info.value
    assert isinstance(e, hn.VectorFileError) and isinstance(e, hn.HnswError) and isinstance(e, ValueError)
    for n in needles:
        assert n in str(e), (n, str(e))


def test_missing_file(files) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        hn.read_vectors(files["dir"] / "nothing.npy")
    assert isinstance(ei.value, hn.VectorFileNotFoundError) and isinstance(ei.value, hn.HnswError)
    assert "nothing.npy: no such file" in str(ei.value)


def test_truncated_and_corrupt_texmex(files, tmp_path) -> None:
    raw = (files["dir"] / "x.fvecs").read_bytes()
    (tmp_path / "short.fvecs").write_bytes(raw[:-5])
    with pytest.raises(hn.VectorFileError) as ei:
        hn.read_vectors(tmp_path / "short.fvecs")
    typed(ei, "short.fvecs", "truncated")
    (tmp_path / "empty.fvecs").write_bytes(b"")
    with pytest.raises(hn.VectorFileError) as ei:
        hn.open_vectors(tmp_path / "empty.fvecs")
    typed(ei, "empty.fvecs", "empty or truncated")
    (tmp_path / "text.fvecs").write_bytes(b"hello world, not vectors" * 4)
    with pytest.raises(hn.VectorFileError) as ei:
        hn.open_vectors(tmp_path / "text.fvecs")
    typed(ei, "text.fvecs", "first row claims dimension")
    dims = np.full(N, DIM, np.int32)
    dims[100] = DIM + 1  # same file size: only the row's own header tells
    texmex(tmp_path / "mixed.fvecs", files["x"], dims)
    src = hn.open_vectors(tmp_path / "mixed.fvecs")
    np.testing.assert_array_equal(src.read(0, 100), files["x"][:100])  # rows before it read fine
    with pytest.raises(hn.VectorFileError) as ei:
        src.read(90, 110)
    typed(ei, "mixed.fvecs", "row 100 has dimension 7, the first row 6")


def test_bad_npy_files(files, tmp_path) -> None:
    raw = (files["dir"] / "x.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(raw[: len(raw) // 2])
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "flat.npy", np.zeros(8, np.float32))
    np.save(tmp_path / "words.npy", np.array([["a", "b"]]))
    (tmp_path / "fake.npy").write_text("not numpy")
    cases = {"short.npy": "truncated", "objects.npy": "Python objects", "flat.npy": "expected a 2-D array",
             "words.npy": "expected numbers", "fake.npy": "not a .npy file"}
    for name, needle in cases.items():
        with pytest.raises(hn.VectorFileError) as ei:
            hn.read_vectors(tmp_path / name)
        typed(ei, name, needle)


def test_bad_rows_are_named(files, tmp_path) -> None:
    x = files["x"].astype(np.float64)
    x[37, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(hn.VectorFileError) as ei:
        hn.read_vectors(tmp_path / "nan.npy")
    typed(ei, "nan.npy", "row 37 contains NaN or inf")
    assert np.isnan(hn.read_vectors(tmp_path / "nan.npy", check_finite=False)[37, 2])
    x[37, 2] = 1e300
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(hn.VectorFileError) as ei:
        hn.read_vectors(tmp_path / "big.npy")
    typed(ei, "big.npy", "row 37 contains a value outside the float32 range")
    assert hn.read_vectors(tmp_path / "big.npy", dtype=np.float64)[37, 2] == 1e300


def test_containers_need_a_name(files, tmp_path) -> None:
    d = files["dir"]
    arrow = {} if pa is None else {
        "fixed.parquet:nothing": ["no column 'nothing'", "emb"],
        "fixed.parquet:id": ["column 'id' is string"],
    }
    for spec, needles in {
        "ann.hdf5": ["ann.hdf5", "name a dataset", "train", "test"],
        "ann.hdf5:nothing": ["no dataset 'nothing'", "train"],
        "g.zarr": ["g.zarr: a Zarr group", "emb"],
        "g.zarr:nothing": ["no array 'nothing'", "emb"],
        "x.npy:train": ["holds one array"],
        **arrow,
    }.items():
        with pytest.raises(hn.VectorFileError) as ei:
            hn.read_vectors(f"{d}/{spec}")
        typed(ei, *needles)
    (tmp_path / "plain").mkdir()
    with pytest.raises(hn.VectorFileError) as ei:
        hn.read_vectors(tmp_path / "plain")
    typed(ei, "plain: a directory, but not a Zarr array")
    (tmp_path / "fake.hdf5").write_bytes(b"\0" * 64)
    with pytest.raises(hn.VectorFileError) as ei:
        hn.read_vectors(tmp_path / "fake.hdf5")
    typed(ei, "fake.hdf5: not an HDF5 file")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(hn.VectorFileError) as ei:
        hn.read_vectors(tmp_path / "notes.txt")
    typed(ei, "notes.txt: unrecognised format")


@needs_arrow
def test_bad_parquet_files(files, tmp_path) -> None:
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0], [6.0, 7.0]]
    pq.write_table(pa.table({"v": pa.array(rows)}), tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], None, [3.0, 4.0]])}), tmp_path / "nullrow.parquet")
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [None, 4.0]])}), tmp_path / "nullvalue.parquet")
    pq.write_table(pa.table({"a": pa.array([[1.0]]), "b": pa.array([[2.0]])}), tmp_path / "two.parquet")
    pq.write_table(pa.table({"s": pa.array(["x", "y"])}), tmp_path / "text.parquet")
    raw = (files["dir"] / "fixed.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(raw[: len(raw) - 40])
    cases = {
        "ragged.parquet": "row 2 has 1 values, the first row 2",
        "nullrow.parquet": "row 1: the vector is null",
        "nullvalue.parquet": "row 1: a value is null",
        "two.parquet": "several list columns (a, b)",
        "text.parquet": "no list column of numbers and no numeric columns",
        "cut.parquet": "cannot open as Parquet",
    }
    for name, needle in cases.items():
        with pytest.raises(hn.VectorFileError) as ei:
            hn.read_vectors(tmp_path / name)
        typed(ei, name, needle)


def test_bad_arguments(files) -> None:
    src = hn.open_vectors(files["dir"] / "x.npy")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(hn.InvalidParameterError):
            next(src.batches(bad))
    with pytest.raises(hn.InvalidParameterError):
        src.read(10, 5)
    with pytest.raises(hn.InvalidParameterError):
        src.read(0, N + 1)
    with pytest.raises(hn.InvalidParameterError):
        hn.read_vectors(42)


# ============================================================================ optional packages
@pytest.mark.parametrize("modules,spec,extra", [
    (["h5py"], "ann.hdf5:train", "hdf5"),
    pytest.param(["pyarrow", "pyarrow.parquet"], "fixed.parquet", "parquet", marks=needs_arrow),
    (["fsspec"], "memory://somewhere/x.npy", "s3"),
])
def test_missing_optional_package_names_the_extra(files, monkeypatch, modules, spec, extra) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # import m now raises ImportError
    path = spec if "://" in spec else f"{files['dir']}/{spec}"
    with pytest.raises(ImportError) as ei:
        hn.read_vectors(path)
    assert isinstance(ei.value, hn.MissingDependencyError) and isinstance(ei.value, hn.HnswError)
    assert f"install {modules[0]}: pip install 'hnsw_numba[{extra}]'" in str(ei.value)


def test_extras_are_declared() -> None:
    import tomllib

    from conftest import ROOT

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "h5py>=3" in extras["hdf5"] and "pyarrow>=14" in extras["parquet"]
    assert {"fsspec", "s3fs"} <= set(extras["s3"])
