"""Write the tiny hnswlib fixtures of ``tests/data/hnswlib`` with the real ``hnswlib`` package.

Usage: python tools/make_tiny_hnswlib_fixtures.py [--out tests/data/hnswlib]

Each fixture NAME gets ``NAME.bin`` (hnswlib's ``save_index``) and, when it has
elements, ``NAME.vectors.npy`` (float32, as inserted, internal-id order),
``NAME.labels.npy`` (uint64), ``NAME.queries.npy``, ``NAME.expected_labels.npy``
(hnswlib's ``knn_query(k=10)`` at ef=200 after deletions), ``NAME.exact_labels.npy``
(float64 brute force over the live stored vectors, ties broken by label) and
``NAME.deleted.npy`` (deleted labels). ``manifest.json`` records the parameters and
hnswlib's recall. Everything is seeded and built on one thread, so reruns on the same
machine give identical files (another CPU may pick other SIMD kernels and a slightly
different graph; the tests compare against the committed answers, not a rebuild).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

K, EF = 10, 200
ROOT = Path(__file__).resolve().parent.parent

# name: (space, dim, n, M, ef_construction, labels, n_deleted, seed)
SPECS = {
    "l2": ("l2", 8, 300, 4, 40, "1000+3i", 0, 11),
    "ip": ("ip", 8, 200, 4, 40, "random-u64", 0, 12),
    "cosine": ("cosine", 8, 200, 4, 40, "permutation", 0, 13),
    "deleted": ("l2", 8, 300, 4, 40, "default", 40, 14),
    "single": ("l2", 4, 1, 2, 10, "7", 0, 15),
    "empty": ("l2", 4, 0, 2, 10, "-", 0, 16),
}


def _labels(scheme: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if scheme == "1000+3i":
        return (1000 + 3 * np.arange(n)).astype(np.uint64)
    if scheme == "random-u64":  # includes values >= 2**63 (they break int64 casts)
        lab = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
        lab[:3] = [0, 2**63, 2**64 - 1]
        return lab
    if scheme == "permutation":
        return rng.permutation(n).astype(np.uint64)
    if scheme == "7":
        return np.array([7], np.uint64)[:n]
    return np.arange(n, dtype=np.uint64)


def _exact(space: str, stored: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Brute-force top-K labels over the live ``stored`` vectors (float64, ties by label)."""
    x = stored.astype(np.float64)
    q = queries.astype(np.float64)
    if space == "cosine":
        q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-30)
    d = ((q[:, None, :] - x[None]) ** 2).sum(-1) if space == "l2" else 1.0 - q @ x.T
    order = np.lexsort((np.broadcast_to(labels, d.shape), d), axis=-1)[:, :K]
    return labels[order]


def make(out: Path) -> dict:
    import hnswlib

    out.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    manifest: dict = {"hnswlib_version": version("hnswlib"), "k": K, "ef": EF, "fixtures": {}}
    for name, (space, dim, n, m, efc, scheme, n_del, seed) in SPECS.items():
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        labels = _labels(scheme, n, rng)
        queries = rng.standard_normal((20, dim)).astype(np.float32)
        p = hnswlib.Index(space=space, dim=dim)
        p.init_index(max_elements=max(n, 10), M=m, ef_construction=efc, random_seed=seed)
        p.set_num_threads(1)
        if n:
            p.add_items(vectors, labels, num_threads=1)
        deleted = rng.choice(labels, n_del, replace=False) if n_del else np.empty(0, np.uint64)
        if n_del:
            # the entry point among the deleted ones, as in the shared l2_deleted fixture
            deleted[0] = labels[int(np.frombuffer(_header(p, out, name), "<u4", 1, 52)[0])]
            deleted = np.unique(deleted)
            for lab in deleted.tolist():
                p.mark_deleted(lab)
        p.save_index(str(out / f"{name}.bin"))
        info = {"space": space, "dim": dim, "element_count": n, "M": m, "ef_construction": efc,
                "labels_scheme": scheme, "deleted_count": int(deleted.shape[0]), "seed": seed}
        if n:
            p.set_ef(EF)
            k = min(K, n - deleted.shape[0])
            expected, _ = p.knn_query(queries, k=k)
            live = ~np.isin(labels, deleted)
            stored = np.asarray(p.get_items(labels[live]), np.float32)  # normalised for cosine
            exact = _exact(space, stored, labels[live], queries)
            info["hnswlib_recall_vs_exact"] = float(np.mean([len(set(a) & set(b)) / k for a, b in
                                                             zip(expected.tolist(), exact[:, :k].tolist())]))
            for part, arr in (("vectors", vectors), ("labels", labels), ("queries", queries),
                              ("expected_labels", expected.astype(np.uint64)), ("exact_labels", exact[:, :k]),
                              ("deleted", deleted.astype(np.uint64))):
                np.save(out / f"{name}.{part}.npy", arr)
        manifest["fixtures"][name] = info
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _header(p, out: Path, name: str) -> bytes:
    """The 96-byte header of ``p`` as hnswlib would save it now (to find the entry point)."""
    tmp = out / f".{name}.tmp"
    p.save_index(str(tmp))
    try:
        return tmp.read_bytes()[:96]
    finally:
        tmp.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "hnswlib")
    args = ap.parse_args()
    manifest = make(args.out)
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {len(manifest['fixtures'])} fixtures, {total:,} bytes, to {args.out}")


if __name__ == "__main__":
    main()
