"""The ``hnsw-numba`` command line (also ``python -m hnsw_numba``).

Subcommands: ``demo``, ``build``, ``search``, ``info``, ``bench``, ``convert-hnswlib``.
Exit status: 0 success, 1 a problem with the data or a file (one line on stderr naming
the file; ``--debug`` shows the traceback), 2 a usage error, 130 interrupted (Ctrl-C /
SIGINT: nothing is written). Progress goes to stderr, results to stdout or files; see
:mod:`hnsw_numba.cli.files` for the file formats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["main", "build_parser"]

PROG = "hnsw-numba"
EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "qi8": "qi8"}
_METRICS = ("l2", "cosine", "ip")
BUILD_BLOCK = 4096  # rows per insert_batch call: progress and Ctrl-C between blocks
SEARCH_BLOCK = 16384


class UsageError(Exception):
    """Arguments that parse but do not make sense together: exit status 2."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _say(*parts: Any, quiet: bool = False) -> None:
    if not quiet:
        print(*parts, file=sys.stderr, flush=True)


# ============================================================================ demo
def _demo(args: argparse.Namespace) -> int:
    from .. import Cosine, Hnsw, HnswConfig, InMemoryVectorStore, L2
    from ..datasets import clustered_embeddings

    n, dim, nq = args.n, args.dim, args.queries
    print(f"hnsw_numba demo: {n:,} generated {dim}-d embeddings, {nq} queries, metric {args.metric}")
    data, queries = clustered_embeddings(n, dim, n_queries=nq, seed=args.seed)
    metric = {"l2": L2(), "cosine": Cosine()}[args.metric]
    t = time.perf_counter()
    index = Hnsw(metric, HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=args.seed))
    store = InMemoryVectorStore(dim, n)
    index.insert_batch(store, np.arange(100), data[:100])  # first call compiles or loads the cache
    index.search_batch(store, queries[:2], 10)
    index.search(store, queries[0], 10)
    index.search_batch(store, queries[:2], 10, exact=True)
    t_jit = time.perf_counter() - t
    print(f"  compile / cache load: {t_jit:.1f} s")
    t = time.perf_counter()
    index.insert_batch(store, np.arange(100, n), data[100:])
    t_build = time.perf_counter() - t
    print(f"  build: {t_build:.1f} s ({n / t_build:,.0f} inserts/s, all cores)")
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
        for q in queries[:200]:
            index.search(store, q, 10, ef=ef)
        single = 200 / (time.perf_counter() - t)
        rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(keys.tolist(), truth.tolist())])
        print(f"  {ef:6d}  {rec:9.4f}  {qps:9,.0f}  {single:10,.0f}")
    return 0


# ============================================================================ build
def _make_index(metric_name: str, dtype: str, dim: int, n: int, m: int, efc: int, seed: int | None):
    from .. import Hnsw, HnswConfig, InMemoryQi8VectorStore, InMemoryVectorStore
    from ..core.errors import InvalidParameterError
    from ..core.metrics import metric_from_name

    try:
        config = HnswConfig(dim=dim, max_nodes=n, m=m, ef_construction=efc, seed=seed)
    except InvalidParameterError as exc:
        raise UsageError(str(exc)) from None
    if dtype == "qi8":
        index = Hnsw(metric_from_name(f"{metric_name}_qi8"), config)
        store = InMemoryQi8VectorStore(dim, n)
    else:
        index = Hnsw(metric_from_name(metric_name), config)
        store = InMemoryVectorStore(dim, n, dtype=_DTYPES[dtype])
    return index, store


def _build(args: argparse.Namespace) -> int:
    from .. import save
    from .files import ProgressLine, check_out, open_vectors, path_bytes, read_keys

    check_out(args.out, args.overwrite)
    src = open_vectors(args.input, "train")
    try:
        n, dim = src.n, src.dim
        metric = args.metric or src.metric_hint or "l2"
        keys = read_keys(args.keys, n) if args.keys else np.arange(n, dtype=np.int64)
        index, store = _make_index(metric, args.dtype, dim, n, args.m, args.ef_construction, args.seed)
        _say(f"build: {src.where}: {n:,} x {dim} -> {args.out} (metric {metric}, dtype {args.dtype}, "
             f"m {args.m}, ef_construction {args.ef_construction})", quiet=args.quiet)
        src.check_finite()  # a bad row fails now, not after minutes of building
        t0 = time.perf_counter()
        with ProgressLine(n, "build", not args.quiet) as bar:
            for start, block in src.blocks(BUILD_BLOCK):
                stop = start + block.shape[0]
                index.insert_batch(store, keys[start:stop], block, num_threads=args.threads, progress=False)
                bar.update(block.shape[0])
        t_build = time.perf_counter() - t0
    finally:
        src.close()
    check_out(args.out, args.overwrite)  # appeared while building?
    t0 = time.perf_counter()
    save(args.out, index, store)
    t_save = time.perf_counter() - t0
    print(f"wrote {args.out}: {len(index):,} vectors, dim {dim}, metric {metric}, dtype {args.dtype}; "
          f"build {t_build:.1f} s ({n / max(t_build, 1e-9):,.0f}/s), save {t_save:.1f} s, "
          f"{path_bytes(args.out) / 2**20:,.1f} MiB on disk")
    return 0


# ============================================================================ search
def _filter_mask(index, path: str) -> np.ndarray:
    from .files import DataError, open_keys_as_text, read_keys

    keys = read_keys(path, unique=False)
    n = index.node_count
    km = index.key_map
    if isinstance(keys, np.ndarray):
        ids = km.get_many(None, keys)
        if not km.is_int:  # str keys that look like ints ("0042" is not 42: both are tried)
            ids = np.maximum(ids, km.get_many(open_keys_as_text(path)))
    else:
        ids = km.get_many(keys)
    mask = np.zeros(n, bool)
    mask[ids[ids >= 0]] = True
    if len(keys) and not mask.any():
        raise DataError(f"{path}: none of its {len(keys):,} keys is in the index")
    return mask


def _search(args: argparse.Namespace) -> int:
    from .files import DataError, ProgressLine, check_out, open_index, open_vectors, results_paths, write_results

    if args.out:
        for p in results_paths(args.out):
            check_out(p, args.overwrite)
    index, store, _ = open_index(args.index)
    src = open_vectors(args.queries, "test")
    try:
        if src.dim != index.dim:
            raise DataError(f"{src.where}: queries have dimension {src.dim}, the index {args.index} has {index.dim}")
        flt = _filter_mask(index, args.filter_keys) if args.filter_keys else None
        nq = src.n
        keys_out = dists_out = None
        t0 = time.perf_counter()
        with ProgressLine(nq, "search", not args.quiet and nq > SEARCH_BLOCK) as bar:
            for start, block in src.blocks(SEARCH_BLOCK):
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
    if args.out:
        written = write_results(args.out, keys_out, dists_out)
        print(f"wrote {' and '.join(written)}: {nq:,} queries x k={args.k} "
              f"({nq / max(elapsed, 1e-9):,.0f} queries/s)")
    else:
        _print_results(keys_out, dists_out)
        _say(f"search: {nq:,} queries x k={args.k} in {elapsed:.2f} s", quiet=args.quiet)
    return 0


def _print_results(keys: np.ndarray, dists: np.ndarray) -> None:
    out = sys.stdout
    out.write("query\trank\tkey\tdistance\n")
    pad_int = keys.dtype != object
    for qi, (krow, drow) in enumerate(zip(keys.tolist(), dists.tolist())):
        for rank, (k, d) in enumerate(zip(krow, drow)):
            if (pad_int and k == -1 and d == float("inf")) or k is None:
                break
            out.write(f"{qi}\t{rank}\t{k}\t{d:.6g}\n")


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
    dtype = "qi8" if vec.get("store") == "qi8" else {v: k for k, v in _DTYPES.items()}.get(str(vec.get("dtype")), str(vec.get("dtype")))
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
        "live_links_to_deleted_level0": int(st["live_links_to_deleted_level0"]),
        "memory_bytes": {"graph": graph_bytes, "keys": key_bytes, "vectors": store_bytes,
                         "total": graph_bytes + key_bytes + store_bytes},
        "disk_bytes": path_bytes(path),
        "verified": bool(verify),
    }


def _mib(b: int) -> str:
    return f"{b / 2**20:,.1f} MiB"


def _info(args: argparse.Namespace) -> int:
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
        ("health", f"{info['unreachable_live']:,} unreachable live nodes, {info['live_links_to_deleted_level0']:,} links to deleted nodes"),
        ("memory", f"{_mib(mem['total'])} (graph {_mib(mem['graph'])}, keys {_mib(mem['keys'])}, vectors {_mib(mem['vectors'])}; {per:,.0f} B/vector)"),
        ("disk", _mib(info["disk_bytes"])),
    ]
    if info["verified"]:
        rows.append(("verified", "checksums and graph invariants OK"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ============================================================================ bench
def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


# ============================================================================ convert-hnswlib
def _convert(args: argparse.Namespace) -> int:
    from .. import save
    from .files import DataError, check_out, path_bytes
    from ..core.metrics import metric_from_name

    check_out(args.out, args.overwrite)
    if not os.path.lexists(args.file):
        raise DataError(f"{args.file}: no such file")
    if os.path.isdir(args.file):
        raise DataError(f"{args.file}: is a directory, expected an hnswlib index file")
    try:
        from ..io.hnswlib import load_hnswlib
    except ImportError as exc:  # pragma: no cover - legacy.py ships with the package
        raise DataError(f"convert-hnswlib is unavailable in this build: {exc}") from None
    t0 = time.perf_counter()
    try:
        index, store = load_hnswlib(metric_from_name(args.space), args.dim, args.file)
    except OSError as exc:
        raise DataError(f"{args.file}: cannot read: {exc.strerror or exc}") from None
    if getattr(index, "read_only", False):
        index, store = index.materialize(store)
    t_load = time.perf_counter() - t0
    check_out(args.out, args.overwrite)
    save(args.out, index, store)
    print(f"wrote {args.out}: {len(index):,} vectors ({index.deleted_count:,} deleted), dim {index.dim}, "
          f"metric {args.space}; read in {t_load:.1f} s, {path_bytes(args.out) / 2**20:,.1f} MiB on disk")
    return 0


# ============================================================================ parser
_EXIT_NOTE = """
exit status: 0 success, 1 bad data or file (one line on stderr; --debug for the traceback),
2 usage error, 130 interrupted (nothing written)."""

_INPUT_NOTE = """
inputs: .npy (2-D numeric), .fvecs, HDF5 (ann-benchmarks: 'train' for build, 'test' for
search; FILE.hdf5:NAME for another dataset), a Zarr array directory (GROUP.zarr:NAME for an
array of a group). Keys files: .npy (1-D int or str) or text, one key per line (ints when
every line is an integer)."""


def build_parser() -> argparse.ArgumentParser:
    from ..core.version import __version__

    p = argparse.ArgumentParser(
        prog=PROG,
        description="HNSW approximate nearest neighbours, Numba-compiled.",
        epilog="examples:\n"
        f"  {PROG} demo\n"
        f"  {PROG} build vectors.npy --out index.zarr --metric cosine\n"
        f"  {PROG} search index.zarr queries.npy --k 10 --out results\n"
        f"  {PROG} info index.zarr\n"
        f"  {PROG} SUBCOMMAND --help\n" + _EXIT_NOTE,
        formatter_class=_formatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress or notes on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def add(name: str, help: str, description: str, examples: list[str], func) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "\n".join(f"  {PROG} {name} {e}".rstrip() for e in examples) + "\n" + _EXIT_NOTE
        sp = sub.add_parser(name, help=help, description=description, epilog=epilog,
                            formatter_class=_formatter, parents=[common])
        sp.set_defaults(func=func, parser_=sp)
        return sp

    d = add("demo", "build and query an index on generated data; prints recall and speed",
            "Build an index on generated clustered embeddings (no download), then print recall@10 "
            "against brute force, build time and queries/s.",
            ["", "--n 20000 --queries 500", "--n 50000 --dim 128 --metric l2"], _demo)
    d.add_argument("--n", type=_positive, default=50_000, help="vectors to index (default 50,000)")
    d.add_argument("--dim", type=_positive, default=128, help="dimension (default 128)")
    d.add_argument("--queries", type=_positive, default=1000, help="queries (default 1,000)")
    d.add_argument("--metric", choices=["l2", "cosine"], default="cosine")
    d.add_argument("--seed", type=int, default=0)

    b = add("build", "build an index from a file of vectors and save it (Zarr)",
            "Build an HNSW index over every row of INPUT (keys: row numbers, or --keys) and save "
            "it with hnsw_numba.save: a directory, or one file if OUT ends in .zip. Progress on "
            "stderr; Ctrl-C stops without writing anything.\n" + _INPUT_NOTE,
            ["vectors.npy --out index.zarr",
             "glove-100-angular.hdf5 --out glove.zarr            # 'train', metric from the file",
             "data.h5:embeddings --out idx.zarr --metric cosine --dtype f16 --keys ids.txt",
             "base.fvecs --out sift.zip --m 32 --ef-construction 400 --threads 8",
             "store.zarr:emb --out idx.zarr --dtype qi8 --overwrite"], _build)
    b.add_argument("input", metavar="INPUT", help="vectors: FILE.npy, FILE.fvecs, FILE.hdf5[:NAME], DIR.zarr[:NAME]")
    b.add_argument("--out", required=True, metavar="INDEX", help="where to save the index (a directory, or FILE.zip)")
    b.add_argument("--metric", choices=_METRICS, default=None,
                   help="distance (default: an ann-benchmarks file's own, else l2)")
    b.add_argument("--dtype", choices=list(_DTYPES), default="f32",
                   help="vector storage: f32 (default), f16 / bf16 (half the memory), qi8 (int8, a quarter)")
    b.add_argument("--m", type=_positive, default=16, help="links per node (2*m on level 0; default 16)")
    b.add_argument("--ef-construction", type=_positive, default=200, help="beam width while building (default 200)")
    b.add_argument("--threads", type=_positive, default=None, help="threads (default: all cores)")
    b.add_argument("--keys", metavar="FILE", help="one key per input row: .npy or text, one per line")
    b.add_argument("--seed", type=int, default=None, help="seed of the level generator (reproducible graphs)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing INDEX (atomically)")

    s = add("search", "k nearest neighbours of every query row",
            "Search the saved INDEX (its metric is read from the index) for every row of QUERIES. "
            "Without --out, prints 'query rank key distance' lines (tab-separated) on stdout. With "
            "--out RESULTS: RESULTS.zarr writes a Zarr group with arrays 'keys' and 'distances'; "
            "anything else is a prefix of RESULTS.keys.npy (int64, padding -1; or unicode, padding '') "
            "and RESULTS.distances.npy (float32, padding inf), shape (queries, k), best first.\n" + _INPUT_NOTE,
            ["index.zarr queries.npy --k 10 --out results     # results.keys.npy, results.distances.npy",
             "index.zarr glove.hdf5 --k 100 --ef 200 --out res.zarr   # the file's 'test' queries",
             "index.zarr q.fvecs --k 5 --filter-keys allowed.txt",
             "index.zarr q.npy --exact --out truth --overwrite"], _search)
    s.add_argument("index", metavar="INDEX", help="a saved index (directory or .zip)")
    s.add_argument("queries", metavar="QUERIES", help="query vectors, same formats as build's INPUT ('test' in HDF5)")
    s.add_argument("--k", type=_positive, default=10, help="neighbours per query (default 10)")
    s.add_argument("--ef", type=_positive, default=None, help="beam width (default: the index's ef_search); raise for recall")
    s.add_argument("--filter-keys", metavar="FILE", help="return only these keys (.npy or text, one per line)")
    s.add_argument("--exact", action="store_true", help="brute force instead of the graph (ground truth)")
    s.add_argument("--threads", type=_positive, default=None, help="threads (default: all cores)")
    s.add_argument("--out", metavar="RESULTS", help="RESULTS.zarr, or a prefix for two .npy files (default: stdout)")
    s.add_argument("--overwrite", action="store_true", help="replace existing result files")

    i = add("info", "describe a saved index",
            "Count, deleted, dim, dtype, metric, levels, degree histogram, memory and format "
            "version of a saved index.",
            ["index.zarr", "index.zarr --json | jq .count", "index.zip --verify"], _info)
    i.add_argument("index", metavar="INDEX", help="a saved index (directory or .zip)")
    i.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    i.add_argument("--verify", action="store_true", help="also verify the vectors' checksums and the graph invariants")

    be = add("bench", "recall and speed against the installed peers on an ann-benchmarks file",
             "Build hnsw_numba and every installed peer (hnswlib, faiss, usearch) with the same m and "
             "ef_construction on DATASET's 'train', then report build time, recall@k and queries/s "
             "for each ef on its 'test' queries, with ratios against hnswlib. Ground truth: the "
             "file's 'neighbors' (recomputed by brute force with --limit).",
             ["glove-100-angular.hdf5", "words.hdf5 --ef 16,32,64 --peers hnswlib,faiss",
              "sift-128-euclidean.hdf5 --limit 50000 --queries 1000 --json"], _bench)
    be.add_argument("dataset", metavar="DATASET.hdf5", help="ann-benchmarks HDF5 (train, test, neighbors, attrs distance)")
    be.add_argument("--ef", default="16,32,64,128", help="comma-separated ef values (default 16,32,64,128)")
    be.add_argument("--peers", default="hnswlib,faiss,usearch", help="peers to include when installed (default all)")
    be.add_argument("--m", type=_positive, default=16)
    be.add_argument("--ef-construction", type=_positive, default=200)
    be.add_argument("--k", type=_positive, default=10)
    be.add_argument("--threads", type=_positive, default=None, help="threads (default: all cores)")
    be.add_argument("--limit", type=_positive, default=None, help="index only the first N train rows")
    be.add_argument("--queries", type=_positive, default=None, help="use only the first N test queries")
    be.add_argument("--single", type=int, default=200, help="queries timed one call at a time (0: skip)")
    be.add_argument("--json", action="store_true", help="JSON on stdout instead of the table")

    c = add("convert-hnswlib", "convert an index saved by hnswlib into this library's format",
            "Read an index file written by hnswlib's save_index (validated: a corrupt or hostile "
            "file is refused) and save it as a hnsw_numba index, keeping keys (labels), deleted "
            "marks and links. hnswlib's file does not record the space, so give it.",
            ["old.bin --dim 384 --space cosine --out index.zarr"], _convert)
    c.add_argument("file", metavar="FILE", help="hnswlib index file (Index.save_index)")
    c.add_argument("--dim", type=_positive, default=None,
                   help="vector dimension the hnswlib index was built with (checked against the file; default: read from it)")
    c.add_argument("--space", choices=_METRICS, required=True, help="hnswlib space: l2, ip or cosine")
    c.add_argument("--out", required=True, metavar="INDEX", help="where to save (a directory, or FILE.zip)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing INDEX")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_DATA


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hnsw-numba`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .files import DataError
    from ..core.errors import HnswError

    try:
        return int(args.func(args))
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as cat does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{PROG}: interrupted; nothing was written", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        if args.debug:
            raise
        sub = args.parser_
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except (DataError, HnswError) as exc:
        if args.debug:
            raise
        return _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except MemoryError:
        if args.debug:
            raise
        return _fail("out of memory (a smaller --dtype, or fewer rows, may fit)")
    except Exception as exc:  # a bug: say so in one line, the traceback with --debug
        if args.debug:
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
