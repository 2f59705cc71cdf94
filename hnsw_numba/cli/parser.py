"""The argument parser of ``hnsw-numba``: subcommands, options, help text and examples."""

from __future__ import annotations

import argparse
import textwrap

from .common import DTYPES, METRICS, PROG, formatter, int_in, positive

__all__ = ["build_parser"]


_EXIT_NOTE = """
exit status: 0 success, 1 bad data or file (one line on stderr; --debug for the traceback),
2 usage error (values out of range too), 130 interrupted (one line: nothing was written, or
what was written whole). --quiet and --debug go before or after the subcommand."""

_INPUT_NOTE = """
inputs: .npy (2-D numeric), .fvecs / .bvecs / .ivecs, HDF5 (ann-benchmarks: 'train' for build,
'test' for search; FILE.hdf5:NAME for another dataset), a Zarr array directory (GROUP.zarr:NAME
for an array of a group), Parquet (FILE.parquet:COLUMN; needs pyarrow), fsspec URLs. Keys
files: .npy (1-D int or str) or text, one key per line (ints when every line is ASCII digits,
with an optional sign; int keys past int64 too)."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; ``args.func`` names the function of :mod:`.commands` to run.

    Ranges are checked here against the library's limits, so a value out of range is a usage
    error (exit 2) before anything is read. Nothing heavy is imported: the subcommand's
    modules load when it runs.
    """
    from ..core.config import MAX_DIM, MAX_EF, MAX_M, MAX_NODES
    from ..core.version import __version__

    MAX_SEED = 2**63 - 1  # HnswConfig's range: the level generator takes a non-negative int64

    p = argparse.ArgumentParser(
        prog=PROG,
        description="HNSW approximate nearest neighbours, Numba-compiled.",
        epilog="examples:\n"
        f"  {PROG} demo\n"
        f"  {PROG} build vectors.npy --out index.zarr --metric cosine\n"
        f"  {PROG} search index.zarr queries.npy --k 10 --out results\n"
        f"  {PROG} info index.zarr\n"
        f"  {PROG} SUBCOMMAND --help\n" + _EXIT_NOTE,
        formatter_class=formatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Global options go before or after the subcommand: the subcommands' copies leave the
    # value alone unless given (SUPPRESS), so one given before the subcommand survives.
    common = argparse.ArgumentParser(add_help=False)
    for parser, default in ((p, False), (common, argparse.SUPPRESS)):
        parser.add_argument("--debug", action="store_true", default=default, help="show the full traceback on errors")
        parser.add_argument("--quiet", "-q", action="store_true", default=default, help="no progress or notes on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND",
                           help=f"one of these (each has its own --help: {PROG} SUBCOMMAND --help)")

    def add(name: str, help: str, description: str, examples: list[str], func: str) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "\n".join(f"  {PROG} {name} {e}".rstrip() for e in examples) + "\n" + _EXIT_NOTE
        first, _, rest = description.partition("\n")  # the first paragraph wrapped; notes as written
        description = textwrap.fill(first, 88) + (f"\n{rest}" if rest else "")
        sp = sub.add_parser(name, help=help, description=description, epilog=epilog,
                            formatter_class=formatter, parents=[common])
        sp.set_defaults(func=func, parser_=sp)
        return sp

    d = add("demo", "build and query an index on generated data; prints recall and speed",
            "Build an index on generated clustered embeddings (no download), then print recall@10 "
            "against brute force, build time and queries/s.",
            ["", "--n 20000 --queries 500", "--n 50000 --dim 128 --metric l2"], "demo")
    d.add_argument("--n", type=int_in("--n", 1, MAX_NODES), default=50_000, help="vectors to index (default 50,000)")
    d.add_argument("--dim", type=int_in("--dim", 1, MAX_DIM), default=128, help="dimension (default 128)")
    d.add_argument("--queries", type=positive, default=1000, help="queries (default 1,000)")
    d.add_argument("--metric", choices=["l2", "cosine"], default="cosine", help="distance (default cosine)")
    d.add_argument("--seed", type=int_in("seed", 0, MAX_SEED), default=0, help="seed of the generated data and of the level generator (default 0)")

    b = add("build", "build an index from a file of vectors and save it (Zarr)",
            "Build an HNSW index over every row of INPUT (keys: row numbers, or --keys) and save "
            "it with hnsw_numba.save: a directory, or one file if INDEX ends in .zip. Progress on "
            "stderr. Ctrl-C before the save writes nothing; during it, the save finishes first (a "
            "second Ctrl-C abandons it) and the message says so.\n" + _INPUT_NOTE,
            ["vectors.npy --out index.zarr",
             "glove-100-angular.hdf5 --out glove.zarr            # 'train', metric from the file",
             "data.h5:embeddings --out idx.zarr --metric cosine --dtype f16 --keys ids.txt",
             "base.fvecs --out sift.zip --m 32 --ef-construction 400 --threads 8",
             "store.zarr:emb --out idx.zarr --dtype qi8 --overwrite"], "build")
    b.add_argument("input", metavar="INPUT", help="vectors: FILE.npy, FILE.fvecs, FILE.hdf5[:NAME], DIR.zarr[:NAME], FILE.parquet[:COLUMN]")
    b.add_argument("--out", required=True, metavar="INDEX", help="where to save the index (a directory, or FILE.zip)")
    b.add_argument("--metric", choices=METRICS, default=None,
                   help="distance (default: an ann-benchmarks file's own, else l2)")
    b.add_argument("--dtype", choices=list(DTYPES), default="f32",
                   help="vector storage: f32 (default), f16 / bf16 (half the memory), qi8 (int8, a quarter), "
                        "f32+f16 (float32 and a float16 copy for faster walks: 1.5x the memory)")
    b.add_argument("--m", type=int_in("m", 2, MAX_M), default=16, help="links per node (2*m on level 0; default 16)")
    b.add_argument("--ef-construction", type=int_in("ef_construction", 1, MAX_EF), default=200, help="beam width while building (default 200)")
    b.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    b.add_argument("--keys", metavar="FILE", help="one key per input row: .npy or text, one per line")
    b.add_argument("--seed", type=int_in("seed", 0, MAX_SEED), default=None, help="seed of the level generator (reproducible graphs)")
    b.add_argument("--no-reorder", dest="reorder", action="store_false",
                   help="keep the NodeIds in input order (default: renumber neighbours together once built, faster searches)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing INDEX (atomically)")

    s = add("search", "k nearest neighbours of every query row",
            "Search the saved INDEX (its metric is read from the index) for every row of QUERIES. "
            "Without --out, prints 'query rank key distance' lines (tab-separated; backslashes, tabs and line "
            "breaks in keys escaped as in Python: \\\\, \\t, \\n, ...) on stdout. With "
            "--out RESULTS: RESULTS.zarr writes a Zarr group with arrays 'keys' and 'distances'; "
            "anything else (not a directory) is a prefix of RESULTS.keys.npy (int64, padding -1; uint64 when int "
            "keys go past int64, padding 2**64-1; or unicode when keys are str, ints in decimal, padding '') "
            "and RESULTS.distances.npy (float32, padding inf), shape (queries, k), best first. A key the "
            "output would change or read as another is refused before anything is written: int 1 and str "
            "'1' both in the index; in files an int >= 2**64-1, a str '' or ending in NUL.\n" + _INPUT_NOTE,
            ["index.zarr queries.npy --k 10 --out results     # results.keys.npy, results.distances.npy",
             "index.zarr glove.hdf5 --k 100 --ef 200 --out res.zarr   # the file's 'test' queries",
             "index.zarr q.fvecs --k 5 --filter-keys allowed.txt",
             "index.zarr q.npy --exact --out truth --overwrite"], "search")
    s.add_argument("index", metavar="INDEX", help="a saved index (directory or .zip)")
    s.add_argument("queries", metavar="QUERIES", help="query vectors, same formats as build's INPUT ('test' in HDF5)")
    s.add_argument("--k", type=int_in("k", 1, MAX_EF), default=10, help="neighbours per query (default 10)")
    s.add_argument("--ef", type=int_in("ef", 1, MAX_EF), default=None, help="beam width (default: the index's ef_search); raise for recall")
    s.add_argument("--filter-keys", metavar="FILE", help="return only these keys (.npy or text, one per line)")
    s.add_argument("--exact", action="store_true", help="brute force instead of the graph (ground truth)")
    s.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    s.add_argument("--out", metavar="RESULTS", help="RESULTS.zarr, or a prefix for two .npy files (default: stdout)")
    s.add_argument("--overwrite", action="store_true", help="replace existing result files")

    i = add("info", "describe a saved index",
            "Count, deleted, dim, dtype, metric, levels, degree histogram, memory and format "
            "version of a saved index.",
            ["index.zarr", "index.zarr --json | jq .count", "index.zip --verify"], "info")
    i.add_argument("index", metavar="INDEX", help="a saved index (directory or .zip)")
    i.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    i.add_argument("--verify", action="store_true", help="also verify the vectors' checksums and the graph invariants")

    be = add("bench", "recall and speed against the installed peers on an ann-benchmarks file",
             "Build hnsw_numba and every installed peer (hnswlib, faiss, usearch) with the same m and "
             "ef_construction on DATASET's 'train', then report build time, recall@k and queries/s "
             "for each ef on its 'test' queries, with ratios against hnswlib. Ground truth: the "
             "file's 'neighbors' (recomputed by brute force with --limit).",
             ["glove-100-angular.hdf5", "words.hdf5 --ef 16,32,64 --peers hnswlib,faiss",
              "sift-128-euclidean.hdf5 --limit 50000 --queries 1000 --json"], "bench")
    be.add_argument("dataset", metavar="DATASET.hdf5", help="ann-benchmarks HDF5 (train, test, neighbors, attrs distance)")
    be.add_argument("--ef", default="16,32,64,128", help="comma-separated ef values, one row each (default 16,32,64,128)")
    be.add_argument("--peers", default="hnswlib,faiss,usearch",
                    help="comma-separated peers, each run when installed (default hnswlib,faiss,usearch; '' for none)")
    be.add_argument("--m", type=int_in("m", 2, MAX_M), default=16, help="links per node, every library (default 16)")
    be.add_argument("--ef-construction", type=int_in("ef_construction", 1, MAX_EF), default=200,
                    help="beam width while building, every library (default 200)")
    be.add_argument("--k", type=int_in("k", 1, MAX_EF), default=10, help="neighbours per query; recall@k (default 10)")
    be.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    be.add_argument("--limit", type=positive, default=None, help="index only the first N train rows")
    be.add_argument("--queries", type=positive, default=None, help="use only the first N test queries")
    be.add_argument("--single", type=int_in("--single", 0, MAX_NODES), default=200,
                    help="queries timed one call at a time (default 200; 0: skip)")
    be.add_argument("--repeat", type=int_in("--repeat", 1, 1000), default=2,
                    help="timed runs of every measurement; the best is reported (default 2)")
    be.add_argument("--json", action="store_true", help="JSON on stdout instead of the table")

    c = add("convert-hnswlib", "convert an index saved by hnswlib into this library's format",
            "Read an index file written by hnswlib's save_index (validated: a corrupt or hostile "
            "file is refused) and save it as a hnsw_numba index, keeping keys (labels), deleted "
            "marks and links. hnswlib's file does not record the space, so give it: with --space cosine "
            "the vectors must have unit length (hnswlib stores them normalised), else the file is refused. "
            "FILE is a regular file (not a pipe such as /dev/stdin).",
            ["old.bin --dim 384 --space cosine --out index.zarr"], "convert")
    c.add_argument("file", metavar="FILE", help="hnswlib index file (Index.save_index)")
    c.add_argument("--dim", type=int_in("--dim", 1, MAX_DIM), default=None,
                   help="vector dimension the hnswlib index was built with (checked against the file; default: read from it)")
    c.add_argument("--space", choices=METRICS, required=True, help="hnswlib space: l2, ip or cosine")
    c.add_argument("--out", required=True, metavar="INDEX", help="where to save (a directory, or FILE.zip)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing INDEX")
    return p
