"""Save / load speed of hnsw_numba.io.persist vs np.save / np.load of the same arrays.

Usage: python benchmarks/bench_persist.py [--n 1000000] [--dim 128] [--m 16] [--dir /tmp]

Building a 1M-node index takes long on 2 cores and only I/O is measured, so the graph is
synthetic but valid: levels drawn as the index draws them, level-0 lists of m..2m distinct
random neighbours, upper lists linking nodes of each level in a ring. It passes every
load-time check (the same checks run on it as on a built index). Vectors are random f32.

Each measurement is the best of ``--repeat`` runs. "Hot" reads come from the page cache;
"cold" reads follow ``posix_fadvise(DONTNEED)`` on every file (pages were flushed first),
which makes the kernel read them from disk again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, Table, machine

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.io.checks import check_keys, validate_graph  # noqa: E402
from hnsw_numba.core.graph import Graph, draw_levels  # noqa: E402
from hnsw_numba.kernels.integrity import check_graph_kernel  # noqa: E402
from hnsw_numba.core.keymap import KeyMap  # noqa: E402
from hnsw_numba.kernels.layout import H_ENTRY, H_MAX_LEVEL, H_UPPER_USED  # noqa: E402


def synthetic_index(n: int, dim: int, m: int, seed: int = 0) -> tuple[hn.Hnsw, hn.InMemoryVectorStore]:
    """A valid graph of ``n`` nodes built directly (no inserts) and random f32 vectors."""
    rng = np.random.default_rng(seed)
    config = hn.HnswConfig(dim=dim, max_nodes=n, m=m, seed=seed)
    g = Graph.empty(n, m)
    levels = draw_levels(rng, n, config.level_mult)
    words = g.upper_words_needed(levels)
    if not g.upper_fits(words):
        g.grow_upper(words)
    g.allocate(levels)
    a = g.arrays
    m0 = 2 * m
    cols = np.arange(m0)
    for r0 in range(0, n, 1 << 17):  # level 0: m..2m consecutive ids after a random offset
        r1 = min(r0 + (1 << 17), n)
        cnt = rng.integers(m, m0 + 1, r1 - r0)
        off = rng.integers(1, n - m0, r1 - r0)
        ids = (np.arange(r0, r1)[:, None] + off[:, None] + cols[None, :]) % n
        a.links0[r0:r1, 0] = cnt
        a.links0[r0:r1, 1:] = np.where(cols[None, :] < cnt[:, None], ids, 0)
    for lev in range(1, int(levels.max()) + 1):  # upper levels: a ring over the level's nodes
        nodes = np.flatnonzero(levels >= lev)
        k = nodes.shape[0]
        c = min(m, k - 1)
        base = a.upper_start[nodes] + (lev - 1) * (m + 1)
        a.upper_links[base] = c
        if c > 0:
            nb = nodes[(np.arange(k)[:, None] + 1 + np.arange(c)[None, :]) % k]
            a.upper_links[base[:, None] + 1 + np.arange(c)[None, :]] = nb
    entry = int(np.argmax(levels))
    a.header[H_ENTRY], a.header[H_MAX_LEVEL] = entry, int(levels[entry])
    keys = np.arange(n, dtype=np.int64)
    index = hn.Hnsw.from_parts(hn.L2(), config, a, KeyMap.from_node_keys(keys, n, g.capacity))
    store = hn.InMemoryVectorStore.from_array(rng.standard_normal((n, dim), dtype=np.float32))
    return index, store


def _arrays(index: hn.Hnsw, store: hn.InMemoryVectorStore) -> dict[str, np.ndarray]:
    a, n = index.graph_arrays, index.node_count
    return {
        "levels": a.levels[:n], "links0": a.links0[:n], "upper_start": a.upper_start[:n],
        "upper_links": a.upper_links[: int(a.header[H_UPPER_USED])], "tombstones": a.tombstones[:n],
        "header": a.header, "keys": index.key_map.node_keys[:n], "vectors": store._data[:n],
        "written": store._written[:n],
    }


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _drop_cache(root: Path) -> None:
    _fsync_tree(root)
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def best(fn, repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/persist.md")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    index, store = synthetic_index(a.n, a.dim, a.m)
    print(f"synthetic index built in {time.perf_counter() - t0:.1f}s", flush=True)
    arrays = _arrays(index, store)
    nbytes = sum(x.nbytes for x in arrays.values())
    mb = nbytes / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench_persist_", dir=a.dir))
    npy, zdir = work / "npy", work / "index.zarr"
    try:
        npy.mkdir()

        def np_save(sync: bool = False) -> None:
            for k, v in arrays.items():
                with open(npy / f"{k}.npy", "wb") as f:
                    np.save(f, v)
                    if sync:
                        f.flush()
                        os.fsync(f.fileno())

        def np_load() -> None:
            for k in arrays:
                np.load(npy / f"{k}.npy")

        hn.save(zdir, index, store, fsync=False)
        hn.load(zdir, hn.L2())  # compile / load check_graph_kernel before timing

        t = Table(["operation", "hnsw_numba", "MB/s", "np.save / np.load", "MB/s", "ratio"])

        def row(label: str, ours: float, ref: float) -> None:
            t.add(label, f"{ours:.3f} s", f"{mb / ours:,.0f}", f"{ref:.3f} s", f"{mb / ref:,.0f}", f"{ours / ref:.2f}x")
            print(t.rows[-1], flush=True)

        row("save (no fsync)", best(lambda: hn.save(zdir, index, store, fsync=False), a.repeat), best(np_save, a.repeat))
        row("save + fsync", best(lambda: hn.save(zdir, index, store), a.repeat), best(lambda: np_save(True), a.repeat))
        ref_hot = best(np_load, a.repeat)
        row("load, hot cache (validated)", best(lambda: hn.load(zdir, hn.L2()), a.repeat), ref_hot)
        row("load, cold cache (validated)", best(lambda: hn.load(zdir, hn.L2()), a.repeat, lambda: _drop_cache(zdir)),
            best(np_load, a.repeat, lambda: _drop_cache(npy)))
        row("load mmap=True, verify=False, hot", best(lambda: hn.load(zdir, hn.L2(), mmap=True, verify=False), a.repeat), ref_hot)
        row("load mmap=True (CRC checked), hot", best(lambda: hn.load(zdir, hn.L2(), mmap=True), a.repeat), ref_hot)

        # where the hot load's time goes
        from hnsw_numba.io.swap import resolve_target
        from hnsw_numba.io.zarr_io import open_reader

        def read_only() -> None:
            with open_reader(resolve_target(zdir, write=False)) as r:
                for k, v in arrays.items():
                    path = ("vectors/" if k in ("vectors", "written") else "graph/") + ("data" if k == "vectors" else k)
                    r.read_into(path, np.empty_like(v))

        g = index.graph_arrays
        n, used = index.node_count, int(g.header[H_UPPER_USED])
        phases = {
            "read + CRC of every chunk": best(read_only, a.repeat),
            "vectorised validation": best(lambda: validate_graph(g, n, a.m, used, "bench"), a.repeat),
            "check_graph_kernel": best(lambda: check_graph_kernel(g), a.repeat),
            "key uniqueness + key map": best(lambda: (check_keys(arrays["keys"], "bench"), KeyMap.from_node_keys(arrays["keys"], n, n)), a.repeat),
        }
        for k, v in phases.items():
            print(f"  {k}: {v:.3f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    md = (
        f"# Persistence speed\n\n{a.n:,} nodes x {a.dim} f32, m={a.m}: {mb:,.0f} MB of arrays (graph + keys + vectors). "
        "The graph is **synthetic but valid** (built directly, not by inserting: only I/O is measured; see "
        "`benchmarks/bench_persist.py`). Best of "
        f"{a.repeat}; machine: {machine()}; date {time.strftime('%Y-%m-%d')}.\n\n"
        f"Command: `python benchmarks/bench_persist.py --n {a.n} --dim {a.dim} --m {a.m}`\n\n"
        + t.markdown()
        + "\n\nThe reference writes / reads the same arrays with one `np.save` / `np.load` per array. "
        "`save` writes a temporary directory and swaps it in; `load` verifies every chunk's CRC-32C, validates the "
        "graph (vectorised checks, then `check_graph_kernel`) and rebuilds the key map.\n\n"
        "Where a hot load's time goes:\n\n"
        + "\n".join(f"- {k}: {v:.3f} s ({v / ref_hot:.2f}x a hot np.load)" for k, v in phases.items())
        + "\n\nThe load runs the graph checks in a second thread while it reads the vectors, so the total is "
        "less than the sum: the critical path from the page cache is read graph -> NumPy checks -> "
        "`check_graph_kernel` (one pass over every list: levels first, then ids, self loops and duplicates with "
        "a 1,024-bit filter per list), overlapped with reading and checksumming the vectors.\n"
    )
    print(md)
    if not a.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "persist.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
