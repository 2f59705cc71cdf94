"""The compiled floor: every Numba-compiled function and the array layouts it reads.

Plain functions over NumPy arrays and NamedTuples of arrays (:mod:`.layout`): no Python
objects, no global state, no allocation beyond per-call scratch. Nothing here imports
from the layers above (``core``, ``io``, the integrations, the command line).
"""
