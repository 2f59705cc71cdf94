"""Join a query set against a saved index on a Dask cluster, and a distributed k-NN graph.

Starts a local cluster of 2 worker processes (point ``Client`` at a real scheduler
instead, and ``target`` at a path or URL every worker can read, e.g. ``s3://bucket/idx.zarr``).
Tasks carry only the target: each worker opens the index once and reuses it.

Run: python examples/dask_cluster_join.py      (pip install 'hnsw_numba[dask]' scipy)
"""
# requires: dask distributed scipy

import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
from distributed import Client, LocalCluster

import hnsw_numba as hn
import hnsw_numba.dask as hdask
from hnsw_numba.datasets import clustered_embeddings


def main() -> None:
    x, q = clustered_embeddings(10_000, 48, n_queries=4_000, seed=0)
    index = hn.Index(48, metric="cosine", ef_construction=100, seed=0)
    index.add(x)
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        target = str(Path(tmp) / "embeddings.zarr")
        index.save(target)  # the workers read this; the index is never pickled

        queries = da.from_array(q, chunks=(1_000, 48))
        keys, dists = hdask.search(target, queries, k=10, ef=64)  # lazy: one task per chunk
        t = time.perf_counter()
        got_keys, got_dists = dask.compute(keys, dists)  # compute together: one search per chunk
        print(f"joined {q.shape[0]} queries on {len(client.scheduler_info()['workers'])} workers in {time.perf_counter() - t:.1f} s")
        local_keys, _ = index.search(q, 10, ef=64)
        assert (got_keys == local_keys).all()  # identical to searching locally
        print("index loads per worker:", sorted(c.get(target, 0) for c in client.run(hdask.load_counts).values()))

        # The distributed k-NN graph of a dask array against itself (built here, joined there).
        data = da.from_array(x[:4_000], chunks=(1_000, 48))
        ind, dist = hdask.knn_graph(data, 10, target=str(Path(tmp) / "graph.zarr"), metric="cosine", ef_construction=100)
        graph = hdask.to_csr(ind, dist)  # scipy csr_matrix (4000, 4000), row i = data row i
        print(f"distributed knn_graph: {graph.shape}, {graph.nnz} edges")


if __name__ == "__main__":  # worker processes re-import this file
    main()
