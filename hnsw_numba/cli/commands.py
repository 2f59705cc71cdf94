"""The subcommands: ``demo``, ``build``, ``search``, ``info``, ``bench``, ``convert-hnswlib``.

Each takes the parsed arguments and returns the exit status; errors propagate to
:func:`hnsw_numba.cli.main.main`, which turns them into one line on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import stat
import sys
import time

import numpy as np

from .common import (BUILD_BLOCK, DTYPES, SEARCH_BLOCK, block_rows, check_rows, checked_blocks, created, finish_write, first_use,
                     say)

__all__ = ["demo", "build", "search", "info", "bench", "convert", "index_info", "result_keys"]


# ============================================================================ demo
def demo(args: argparse.Namespace) -> int:
    """Build an index on generated data and print recall@10 and speed; returns the exit status."""
    from .. import Cosine, Hnsw, HnswConfig, InMemoryVectorStore, L2
    from ..datasets import clustered_embeddings
    from ..evaluation import recall

    n, dim, nq = args.n, args.dim, args.queries
    print(f"hnsw_numba demo: {n:,} generated {dim}-d embeddings, {nq} queries, metric {args.metric}")
    data, queries = clustered_embeddings(n, dim, n_queries=nq, seed=args.seed)
    metric = {"l2": L2(), "cosine": Cosine()}[args.metric]
    t = time.perf_counter()
    index = Hnsw(metric, HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=args.seed))
    store = InMemoryVectorStore(dim, n)
    warm = min(n, 100)  # rows inserted before the clock starts (all of them for a small --n)
    index.insert_batch(store, np.arange(warm), data[:warm])  # first call compiles or loads the cache
    index.search_batch(store, queries[:2], 10)
    index.search(store, queries[0], 10)
    index.search_batch(store, queries[:2], 10, exact=True)
    t_jit = time.perf_counter() - t
    print(f"  compile / cache load: {t_jit:.1f} s")
    t = time.perf_counter()
    index.insert_batch(store, np.arange(warm, n), data[warm:])
    t_build = time.perf_counter() - t
    if n > warm:
        print(f"  build: {t_build:.1f} s ({(n - warm) / max(t_build, 1e-9):,.0f} inserts/s, all cores)")
    else:
        print(f"  build: all {n:,} vectors inserted with the first call (no rate to time)")
    t = time.perf_counter()
    truth, _ = index.search_batch(store, queries, 10, exact=True)
    t_exact = time.perf_counter() - t
    print(f"  brute force: {nq / t_exact:,.0f} queries/s")
    print("      ef  recall@10  batch q/s  single q/s")
    for ef in (16, 32, 64, 128):
        index.search_batch(store, queries, 10, ef=ef)
        t = time.perf_counter()
        keys, _ = index.search_batch(store, queries, 10, ef=ef)
        qps = nq / (time.perf_counter() - t)
        t = time.perf_counter()
        singles = queries[:200]
        for q in singles:
            index.search(store, q, 10, ef=ef)
        single = len(singles) / (time.perf_counter() - t)
        rec = recall(keys, truth)
        print(f"  {ef:6d}  {rec:9.4f}  {qps:9,.0f}  {single:10,.0f}")
    return 0


# ============================================================================ build
#: Rows inserted (or queries searched) before the clock starts: the kernels' first use.
FIRST_ROWS = 64


def store_label(dtype: str) -> str:
    """The store type a ``--dtype`` names, for the compile step's message."""
    return DTYPES.get(dtype, dtype)


def make_index(metric_name: str, dtype: str, dim: int, n: int, m: int, efc: int, seed: int | None, where: str):
    from .. import Hnsw, HnswConfig, InMemoryQi8VectorStore, InMemoryVectorStore
    from ..core.errors import InvalidParameterError
    from ..core.metrics import metric_from_name
    from .files import DataError

    try:
        config = HnswConfig(dim=dim, max_nodes=n, m=m, ef_construction=efc, seed=seed)
    except InvalidParameterError as exc:  # the parser checks every option: the file's shape is out of range
        raise DataError(f"{where}: {exc}") from None
    if dtype == "qi8":
        index = Hnsw(metric_from_name(f"{metric_name}_qi8"), config)
        store = InMemoryQi8VectorStore(dim, n)
    else:
        index = Hnsw(metric_from_name(metric_name), config)
        store = InMemoryVectorStore(dim, n, dtype=DTYPES[dtype], walk_copy=dtype == "f32+f16")
    return index, store


def check_out_place(out: str, kind: str) -> None:
    """Refuse, before any work, an output of ``kind`` (``"index"``: a directory or ``.zip``;
    ``"search_results"``: a Zarr group) that its save would refuse after it (a folder or zip
    that holds no save or another kind's, a file, a place inside another save)."""
    from pathlib import Path

    from ..io.places import check_place, through_link
    from ..io.vectors import is_url

    if not is_url(out):
        directory = kind == "search_results" or not out.lower().endswith(".zip")
        # the place the save writes: a symlink's target (one that leads nowhere yet is created)
        check_place(through_link(Path(out).absolute()), directory=directory, kind=kind)


def build(args: argparse.Namespace) -> int:
    from .. import save
    from .files import ProgressLine, build_metric, check_out, open_vectors, path_bytes, read_keys

    check_out(args.out, args.overwrite)
    check_out_place(args.out, "index")
    src = open_vectors(args.input, "train")
    try:
        n, dim = src.n, src.dim
        metric = build_metric(src, args.metric)
        keys = read_keys(args.keys, n) if args.keys else np.arange(n, dtype=np.int64)
        index, store = make_index(metric, args.dtype, dim, n, args.m, args.ef_construction, args.seed, src.where)
        say(f"build: {src.where}: {n:,} x {dim} -> {args.out} (metric {metric}, dtype {args.dtype}, "
             f"m {args.m}, ef_construction {args.ef_construction})", quiet=args.quiet)
        check_rows(src, index.metric.normalize)  # a bad row fails here, before minutes of building
        wide = None if index.metric.normalize and src.dtype.kind == "f" and src.dtype.itemsize > 4 else np.float32  # cosine: scaled in their type
        first = min(n, FIRST_ROWS)
        with first_use("build", store_label(args.dtype), args.quiet), block_rows(src.where, 0):  # the clock starts after compiling
            if first:
                index.insert_batch(store, keys[:first], src.read(0, first, dtype=wide), num_threads=args.threads, progress=False)
        t0 = time.perf_counter()
        with ProgressLine(n, "build", not args.quiet, done=first) as bar:
            for start in range(first, n, BUILD_BLOCK):
                block = src.read(start, min(start + BUILD_BLOCK, n), dtype=wide)
                stop = start + block.shape[0]
                with block_rows(src.where, start):
                    index.insert_batch(store, keys[start:stop], block, num_threads=args.threads, progress=False)
                bar.update(block.shape[0])
            if args.reorder and len(index):
                # a saved index is read-mostly: neighbours renumbered to sit together in memory
                # answer 1.2-1.45x faster at 1,000,000 vectors, for ~1 % of the build (docs/performance.md)
                index.compact(store, num_threads=args.threads, reorder=True)
        t_build = time.perf_counter() - t0
    finally:
        src.close()
    check_out(args.out, args.overwrite)  # appeared while building?
    t0 = time.perf_counter()
    with finish_write(args.out, args.quiet), created(args.out):  # without --overwrite: refused if another run made it meanwhile
        save(args.out, index, store, replace=args.overwrite)
    t_save = time.perf_counter() - t0
    print(f"wrote {args.out}: {len(index):,} vectors, dim {dim}, metric {metric}, dtype {args.dtype}; "
          f"build {t_build:.1f} s ({(n - first) / max(t_build, 1e-9):,.0f}/s), save {t_save:.1f} s, "
          f"{path_bytes(args.out) / 2**20:,.1f} MiB on disk")
    return 0


# ============================================================================ search
def filter_mask(index, path: str) -> np.ndarray:
    from .files import DataError, open_keys_as_text, read_keys

    keys = read_keys(path, unique=False)
    n = index.node_count
    km = index.key_map
    if isinstance(keys, np.ndarray):  # int64, or ints past it
        ids = km.get_many(None, keys) if keys.dtype == np.int64 else km.get_many(keys.tolist())
        if not km.is_int:  # str keys that look like ints ("0042" is not 42: both are tried)
            ids = np.maximum(ids, km.get_many(open_keys_as_text(path)))
    else:
        ids = km.get_many(keys)
    mask = np.zeros(n, bool)
    mask[ids[ids >= 0]] = True
    if len(keys) and not mask.any():
        raise DataError(f"{path}: none of its {len(keys):,} keys is in the index")
    return mask


def search(args: argparse.Namespace) -> int:
    from .files import DataError, ProgressLine, check_out, open_index, open_vectors, results_paths, write_results

    if args.out:
        paths = results_paths(args.out)
        for p in paths:
            check_out(p, args.overwrite)
        if len(paths) == 1:  # a Zarr group replaces only results, before the search: not after it
            check_out_place(paths[0], "search_results")
    index, store, meta = open_index(args.index, verify=True)  # the vectors' checksums too: a damaged row would answer wrongly
    label = "qi8" if meta["vectors"].get("store") == "qi8" else str(meta["vectors"].get("dtype"))
    src = open_vectors(args.queries, "test")
    try:
        if src.dim != index.dim:
            raise DataError(f"{src.where}: queries have dimension {src.dim}, the index {args.index} has {index.dim}")
        flt = filter_mask(index, args.filter_keys) if args.filter_keys else None
        nq = src.n
        keys_out = dists_out = None
        # the queries are read once, a block at a time, each block checked before it is searched:
        # a file that changes while it is read (or a stream) cannot answer other rows than were checked
        blocks = checked_blocks(src, index.metric.normalize, SEARCH_BLOCK)
        first = next(blocks, None)  # a bad query in it fails here, before any search
        with first_use("search", label, args.quiet), block_rows(src.where, 0):  # the clock starts after compiling
            if first is not None:
                index.search_batch(store, first[1][:2], args.k, flt, ef=args.ef, num_threads=1, exact=args.exact)
        blocks, first = itertools.chain([first] if first is not None else [], blocks), None  # no reference kept past its search
        t0 = time.perf_counter()
        with ProgressLine(nq, "search", not args.quiet and nq > SEARCH_BLOCK) as bar:
            for start, block in blocks:
                with block_rows(src.where, start):
                    k, d = index.search_batch(store, block, args.k, flt, ef=args.ef, num_threads=args.threads, exact=args.exact)
                if keys_out is None:
                    keys_out = np.empty((nq, args.k), k.dtype)
                    dists_out = np.empty((nq, args.k), np.float32)
                keys_out[start : start + k.shape[0]] = k
                dists_out[start : start + k.shape[0]] = d
                bar.update(block.shape[0])
        elapsed = time.perf_counter() - t0
    finally:
        src.close()
    keys_out = result_keys(keys_out, index, args.out)  # a key the output would change: refused before writing
    if args.out:
        with finish_write(args.out, args.quiet), created(*paths):
            written = write_results(args.out, keys_out, dists_out, replace=args.overwrite)
        print(f"wrote {' and '.join(written)}: {nq:,} queries x k={args.k} "
              f"({nq / max(elapsed, 1e-9):,.0f} queries/s)")
    else:
        print_results(keys_out, dists_out)
        say(f"search: {nq:,} queries x k={args.k} in {elapsed:.2f} s", quiet=args.quiet)
    return 0


def result_keys(keys: np.ndarray | None, index, out: str | None) -> np.ndarray | None:
    """``search_batch``'s keys of ``index`` as ``--out`` writes them, or stdout prints them (``out`` None); the dtypes and
    what is refused (DataError, before anything is written): :mod:`hnsw_numba.cli.files`."""
    from ..core.keymap import MAX_INT_KEY_DIGITS, describe_key
    from .files import UINT64_PAD, DataError

    if keys is None or keys.dtype != object:
        return keys
    ints = not getattr(index.key_map, "has_str", True)  # padding -1 (keys_for's rule), else None
    for k in set(keys.ravel().tolist()) - {None, -1}:
        twin = (None if ints else str(k)) if type(k) is int else (  # what else the key's text names
            int(k) if k.isascii() and k.isdigit() and len(k) <= MAX_INT_KEY_DIGITS and str(int(k)) == k else None)
        if twin is not None and twin in index:
            raise DataError(f"{out or 'stdout'}: int key {k} and str key '{k}' are both in the index and read the same in results")
        if out and (k == "" or k[-1] == "\x00" if type(k) is str else ints and k >= UINT64_PAD):
            why = ("'' pads" if k == "" else "NumPy's unicode drops a trailing NUL") if type(k) is str else "uint64 below 2**64 - 1, which pads"
            raise DataError(f"{out}: key {describe_key(k)} cannot be written to the results ({why}); stdout (no --out) prints it")
    if out is None:
        return keys
    flat = keys.ravel().tolist()
    conv = [UINT64_PAD if k == -1 else k for k in flat] if ints else ["" if k is None else str(k) for k in flat]
    return np.array(conv, np.uint64 if ints else str).reshape(keys.shape)


def print_results(keys: np.ndarray, dists: np.ndarray) -> None:
    """'query rank key distance' rows, tab-separated; keys' backslashes, tabs and line breaks escaped (``KEY_ESCAPES``)."""
    from .files import KEY_ESCAPES

    out = sys.stdout
    out.write("query\trank\tkey\tdistance\n")
    for qi, (krow, drow) in enumerate(zip(keys.tolist(), dists.tolist())):
        for rank, (k, d) in enumerate(zip(krow, drow)):
            if k is None or k == -1:  # padding: no key is negative
                break
            out.write(f"{qi}\t{rank}\t{k.translate(KEY_ESCAPES) if type(k) is str else k}\t{d:.6g}\n")


# ============================================================================ info
def index_info(path: str, *, verify: bool = False) -> dict:
    """Everything ``hnsw-numba info`` reports, as plain JSON types."""
    from .files import open_index, path_bytes

    index, store, meta = open_index(path, verify=verify)
    if verify:
        index.check_integrity()
    st = index.stats()
    deg = np.asarray(st["degree_histogram_level0"], np.int64)
    live = int(st["live"])
    vec = meta["vectors"]
    if vec.get("store") == "qi8":
        dtype = "qi8"
    elif getattr(store, "walk_copy", False):  # as opened: rows float16 merges open without the copy
        dtype = "f32+f16"
    else:
        dtype = {v: k for k, v in DTYPES.items() if k != "f32+f16"}.get(str(vec.get("dtype")), str(vec.get("dtype")))
    graph_bytes = int(sum(v for k, v in st["bytes"].items() if k != "keys"))
    key_bytes = int(st["bytes"]["keys"])
    store_bytes = int(store.nbytes)
    cfg = index.config
    return {
        "path": path,
        "format_version": meta["root"].get("format_version"),
        "library_version": meta["root"].get("library_version"),
        "metric": index.metric.name.removesuffix("_qi8"),
        "dtype": dtype,
        "dim": index.dim,
        "count": live,
        "deleted": int(st["deleted"]),
        "node_count": int(st["node_count"]),
        "max_nodes": cfg.max_nodes,
        "keys": meta["graph"].get("keys"),
        "m": cfg.m,
        "ef_construction": cfg.ef_construction,
        "ef_search": cfg.ef_search,
        "levels": int(st["max_level"]) + 1 if st["node_count"] else 0,
        "level_histogram": st["level_histogram"],
        "degree_histogram_level0": st["degree_histogram_level0"],
        "degree_level0": {
            "min": int(np.flatnonzero(deg)[0]) if deg.sum() else 0,
            "mean": float((deg * np.arange(deg.shape[0])).sum() / deg.sum()) if deg.sum() else 0.0,
            "max": int(np.flatnonzero(deg)[-1]) if deg.sum() else 0,
        },
        "unreachable_live": int(st["unreachable_live"]),
        "landings_cut_off": int(st["landings_cut_off"]),
        "live_links_to_deleted_level0": int(st["live_links_to_deleted_level0"]),
        "memory_bytes": {"graph": graph_bytes, "keys": key_bytes, "vectors": store_bytes,
                         "total": graph_bytes + key_bytes + store_bytes},
        "disk_bytes": path_bytes(path),
        "verified": bool(verify),
    }


def mib(b: int) -> str:
    return f"{b / 2**20:,.1f} MiB"


def info(args: argparse.Namespace) -> int:
    info = index_info(args.index, verify=args.verify)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    mem = info["memory_bytes"]
    per = mem["total"] / max(info["node_count"], 1)
    dl = info["degree_level0"]
    hist = info["degree_histogram_level0"]
    lv = info["level_histogram"]
    rows = [
        ("index", info["path"]),
        ("format", f"hnsw_numba format {info['format_version']} (written by {info['library_version']})"),
        ("count", f"{info['count']:,} live, {info['deleted']:,} deleted (capacity {info['max_nodes']:,})"),
        ("vectors", f"dim {info['dim']}, dtype {info['dtype']}, metric {info['metric']}, {info['keys']} keys"),
        ("graph", f"m {info['m']} ({2 * info['m']} on level 0), ef_construction {info['ef_construction']}, ef_search {info['ef_search']}"),
        ("levels", f"{info['levels']}; nodes per top level: {', '.join(f'{c:,}' for c in lv)}"),
        ("degree (level 0)", f"min {dl['min']}, mean {dl['mean']:.1f}, max {dl['max']}"),
        ("degree histogram", " ".join(f"{d}:{c}" for d, c in enumerate(hist) if c) or "-"),
        ("health", f"{info['unreachable_live']:,} unreachable live nodes, {info['landings_cut_off']:,} landing nodes cut off, "
                   f"{info['live_links_to_deleted_level0']:,} links to deleted nodes"),
        ("memory", f"{mib(mem['total'])} (graph {mib(mem['graph'])}, keys {mib(mem['keys'])}, vectors {mib(mem['vectors'])}; {per:,.0f} B/vector)"),
        ("disk", mib(info["disk_bytes"])),
    ]
    if info["verified"]:
        rows.append(("verified", "checksums and graph invariants OK"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ============================================================================ bench
def bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


# ============================================================================ convert-hnswlib
def check_space(path: str, space: str, store, n: int, quiet: bool) -> None:
    """Refuse ``--space cosine`` for a file whose vectors are not unit length; note the reverse.

    hnswlib stores a cosine index's vectors normalised and records no space in the file, so
    a non-unit vector (zero vectors aside) shows that the file was built with l2 or ip: read
    as cosine, its answers would be wrong. An l2 or ip file whose vectors all have unit
    length may be a cosine index; it converts (the rankings agree on unit vectors), with a
    note on stderr.
    """
    from ..io.hnswlib_format import COSINE_FILE_TOLERANCE
    from .files import DataError

    cols = store.columns()
    data, written = cols["data"], cols["written"]
    bad = total = 0
    first_bad = None
    for start in range(0, n, 65536):  # chunks: no float64 copy of a large file at once
        rows = np.asarray(data[start : start + 65536], np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        live = (written[start : start + rows.shape[0]] != 0) & (norms > 0)
        off = live & (np.abs(norms - 1.0) > COSINE_FILE_TOLERANCE)  # the loader's rule (io.hnswlib_format)
        if first_bad is None and off.any():
            i = int(np.flatnonzero(off)[0])
            first_bad = (start + i, float(norms[i]))
        bad += int(off.sum())
        total += int(live.sum())
    if space == "cosine" and bad:
        raise DataError(f"{path}: --space cosine, but {bad:,} of {total:,} vectors are not unit length (row "
                        f"{first_bad[0]}: norm {first_bad[1]:.4g}); hnswlib normalises a cosine index's vectors, "
                        "so this file was built with space 'l2' or 'ip': give that --space")
    if space != "cosine" and total and not bad:
        say(f"convert-hnswlib: note: every vector of {path} has unit length, as in a cosine index; if "
            "hnswlib built it with space='cosine', convert with --space cosine", quiet=quiet)


def convert(args: argparse.Namespace) -> int:
    from .. import save
    from .files import DataError, check_out, path_bytes
    from ..core.errors import LegacyFormatError
    from ..core.metrics import metric_from_name

    check_out(args.out, args.overwrite)
    check_out_place(args.out, "index")
    if not os.path.lexists(args.file):
        raise DataError(f"{args.file}: no such file")
    if os.path.isdir(args.file):
        raise DataError(f"{args.file}: is a directory, expected an hnswlib index file")
    if not stat.S_ISREG(os.stat(args.file).st_mode):  # stat does not block on a FIFO; open would
        raise DataError(f"{args.file}: not a regular file (a pipe or device); an hnswlib index is read "
                        "from a file: save the stream to one first (e.g. cat > index.bin)")
    try:
        from ..io.hnswlib import load_hnswlib
    except ImportError as exc:  # pragma: no cover - legacy.py ships with the package
        raise DataError(f"convert-hnswlib is unavailable in this build: {exc}") from None
    t0 = time.perf_counter()
    refused = None
    try:
        index, store = load_hnswlib(metric_from_name(args.space), args.dim, args.file, mapped=False)
    except LegacyFormatError as exc:
        if getattr(exc, "check", None) != "unit-vectors":
            raise
        refused = exc  # read as it is, for check_space's account of the vectors and the --space to give
        index, store = load_hnswlib(metric_from_name("ip"), args.dim, args.file, mapped=False)
    except OSError as exc:
        raise DataError(f"{args.file}: cannot read: {exc.strerror or exc}") from None
    if getattr(index, "read_only", False):
        index, store = index.materialize(store)
    t_load = time.perf_counter() - t0
    check_space(args.file, args.space, store, index.node_count, args.quiet)
    if refused is not None:
        raise DataError(str(refused))
    check_out(args.out, args.overwrite)
    with finish_write(args.out, args.quiet), created(args.out):  # without --overwrite: refused if another run made it meanwhile
        save(args.out, index, store, replace=args.overwrite)
    print(f"wrote {args.out}: {len(index):,} vectors ({index.deleted_count:,} deleted), dim {index.dim}, "
          f"metric {args.space}; read in {t_load:.1f} s, {path_bytes(args.out) / 2**20:,.1f} MiB on disk")
    return 0


# ============================================================================ parser
