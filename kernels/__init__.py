"""Numba kernels for rnnstream: pure functions over arrays, no I/O, no state of their own.

The numerical contract they implement is written down in ``kernels/README.md``; the
plain-NumPy oracle in ``tests/reference/`` implements the same definitions.
"""
from ._cache import drop_stale_cache

drop_stale_cache()
