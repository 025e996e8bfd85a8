"""The same kernels, run by the Python interpreter instead of numba: for a process whose numba
cache is cold, so that it can answer while the compiled kernels are being built.

``load()`` imports a second copy of this package, ``rnnstream.kernels`` -> ``<package>_interpreted``,
from the same source files, with numba's JIT switched off while the copy's decorators run
(``@njit`` then returns the plain function; numba reads the switch at decoration time). The
compiled package is untouched. The interpreted copy runs the same statements on NumPy scalars
and arrays: the same definitions, with results that agree with the compiled kernels to float32
rounding (numba and NumPy round some mixed float32/float64 expressions differently and call
different BLAS and libm builds), not bit for bit. It is 10-1000x slower; what is slow is loops
over scalars, so the elementwise activations are replaced by their whole-array NumPy forms.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading

import numpy as np
from numba.core import config

# the modules the service calls; importing them imports everything they use
ENTRY_MODULES = ("chunk", "context", "narx", "normalize")

_lock = threading.Lock()


def _sigmoid(v):
    np.divide(1.0, 1.0 + np.exp(-v), out=v)


def _tanh(v):
    np.tanh(v, out=v)


def _quiet_overflow(kernel):
    """The context model's integer hashes wrap by design: numba's uint64 does it silently,
    NumPy's scalars warn."""
    def run(*args):
        with np.errstate(over="ignore"):
            return kernel(*args)
    return run


def load():
    """The interpreted copy of the package (a module with ``chunk``, ``narx``, ``normalize``
    ... as attributes), imported once per process."""
    package = __name__.rpartition(".")[0]
    name = package + "_interpreted"
    with _lock:
        if name in sys.modules:
            return sys.modules[name]
        here = sys.modules[package]
        spec = importlib.util.spec_from_file_location(
            name, here.__file__, submodule_search_locations=list(here.__path__))
        copy = importlib.util.module_from_spec(spec)
        was = config.DISABLE_JIT
        config.DISABLE_JIT = True
        sys.modules[name] = copy
        try:
            spec.loader.exec_module(copy)
            activations = importlib.import_module(name + ".activations")
            activations.sigmoid_inplace, activations.tanh_inplace = _sigmoid, _tanh
            for module in ENTRY_MODULES:
                setattr(copy, module, importlib.import_module(f"{name}.{module}"))
            copy.context.run_bytes = _quiet_overflow(copy.context.run_bytes)
        except BaseException:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[loaded]
            raise
        finally:
            config.DISABLE_JIT = was
        return copy
