"""Seeded mutation fuzzing of the Zarr loader (``hn.load``), in a subprocess (a crash or a
hang fails the test).

Every mutated save must either raise an ``HnswError`` or load exactly what was saved
(graph, keys, tombstones, vectors, metric and configuration up to the capacity): any other
exception, a hang, a crash or a load that differs from the save is a failure.
Mutations: bit flips, truncation and deletion of files, chunk files copied between arrays
or swapped within one, JSON metadata edits (values, deep nesting), FIFOs and stray files.

Run longer by hand: ``python tests/io/test_zarr_fuzz.py --count 5000 --seed 7``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the shared fuzz harness, conftest
from fuzzing import run_worker, worker_main

VALUES = [0, -1, 1, 2, 3, 7, 2**31, 2**63 - 1, 10**12, 150_000_000, 1.5, float("nan"), "x", "", None, True, [], {}, [0], [10**12]]


def make_bases(root: Path) -> list[tuple[Path, object]]:
    import numpy as np

    import hnsw_numba as hn

    out = []
    specs = [(hn.L2(), hn.InMemoryVectorStore, "float32", None, False),
             (hn.L2Qi8(), hn.InMemoryQi8VectorStore, None, 16, True),
             (hn.Cosine(), hn.InMemoryVectorStore, "float16", 40, False)]
    for i, (metric, cls, dtype, chunk_rows, text) in enumerate(specs):
        rng = np.random.default_rng(i)
        n, dim = 120, 8
        data = rng.standard_normal((n, dim)).astype(np.float32)
        idx = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n + 8, m=5, ef_construction=24, seed=i))
        store = cls(dim, n + 8) if dtype is None else cls(dim, n + 8, np.dtype(dtype))
        keys = [f"k{j}" for j in range(n)] if text else np.arange(n) * 3
        idx.insert_batch(store, keys, data)
        idx.delete_batch(list(keys[5:40:4]))
        path = root / f"base{i}"
        hn.save(path, idx, store, chunk_rows=chunk_rows)
        out.append((path, hn.load(path)))
    return out


def snapshot(index, store) -> dict:
    """Everything a load must reproduce exactly."""
    import numpy as np

    a, n = index.graph_arrays, index.node_count
    used = int(a.header[5])
    cfg = index.config.to_dict()
    cfg.pop("max_nodes", None)
    return {"metric": index.metric.name, "config": cfg, "n": n, "header": a.header.tolist(),
            "levels": a.levels[:n].tobytes(), "links0": a.links0[:n].tobytes(), "upper_start": a.upper_start[:n].tobytes(),
            "upper": a.upper_links[:used].tobytes(), "tomb": a.tombstones[:n].tobytes(),
            "keys": [index.key(i) for i in range(n)], "rows": [np.asarray(r[:n]).tobytes() for r in store.rows()]}


def mutate(path: Path, rng) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file())  # FIFOs of earlier steps are left alone
    if not files:
        return "nothing left"
    chunks = [p for p in files if "/c/" in p.as_posix()]
    metas = [p for p in files if p.name == "zarr.json"]
    op = int(rng.integers(0, 10))
    if op in (6, 7, 8) and not metas:
        op = 0
    f = files[int(rng.integers(len(files)))]
    rel = f.relative_to(path).as_posix()
    if op == 0:
        b = bytearray(f.read_bytes())
        if b:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        f.write_bytes(bytes(b))
        return f"flip {rel}"
    if op == 1:
        size = f.stat().st_size
        os.truncate(f, int(rng.integers(0, size + 1)))
        return f"truncate {rel}"
    if op == 2:
        f.unlink()
        return f"delete {rel}"
    if op in (3, 4) and len(chunks) >= 2:
        a, b = (chunks[int(i)] for i in rng.choice(len(chunks), 2, replace=False))
        if op == 4:  # prefer a same-size target: only a digest can tell
            same = [c for c in chunks if c != a and c.stat().st_size == a.stat().st_size]
            if same:
                b = same[int(rng.integers(len(same)))]
        shutil.copyfile(a, b)
        return f"copy {a.relative_to(path).as_posix()} -> {b.relative_to(path).as_posix()}"
    if op == 5 and len(chunks) >= 2:
        a, b = (chunks[int(i)] for i in rng.choice(len(chunks), 2, replace=False))
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        return f"swap {a.relative_to(path).as_posix()} <-> {b.relative_to(path).as_posix()}"
    if op in (6, 7):
        m = metas[int(rng.integers(len(metas)))]
        try:
            doc = json.loads(m.read_text())
        except (ValueError, RecursionError):  # an earlier step broke it: edit its bytes instead
            m.write_bytes(m.read_bytes()[::-1])
            return f"reverse {m.relative_to(path).as_posix()}"
        spots = []

        def walk(node, trail):
            if isinstance(node, dict):
                for k, v in node.items():
                    spots.append(trail + [k])
                    walk(v, trail + [k])
            elif isinstance(node, list):
                for j, v in enumerate(node):
                    spots.append(trail + [j])
                    walk(v, trail + [j])

        walk(doc, [])
        trail = spots[int(rng.integers(len(spots)))]
        parent = doc
        for step in trail[:-1]:
            parent = parent[step]
        value = VALUES[int(rng.integers(len(VALUES)))]
        if isinstance(parent[trail[-1]], (int, float)) and not isinstance(parent[trail[-1]], bool) and rng.integers(2):
            value = parent[trail[-1]] + int(rng.choice([-1, 1, 2]))
        if op == 7 and isinstance(parent, dict):
            del parent[trail[-1]]
            m.write_text(json.dumps(doc))
            return f"json del {m.relative_to(path).as_posix()} {trail}"
        parent[trail[-1]] = value
        m.write_text(json.dumps(doc))
        return f"json {m.relative_to(path).as_posix()} {trail}={value!r}"
    if op == 8:
        m = metas[int(rng.integers(len(metas)))]
        m.write_text("[" * int(rng.choice([50, 5000, 200_000])))
        return f"deep {m.relative_to(path).as_posix()}"
    if hasattr(os, "mkfifo") and rng.integers(2):
        f.unlink()
        os.mkfifo(f)
        return f"fifo {rel}"
    (f.parent / "stray").write_bytes(b"\x00" * int(rng.integers(0, 64)))
    return f"stray in {f.parent.relative_to(path).as_posix()}"


def fuzz(count: int, seed: int) -> dict:
    import numpy as np

    import hnsw_numba as hn

    rng = np.random.default_rng(seed)
    stats: Counter = Counter()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bases = make_bases(root)
        truth = [snapshot(*loaded) for _, loaded in bases]
        for case in range(count):
            j = int(rng.integers(len(bases)))
            work = root / f"case{case}"
            shutil.copytree(bases[j][0], work)
            steps = [mutate(work, rng) for _ in range(int(rng.choice([1, 1, 1, 2, 3])))]
            desc = f"case {case} base {j} {' + '.join(steps)}"
            print(desc, file=sys.stderr, flush=True)  # the last line names the case if we crash or hang
            try:
                index, store = hn.load(work)
            except hn.HnswError as exc:
                stats["rejected"] += 1
                stats[f"error:{type(exc).__name__}"] += 1
                shutil.rmtree(work, ignore_errors=True)
                continue
            except Exception as exc:  # noqa: BLE001 - anything else is a bug
                failures.append(f"{desc}: load raised {type(exc).__name__}: {exc}")
                shutil.rmtree(work, ignore_errors=True)
                continue
            try:
                if snapshot(index, store) != truth[j]:
                    failures.append(f"{desc}: loaded something other than the save (silently wrong)")
                index.check_integrity()
                q = np.random.default_rng(case).standard_normal((2, index.dim)).astype(np.float32)
                index.search_batch(store, q, 5, num_threads=1)
                stats["loaded"] += 1
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{desc}: loaded, then {type(exc).__name__}: {exc}")
            shutil.rmtree(work, ignore_errors=True)
    return {"count": count, "seed": seed, "stats": dict(stats), "failures": failures[:20], "n_failures": len(failures)}


def test_fuzzed_saves_load_exactly_or_raise_hnsw_error() -> None:
    count = 200
    code, result, tail = run_worker(__file__, count, 20261203, timeout=900)
    assert code == 0, f"fuzz worker died with status {code}; last lines:\n{tail}"
    assert result["n_failures"] == 0, "\n".join(result["failures"])
    stats = result["stats"]
    assert stats.get("loaded", 0) + stats.get("rejected", 0) == count
    assert stats.get("rejected", 0) >= count // 2, stats


if __name__ == "__main__":
    worker_main(fuzz, "fuzz the Zarr loader", 300, 20261203)
