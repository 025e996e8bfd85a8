"""CUDA twins of the CPU kernels (``numba.cuda``, from the ``numba-cuda`` package).

Importing this package needs neither numba-cuda nor a GPU: the kernel modules are loaded by
``load()``, which raises ``CudaUnavailable`` with the reason when they cannot run here.
Under ``NUMBA_ENABLE_CUDASIM=1`` they run on Numba's CUDA simulator (slow; for tests).

Layout: one CUDA thread per stream. Every per-stream array is stored stream-minor
([field, slot]) so that the threads of a warp touch consecutive addresses; shared weights are
one column that every thread reads (a broadcast). See ``kernels/cuda/README.md``.
"""
import importlib
import importlib.util
import os


class CudaUnavailable(RuntimeError):
    """The CUDA kernels cannot run on this machine; the message says why."""


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def unavailable_reason():
    """None when the CUDA kernels can run here, else a sentence saying why not."""
    if importlib.util.find_spec("numba_cuda") is None:
        return ("the CUDA target is not installed: pip install 'rnnstream[cuda]' "
                "(numba-cuda)")
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - broken installation
        return f"numba.cuda failed to import: {exc}"
    if simulated():
        return None
    try:
        if not cuda.is_available():
            return "no usable NVIDIA GPU or CUDA driver was found on this machine"
    except Exception as exc:  # the driver failed to load
        return f"the CUDA driver failed to load: {exc}"
    return None


def load():
    """The ``kernels.cuda.chunk`` module (the launch sequence and its kernels); raises
    ``CudaUnavailable`` when this machine cannot run them."""
    reason = unavailable_reason()
    if reason is not None:
        raise CudaUnavailable(reason)
    return importlib.import_module("rnnstream.kernels.cuda.chunk")
