"""Vector files at their limits: integer reads, storage outside the file, huge declared shapes,
odd Parquet columns, null dataspaces and the evaluation helpers' parameters."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REFUSE_THREADS

import hnsw_numba as hn
from hnsw_numba.datasets import clustered_embeddings
from hnsw_numba.evaluation import load_ann_benchmarks

h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")
try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the Parquet cases skip; every other case still runs
    pa = pq = None
needs_arrow = pytest.mark.skipif(pa is None, reason="pyarrow not installed (pip install 'hnsw_numba[parquet]')")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


def ann_file(path, neighbors, n_train: int = 50) -> None:
    """An ann-benchmarks HDF5 file: random train and test rows, ``neighbors`` as given."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["train"] = rng.standard_normal((n_train, 4)).astype(np.float32)
        f["test"] = rng.standard_normal((len(neighbors), 4)).astype(np.float32)
        f["neighbors"] = neighbors
        f.attrs["distance"] = "euclidean"


# ============================================================================ integer reads
def test_reading_into_an_integer_type_refuses_what_it_cannot_hold(tmp_path) -> None:
    """Reading into an integer dtype cast silently: float32 300 and -5 came back as uint8 44
    and 251, NaN as int64 became INT64_MIN, and an .ivecs 1000 read as int8 became -24."""
    np.save(tmp_path / "f.npy", np.array([[1.0, 2.0], [300.0, -5.0]], np.float32))
    with pytest.raises(hn.VectorFileError, match="row 1 .*outside the uint8 range"):
        hn.read_vectors(tmp_path / "f.npy", dtype=np.uint8)
    np.save(tmp_path / "n.npy", np.array([[1.0, 1.0], [np.nan, 1.0]], np.float32))
    for check in (True, False):  # an integer cannot hold NaN whatever check_finite says
        with pytest.raises(hn.VectorFileError, match="row 1 contains NaN or inf"):
            hn.read_vectors(tmp_path / "n.npy", dtype=np.int64, check_finite=check)
    with open(tmp_path / "a.ivecs", "wb") as f:
        f.write(struct.pack("<i", 2) + np.array([1, 1000], "<i4").tobytes())
    with pytest.raises(hn.VectorFileError, match="row 0 .*outside the int8 range"):
        hn.read_vectors(tmp_path / "a.ivecs", dtype=np.int8)
    np.save(tmp_path / "u.npy", np.array([[2**63, 1]], np.uint64))
    with pytest.raises(hn.VectorFileError, match="outside the int64 range"):
        hn.read_vectors(tmp_path / "u.npy", dtype=np.int64)
    np.save(tmp_path / "edge.npy", np.array([[2.0**63, 0.0]], np.float64))  # one past int64's maximum
    with pytest.raises(hn.VectorFileError, match="outside the int64 range"):
        hn.read_vectors(tmp_path / "edge.npy", dtype=np.int64)
    # what fits converts as before
    np.save(tmp_path / "ok.npy", np.array([[0.0, 255.0], [-128.0, 127.0]], np.float32))
    assert hn.read_vectors(tmp_path / "ok.npy", dtype=np.int16).tolist() == [[0, 255], [-128, 127]]
    assert hn.read_vectors(tmp_path / "a.ivecs", dtype=np.int16).tolist() == [[1, 1000]]


def test_ann_benchmarks_neighbors_must_be_row_numbers_of_train(tmp_path) -> None:
    """load_ann_benchmarks read neighbors with a wrapping cast: NaN padding of a float dataset
    became INT64_MIN (recall 0.75 for the exact answer), and values past the train rows (or
    fractions) were accepted as they were."""
    nb = np.tile(np.arange(6, dtype=np.float32), (2, 1))
    nb[:, 3:] = np.nan
    ann_file(tmp_path / "nan.hdf5", nb)
    with pytest.raises(hn.VectorFileError, match="neighbors: row 0 contains NaN"):
        load_ann_benchmarks(tmp_path / "nan.hdf5")
    ann_file(tmp_path / "oob.hdf5", np.full((2, 6), 10**6, np.int32))
    with pytest.raises(hn.VectorFileError, match="row 0 holds 1000000, not a row number of train"):
        load_ann_benchmarks(tmp_path / "oob.hdf5")
    ann_file(tmp_path / "neg.hdf5", np.array([[1, 2], [3, -2]], np.int32))
    with pytest.raises(hn.VectorFileError, match="row 1 holds -2"):
        load_ann_benchmarks(tmp_path / "neg.hdf5")
    ann_file(tmp_path / "frac.hdf5", np.array([[1.0, 2.5], [3.0, 4.0]], np.float32))
    with pytest.raises(hn.VectorFileError, match="row 0 holds 2.5"):
        load_ann_benchmarks(tmp_path / "frac.hdf5")
    # -1 pads (as exact_neighbors does) and stays -1; whole floats are row numbers
    ann_file(tmp_path / "pad.hdf5", np.array([[49.0, 0.0, -1.0], [7.0, -1.0, -1.0]], np.float32))
    ds = load_ann_benchmarks(tmp_path / "pad.hdf5")
    assert ds.neighbors.dtype == np.int64 and ds.neighbors.tolist() == [[49, 0, -1], [7, -1, -1]]


# ============================================================================ storage outside the file
def _run(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: a read that blocks is killed instead of hanging the suite."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


@needs_fifo
def test_hdf5_external_storage_is_refused(tmp_path) -> None:
    """A dataset with external raw storage naming a pipe blocked read_vectors forever, and
    external storage read any local file's bytes as vectors."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"PASSWORD=hunter2".ljust(64, b"."))
    os.mkfifo(tmp_path / "fifo")
    with h5py.File(tmp_path / "ext.hdf5", "w") as f:
        f.create_dataset("train", shape=(4, 16), dtype="u1", external=[(str(secret), 0, 64)])
        f.create_dataset("piped", shape=(4, 16), dtype="f4", external=[(str(tmp_path / "fifo"), 0, 256)])
    with pytest.raises(hn.VectorFileError, match="other files .external raw storage"):
        hn.read_vectors(tmp_path / "ext.hdf5:train", dtype=None)
    r = _run(f"""
        import hnsw_numba as hn
        try:
            hn.read_vectors({str(tmp_path / "ext.hdf5")!r}, dataset="piped")
        except hn.VectorFileError as exc:
            print("refused:", exc)
    """)
    assert "refused:" in r.stdout and "external raw storage" in r.stdout, r.stderr


@needs_fifo
def test_hdf5_external_link_is_not_followed(tmp_path) -> None:
    """A dataset path through an HDF5 external link opened the file it named: a pipe there
    blocked the open."""
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f["train"] = np.ones((3, 2), np.float32)
    with h5py.File(tmp_path / "l.hdf5", "w") as f:
        f["train"] = h5py.ExternalLink(str(tmp_path / "other.hdf5"), "/train")
        f["grp"] = h5py.ExternalLink(str(tmp_path / "other.hdf5"), "/")
        f["soft"] = h5py.SoftLink("/grp")
        f["inner/rel"] = h5py.SoftLink("../grp")
    for name in ("train", "grp/train", "soft/train", "/soft/train"):
        with pytest.raises(hn.VectorFileError, match="links to another file"):
            hn.read_vectors(tmp_path / "l.hdf5", dataset=name)


@needs_fifo
def test_zarr_chunks_that_are_not_regular_files_are_refused(tmp_path) -> None:
    """A Zarr chunk file that was a pipe blocked read_vectors forever; one linked to /dev/zero
    read until memory ran out."""
    for i, kind in enumerate(("fifo", "device")):
        path = tmp_path / f"z{i}.zarr"
        z = zarr.open_array(str(path), mode="w", shape=(4, 2), chunks=(2, 2), dtype="f4")
        z[:] = 1
        chunk = next(p for p in path.rglob("*") if p.is_file() and p.parent != path)
        chunk.unlink()
        if kind == "fifo":
            os.mkfifo(chunk)
        else:
            os.symlink("/dev/zero", chunk)
        r = _run(f"""
            import hnsw_numba as hn
            try:
                hn.read_vectors({str(path)!r})
            except hn.VectorFileError as exc:
                print("refused:", exc)
        """)
        assert "refused:" in r.stdout and "not a regular file" in r.stdout, (kind, r.stdout, r.stderr)
    # a chunk reached through a symbolic link to a regular file still reads
    path = tmp_path / "linked.zarr"
    z = zarr.open_array(str(path), mode="w", shape=(4, 2), chunks=(2, 2), dtype="f4")
    z[:] = 2
    chunk = next(p for p in path.rglob("*") if p.is_file() and p.parent != path)
    os.rename(chunk, tmp_path / "moved")
    os.symlink(tmp_path / "moved", chunk)
    assert hn.read_vectors(path).tolist() == [[2.0, 2.0]] * 4


def test_an_hdf5_dataset_object_is_checked_as_its_path_is(tmp_path) -> None:
    """An h5py.Dataset given as an object (VectorSource, exact_neighbors, Index.add_from)
    meets the checks of its path: rows kept in other files (external raw storage, a virtual
    dataset) or never written are not read, and the index stays as it was."""
    np.ones((4, 8), np.float32).tofile(tmp_path / "raw.bin")
    with h5py.File(tmp_path / "src.hdf5", "w") as f:
        f["x"] = np.ones((4, 8), np.float32)
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        f.create_dataset("external", shape=(4, 8), dtype="f4", external=[(str(tmp_path / "raw.bin"), 0, 128)])
        layout = h5py.VirtualLayout(shape=(4, 8), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "src.hdf5"), "x", shape=(4, 8))
        f.create_virtual_dataset("virtual", layout)
        f.create_dataset("unwritten", shape=(3000, 8), dtype="f4", chunks=(1000, 8))
        f["ok"] = np.arange(32, dtype=np.float32).reshape(4, 8)
    needles = {"external": "other files .external raw storage", "virtual": "other files .a virtual dataset",
               "unwritten": "not all of its rows were written"}
    index = hn.Index(8, metric="l2", capacity=16)
    with h5py.File(tmp_path / "d.hdf5", "r") as f:
        for name, needle in needles.items():
            with pytest.raises(hn.VectorFileError, match=needle):  # the path's own check
                hn.read_vectors(tmp_path / f"d.hdf5:{name}")
            for call in (lambda: hn.VectorSource(f[name]), lambda: index.add_from(f[name])):
                with pytest.raises(hn.VectorFileError, match=needle) as info:
                    call()
                assert f"d.hdf5:/{name}" in str(info.value)  # the message names the file and dataset
            with pytest.raises(hn.VectorFileError, match=needle):  # the file's error, as for its path
                hn.exact_neighbors(f[name], np.ones((1, 8), np.float32), 1)
        assert len(index) == 0
        assert hn.VectorSource(f["ok"]).read().tolist() == f["ok"][:].tolist()
        index.add_from(f["ok"])
        assert len(index) == 4
        closed = f["ok"]
    for call in (lambda: hn.VectorSource(closed), lambda: index.add_from(closed), lambda: hn.exact_neighbors(closed, np.ones((1, 8), np.float32), 1)):
        with pytest.raises(hn.VectorFileError, match="cannot read the dataset"):  # a closed file's dataset
            call()


# ============================================================================ declared shapes
def test_a_tiny_file_declaring_a_huge_shape_fails_typed(tmp_path) -> None:
    """A file of a few KiB declaring (10**12, 100) float32 raised NumPy's bare MemoryError from
    read_vectors and load_ann_benchmarks (and streaming reads walked fill values for ever)."""
    with h5py.File(tmp_path / "huge.hdf5", "w") as f:
        f.create_dataset("train", shape=(10**12, 100), dtype="f4", chunks=(1024, 100))
        f.create_dataset("test", data=np.zeros((2, 100), np.float32))
        part = f.create_dataset("part", shape=(3000, 4), dtype="f4", chunks=(1000, 4))
        part[:1000] = 1
        f.attrs["distance"] = "euclidean"
    assert os.path.getsize(tmp_path / "huge.hdf5") < 100_000
    for call in (lambda: hn.read_vectors(tmp_path / "huge.hdf5:train"),
                 lambda: load_ann_benchmarks(tmp_path / "huge.hdf5"),
                 lambda: hn.exact_neighbors(str(tmp_path / "huge.hdf5:train"), np.zeros((1, 100), np.float32), 1),
                 lambda: hn.read_vectors(tmp_path / "huge.hdf5:part")):
        with pytest.raises(hn.VectorFileError, match="not all of its rows were written"):
            call()
    zarr.open_array(str(tmp_path / "huge.zarr"), mode="w", shape=(10**12, 100), chunks=(1000, 100), dtype="f4")
    with pytest.raises(hn.CapacityError, match="reading 1,000,000,000,000 rows"):
        hn.read_vectors(tmp_path / "huge.zarr")
    with hn.open_vectors(tmp_path / "huge.zarr") as src:  # batches stay bounded: fill values
        assert next(src.batches(10)).shape == (10, 100)


def test_a_read_past_the_allocation_limit_raises_capacity_error(tmp_path, monkeypatch) -> None:
    """A whole read was allocated whatever its size: only NumPy's MemoryError stopped it."""
    z = zarr.open_array(str(tmp_path / "z.zarr"), mode="w", shape=(1000, 8), chunks=(100, 8), dtype="f4")
    z[:] = 1
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", str(16_000))
    with pytest.raises(hn.CapacityError):
        hn.read_vectors(tmp_path / "z.zarr")
    with hn.open_vectors(tmp_path / "z.zarr") as src:
        assert src.read(0, 100).shape == (100, 8)  # 3.2 KB: within the limit


# ============================================================================ Parquet columns
@needs_arrow
def test_parquet_empty_vectors_and_bad_column_lists(tmp_path) -> None:
    """A list column of empty vectors raised a bare ValueError; dataset=[] a bare ValueError
    from np.result_type; a repeated column (["a", "b", "a"]) declared dim 3 but read rows of 2."""
    pq.write_table(pa.table({"v": pa.array([[], []], pa.list_(pa.float32()))}), tmp_path / "empty.parquet")
    with pytest.raises(hn.VectorFileError, match="row 0 is an empty vector"):
        hn.read_vectors(tmp_path / "empty.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}), tmp_path / "cols.parquet")
    with pytest.raises(hn.InvalidParameterError, match="names no column"):
        hn.read_vectors(tmp_path / "cols.parquet", dataset=[])
    with pytest.raises(hn.InvalidParameterError, match="column 'a' twice"):
        hn.open_vectors(tmp_path / "cols.parquet", dataset=["a", "b", "a"])
    with hn.open_vectors(tmp_path / "cols.parquet", dataset=["b", "a"]) as src:
        assert src.dim == 2 and src.read().tolist() == [[4.0, 1.0], [5.0, 2.0], [6.0, 3.0]]


# ============================================================================ null dataspace
def test_hdf5_null_dataspace_is_a_typed_error(tmp_path) -> None:
    """A dataset with a null dataspace (shape None) raised a bare TypeError from the readers
    and from exact_neighbors."""
    with h5py.File(tmp_path / "nul.hdf5", "w") as f:
        f.create_dataset("train", shape=None, dtype="f4")
        f["test"] = np.ones((2, 4), np.float32)
        f.attrs["distance"] = "euclidean"
    for call in (lambda: hn.read_vectors(tmp_path / "nul.hdf5:train"),
                 lambda: hn.open_vectors(tmp_path / "nul.hdf5", dataset="train"),
                 lambda: load_ann_benchmarks(tmp_path / "nul.hdf5")):
        with pytest.raises(hn.VectorFileError, match="holds no array"):
            call()
    with h5py.File(tmp_path / "nul.hdf5", "r") as f:
        with pytest.raises(hn.DimensionMismatchError, match="got shape None"):
            hn.exact_neighbors(f["train"], np.ones((1, 4)), 1)


# ============================================================================ parameters
def test_bad_dtypes_are_invalid_parameters(tmp_path) -> None:
    """dtype="nodtype" raised a bare TypeError from read_vectors and exact_neighbors, and
    read_vectors returned object and complex rows for dtype=object and complex64."""
    np.save(tmp_path / "x.npy", np.ones((3, 2), np.float32))
    for dt in ("nodtype", object, np.complex64, bool, "U3"):
        with pytest.raises(hn.InvalidParameterError, match="dtype"):
            hn.read_vectors(tmp_path / "x.npy", dtype=dt)
    with pytest.raises(hn.InvalidParameterError, match="dtype"):
        hn.exact_neighbors(np.ones((3, 2)), np.ones((1, 2)), 1, dtype="nodtype")
    assert hn.read_vectors(tmp_path / "x.npy", dtype=np.float64).dtype == np.float64


def test_load_ann_benchmarks_limits_must_be_positive(tmp_path) -> None:
    """limit=0 returned every train row and n_queries=0 every query (``limit or full``)."""
    ann_file(tmp_path / "a.hdf5", np.zeros((5, 3), np.int32))
    for kw in ({"limit": 0}, {"n_queries": 0}, {"limit": -1}, {"n_queries": True}, {"limit": 2.5}):
        with pytest.raises(hn.InvalidParameterError):
            load_ann_benchmarks(tmp_path / "a.hdf5", **kw)
    ds = load_ann_benchmarks(tmp_path / "a.hdf5", limit=1, n_queries=1)
    assert ds.train.shape == (1, 4) and ds.test.shape == (1, 4) and ds.neighbors is None


def test_clustered_embeddings_refuses_negative_counts() -> None:
    """clustered_embeddings(10, 8, n_queries=-1) returned 9 data rows instead of raising."""
    for args, kw in (((10, 8), {"n_queries": -1}), ((-1, 8), {}), ((10, 0), {}), ((10, 8), {"n_clusters": 0})):
        with pytest.raises(hn.InvalidParameterError):
            clustered_embeddings(*args, **kw)
    data, queries = clustered_embeddings(10, 8, n_queries=3)
    assert data.shape == (10, 8) and queries.shape == (3, 8)


_VECTORS_NO_THREADS = REFUSE_THREADS + """
refused_then(lambda: hn.read_vectors(sys.argv[1]), lambda: hn.read_vectors(sys.argv[1]).shape[0])
"""


def test_a_zarr_file_read_where_the_os_refuses_a_thread_is_a_read_fault(tmp_path) -> None:
    """zarr's I/O thread refused: a good array was "cannot open as Zarr" (VectorFileError),
    and the next read of the process hung on the loop zarr kept."""
    import subprocess
    import sys

    import zarr

    z = zarr.create_array(str(tmp_path / "v.zarr"), shape=(100, 8), dtype="float32")
    z[:] = np.ones((100, 8), np.float32)
    out = subprocess.run([sys.executable, "-c", _VECTORS_NO_THREADS, str(tmp_path / "v.zarr")], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["PersistError", "True", "100"], out.stdout + out.stderr
