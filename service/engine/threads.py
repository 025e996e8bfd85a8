"""How many threads the kernels' BLAS calls may use.

Numba's np.dot calls the OpenBLAS that SciPy ships. Its default of one thread per core
makes the small matrix products of a recurrent step slower, not faster (thread hand-off
costs more than the product, and a server runs many streams at once anyway), so the engine
pins it to ``RNNSTREAM_KERNEL_THREADS`` (default 1). NumPy's own BLAS is left alone.
"""
from __future__ import annotations

import os

_pinned = None


def limit_kernel_blas_threads(threads: int | None = None) -> int:
    """Pin the BLAS that numba's kernels use (once per process unless ``threads`` is
    given); returns the number of threads in force."""
    global _pinned
    if threads is None and _pinned is not None:
        return _pinned
    if threads is None:
        threads = int(os.environ.get("RNNSTREAM_KERNEL_THREADS", "1"))
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba binds to)
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    scipy_blas = [lib for lib in controller.lib_controllers
                  if lib.user_api == "blas" and "scipy" in os.path.basename(
                      os.path.dirname(lib.filepath))]
    for lib in scipy_blas:
        lib.set_num_threads(threads)
    _pinned = threads
    return threads
