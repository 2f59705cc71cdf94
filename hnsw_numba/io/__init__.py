"""Files: Zarr persistence (atomic, checksummed) and hnswlib's binary format.

Imports :mod:`hnsw_numba.core` and :mod:`hnsw_numba.kernels`; nothing above.
"""
