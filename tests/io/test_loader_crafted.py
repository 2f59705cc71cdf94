"""Crafted files whose checksums and digests hold: what the loaders must still refuse.

Each file is edited through zarr with its chunk CRCs and array digests recomputed (or
marked format version 1, which carries no digests), so only the loader's own checks of
sizes and values stand between the file and the kernels.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from zarr.storage import ZipStore

import hnsw_numba as hn
from hnsw_numba.io import persist
from conftest import without_digests
from test_persist import _rewrite, _set_attr

DIM = 8


def _saved(tmp_path: Path, keys: list, *, name: str = "ix", data_seed: int = 4, qi8: bool = False) -> tuple[Path, np.ndarray]:
    """A saved L2 index (float32 store, or Qi8 with ``qi8``) over ``keys``, written to
    ``tmp_path / name`` (a ``.zip`` name writes a zip file); its vectors come from ``data_seed``."""
    n = len(keys)
    data = np.random.default_rng(data_seed).standard_normal((n, DIM)).astype(np.float32)
    idx = hn.Hnsw(hn.L2Qi8() if qi8 else hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=n, m=6, ef_construction=32, seed=4))
    store = hn.InMemoryQi8VectorStore(DIM, n) if qi8 else hn.InMemoryVectorStore(DIM, n)
    idx.insert_batch(store, keys, data)
    path = tmp_path / name
    hn.save(path, idx, store)
    return path, data


def test_a_huge_last_key_offset_allocates_nothing(tmp_path: Path) -> None:
    """A text-key save whose last ``key_offsets`` value claims 2**50 key bytes raises a typed
    error before allocating them: IndexFormatError while the stored ``key_bytes`` array is
    shorter, CapacityError when its metadata claims the same size.

    Fails before the check: ``np.empty(2**50)`` raised a bare MemoryError (1 PiB).
    """
    path, _ = _saved(tmp_path, [f"doc{i}" for i in range(120)])
    _rewrite(path, "graph/key_offsets", lambda x: x.__setitem__(-1, 2**50))
    with pytest.raises(hn.IndexFormatError, match="key_bytes"):
        hn.load(path)
    without_digests(path)
    meta_path = path / "graph" / "key_bytes" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [2**50]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(hn.CapacityError):
        hn.load(path)


@pytest.mark.parametrize("edit", [lambda x: x.__setitem__(7, -1), lambda x: x.__setitem__(3, -(2**63))], ids=["-1", "int64-min"])
def test_a_negative_int_key_is_refused(tmp_path: Path, edit) -> None:
    """An int key edited to -1 (the padding of ``search_batch`` answers) or int64's minimum.

    Fails before the check: the file loaded, and a search for the vector of that item
    answered key -1 first, which reads as "no hit".
    """
    path, _ = _saved(tmp_path, list(range(0, 300, 3)))
    _rewrite(path, "graph/keys", edit)
    with pytest.raises(hn.IndexFormatError, match="negative"):
        hn.load(path)


def test_a_negative_text_int_key_is_refused(tmp_path: Path) -> None:
    """In a text-key save (str and int keys mixed), an int key written as "-1"."""
    keys = [i if i % 2 else f"s{i}" for i in range(60)]
    path, _ = _saved(tmp_path, keys)
    # the key bytes start "s0" "1" "s2": "1s2" becomes "-1s" and the offset between keys
    # 1 and 2 moves by one, so key 1 reads "-1" and key 2 reads "s" (both CRCs recomputed)
    def offsets(x: np.ndarray) -> None:
        x[2] += 1

    def data(x: np.ndarray) -> None:
        start = int(np.flatnonzero(x == ord("1"))[0])
        x[start : start + 3] = np.frombuffer(b"-1s", np.uint8)

    _rewrite(path, "graph/key_offsets", offsets)
    _rewrite(path, "graph/key_bytes", data)
    with pytest.raises(hn.IndexFormatError, match="negative"):
        hn.load(path)


@pytest.mark.parametrize("value", ["x", "dim", [["dim", 8]], 5])
def test_a_config_attribute_that_is_no_object_is_a_format_error(tmp_path: Path, value) -> None:
    """The graph's ``config`` attribute set to a str, a list or a number (digests recomputed).

    Fails before the check: a str raised the bare ValueError of ``dict("x")``.
    """
    path, _ = _saved(tmp_path, list(range(50)))
    _set_attr(path, "graph", "config", value)
    with pytest.raises(hn.IndexFormatError, match="config"):
        hn.load(path)
    with pytest.raises(hn.IndexFormatError, match="config"):
        persist.read_info(path)


def test_a_live_row_marked_unwritten_is_refused(tmp_path: Path) -> None:
    """``vectors/written`` edited to 0 for a live node (checksums recomputed).

    Fails before the check: the file loaded; ``compact`` then refused the index's own store
    ("not this index's store"), and a pickle of the index dropped the row (a search for its
    vector answered another key at distance 2.27).
    """
    path, _ = _saved(tmp_path, list(range(50)))
    _rewrite(path, "vectors/written", lambda x: x.__setitem__(49, 0))
    with pytest.raises(hn.IndexFormatError, match="live node 49 has no vector"):
        hn.load(path)
    with pytest.raises(hn.IndexFormatError, match="live node 49"):
        hn.open(path)


def _rezip(src: Path, dst: Path, name: str, payload: bytes) -> None:
    """A copy of the zip ``src`` whose entry ``name`` holds ``payload``, deflated."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename == name:
                zout.writestr(info.filename, payload, compress_type=zipfile.ZIP_DEFLATED)
            else:
                zout.writestr(info, zin.read(info.filename))


@pytest.mark.parametrize("opened", [lambda p: p, lambda p: ZipStore(p, mode="r")], ids=["path", "zip-store"])
def test_a_deflated_zip_entry_is_not_inflated_past_its_size(tmp_path: Path, opened) -> None:
    """A zip save whose vector chunk is replaced by 32 MiB of deflated zeros (a 33 KB
    entry), and one whose zarr.json gains 32 MiB of trailing spaces, loaded by path or
    opened by the caller as a read-only ``ZipStore``.

    Fails before the checks: the load inflated the whole chunk entry before its checksum
    failed (a 40 MB file would have asked for 40 GB), and read the padded metadata whole;
    a store object got no size checks at all.
    """
    src, _ = _saved(tmp_path, list(range(100)), name="ix.zip")
    loaded, _ = hn.load(opened(src))
    assert len(loaded) == 100
    bomb = tmp_path / "bomb.zip"
    _rezip(src, bomb, "vectors/data/c/0/0", bytes(32 << 20))
    assert bomb.stat().st_size < src.stat().st_size + (1 << 20)
    with pytest.raises(hn.IndexFormatError, match="zip entry of 33554432 bytes"):
        hn.load(opened(bomb))
    meta = tmp_path / "meta.zip"
    with zipfile.ZipFile(src) as z:
        padded = z.read("graph/zarr.json") + b" " * (32 << 20)
    _rezip(src, meta, "graph/zarr.json", padded)
    with pytest.raises(hn.IndexFormatError, match="graph/zarr.json declares"):
        hn.load(opened(meta))


def test_a_graph_metric_that_cannot_read_the_saved_store_is_refused(tmp_path: Path) -> None:
    """A Qi8 save whose graph metric attribute reads ``ip`` (a float-store metric), digests
    recomputed, loaded without naming a metric.

    Fails before the check: the file loaded and every search raised MetricMismatchError.
    """
    path, _ = _saved(tmp_path, list(range(60)), qi8=True)
    _set_attr(path, "graph", "metric", "ip")
    with pytest.raises(hn.IndexFormatError, match="'ip' reads 'float' stores, the saved store is 'qi8'"):
        hn.load(path)


def _claim_rows(path: Path, rows: int) -> None:
    """Make a format-version-1 save claim ``rows`` nodes: header, config and array shapes
    agree, the chunk files stay as they are."""
    _rewrite(path, "graph/header", lambda x: x.__setitem__(2, rows))
    without_digests(path)
    for meta_path in [path / "graph" / "zarr.json"] + [path / "graph" / name / "zarr.json" for name in ("levels", "links0", "upper_start", "tombstones", "keys")]:
        meta = json.loads(meta_path.read_text())
        if "shape" in meta:
            meta["shape"][0] = rows
        else:
            meta["attributes"]["hnsw_numba"]["config"]["max_nodes"] = rows
        meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("zipped", [False, True], ids=["dir", "zip"])
def test_a_header_claiming_many_nodes_allocates_nothing(tmp_path: Path, zipped: bool) -> None:
    """A 50-node save whose header, config and array metadata claim 10**8 nodes.

    Fails before the check: the load made room for 10**8 nodes (7 GB allocated) before it
    found the first chunk file missing; 3 * 10**8 nodes took 2.7 GB of memory and 6 s.
    """
    import tracemalloc

    path, _ = _saved(tmp_path, list(range(50)))
    _claim_rows(path, 10**8)
    target = path
    if zipped:
        target = tmp_path / "ix.zip"
        with zipfile.ZipFile(target, "w") as z:
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(path).as_posix())
    tracemalloc.start()
    try:
        with pytest.raises(hn.IndexFormatError, match="missing|bytes, expected"):
            hn.load(target)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"the load allocated {peak / 2**20:.0f} MiB for a 50-node file"


@pytest.mark.parametrize("part", ["graph/links0", "vectors/data", "graph", "vectors"])
def test_an_array_or_group_from_another_save_is_refused(tmp_path: Path, part: str) -> None:
    """Two saves of indexes with the same settings and sizes but other vectors: an array
    directory (metadata, digest and chunks) or a whole group copied from one into the
    other.

    Fails without the save id: the digests bind chunks to their array and group settings,
    not to one save, so the mixed file loaded and searched a graph built over other vectors.
    """
    import shutil

    paths = [_saved(tmp_path, list(range(60)), name=f"ix{seed}", data_seed=seed)[0] for seed in (1, 2)]
    hn.load(paths[0])
    shutil.rmtree(paths[0] / part)
    shutil.copytree(paths[1] / part, paths[0] / part)
    with pytest.raises(hn.IndexFormatError, match="digest|different saves"):
        hn.load(paths[0])


def test_a_save_id_that_is_no_string_is_a_format_error(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path, list(range(20)))
    without_digests(path)  # format version 1: the attribute edit is not caught by a digest
    for group in ("", "graph", "vectors"):
        meta_path = path / group / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["attributes"]["hnsw_numba"]["save_id"] = ["x"]
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(hn.IndexFormatError, match="save_id must be a string"):
        hn.load(path)
