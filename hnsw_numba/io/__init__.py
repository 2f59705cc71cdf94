"""Files: Zarr persistence (atomic, checksummed), hnswlib's binary format, and vectors to read
(:mod:`.vectors`: .npy, TEXMEX, HDF5, Zarr, Parquet, fsspec URLs).

Imports :mod:`hnsw_numba.core` and :mod:`hnsw_numba.kernels`; nothing above.
"""
