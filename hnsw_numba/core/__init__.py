"""The index in Python: ``Hnsw``, its configuration, metrics, vector stores and key map.

Objects over the kernels: validation, allocation, locking, thread fan-out and results.
Imports only :mod:`hnsw_numba.kernels` and itself.
"""
