"""Generated data for the demo, examples and tests (no download)."""

from __future__ import annotations

import numpy as np

from .core.config import check_int

__all__ = ["clustered_embeddings"]


def clustered_embeddings(n: int, dim: int, *, n_queries: int = 0, seed: int | None = 0,
                         n_clusters: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectors that look like real embeddings: anisotropic Gaussian clusters.

    Real embedding sets are neither uniform noise (too hard, no structure) nor well
    separated blobs (too easy); this mixes clusters of different sizes and spreads,
    and a low-rank component shared by all of them.

    Parameters
    ----------
    n, dim, n_queries : int
        Data rows, dimension, query rows (drawn from the same clusters).
    seed : int or None
        Seeds NumPy's ``default_rng`` (an int >= 0; None: fresh entropy).
    n_clusters : int, optional
        Clusters (default: ``max(8, sqrt(n) / 2)``).

    Returns
    -------
    (data float32[n, dim], queries float32[n_queries, dim])

    Raises
    ------
    InvalidParameterError
        ``n`` or ``n_queries`` is negative, ``dim`` or ``n_clusters`` is not positive,
        ``seed`` is not an int >= 0 (or None).
    """
    check_int("n", n, 0, 2**40)
    check_int("dim", dim, 1, 2**31 - 1)
    check_int("n_queries", n_queries, 0, 2**40)
    if n_clusters is not None:
        check_int("n_clusters", n_clusters, 1, 2**31 - 1)
    if seed is not None:
        check_int("seed", seed, 0, 2**63 - 1)
    rng = np.random.default_rng(seed)
    k = n_clusters or max(8, int(np.sqrt(n) / 2))
    centers = rng.standard_normal((k, dim)).astype(np.float32) * 2.0
    weights = rng.dirichlet(np.full(k, 0.7))
    spread = rng.uniform(0.4, 1.6, k).astype(np.float32)
    basis = rng.standard_normal((max(dim // 8, 1), dim)).astype(np.float32)
    total = n + n_queries
    lab = rng.choice(k, total, p=weights)
    low = rng.standard_normal((total, basis.shape[0])).astype(np.float32) @ basis * 0.5
    x = centers[lab] + low + rng.standard_normal((total, dim)).astype(np.float32) * spread[lab, None]
    x = x.astype(np.float32)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
