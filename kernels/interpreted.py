"""The same kernels, run by the Python interpreter instead of numba: for a process whose numba
cache is cold, so that it can answer while the compiled kernels are being built.

``load()`` imports a second copy of this package, ``rnnstream.kernels`` -> ``<package>_interpreted``,
from the same source files, with numba's JIT switched off while the copy's decorators run
(``@njit`` then returns the plain function; numba reads the switch at decoration time). The
compiled package is untouched. The interpreted copy runs the same statements on NumPy scalars
and arrays: the same definitions, with results that agree with the compiled kernels to float32
rounding (numba and NumPy round some mixed float32/float64 expressions differently and call
different BLAS and libm builds), not bit for bit. It is 10-1000x slower; what is slow is loops
over scalars, so the activations and the optimizer's passes run on whole arrays here.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

import numpy as np
from numba.core import config

# the modules the service calls; importing them imports everything they use
ENTRY_MODULES = ("chunk", "context", "narx", "normalize")

_lock = threading.Lock()


def _sigmoid(v):
    np.divide(1.0, 1.0 + np.exp(-v), out=v)


def _tanh(v):
    np.tanh(v, out=v)


def _rowwise_apply_update(optim):
    """``optim.apply_update`` with each pass over a whole row at once: ``param_update``
    (``elementwise.py``) is elementwise, so NumPy runs it on the row's arrays, the same
    arithmetic per element in the row's precision, instead of a Python loop per parameter
    (which was most of an interpreted chunk's time)."""
    def apply_update(W, row, g, m, v, steps, hyp):
        norm = float(np.sqrt(np.sum(np.square(g, dtype=np.float64))))
        clipped = 0
        clip = hyp[optim.O_CLIP]
        if clip > 0.0 and clip / (norm + 1e-6) < 1.0:
            clipped = 1
            g *= g.dtype.type(clip / (norm + 1e-6))
        w, mm, vv = W[row], m[row], v[row]
        t = steps[row] + 1
        c = optim._coefficients(hyp, t, w[:1])
        with np.errstate(all="ignore"):  # an overflow is found below and skips the step
            nw, nm, nv = optim.param_update(int(hyp[optim.O_KIND]), c, t, g, w, mm, vv)
        if not (np.isfinite(norm) and np.isfinite(nw).all() and np.isfinite(nm).all()
                and np.isfinite(nv).all()):
            return norm, clipped, 0
        steps[row] = t
        w[:], mm[:], vv[:] = nw, nm, nv
        return norm, clipped, 1
    return apply_update


def _all_finite(g):
    return bool(np.isfinite(g).all())


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
            # elementwise math on whole arrays: its math.sqrt is NumPy's here
            importlib.import_module(name + ".elementwise").math = types.SimpleNamespace(sqrt=np.sqrt)
            optim = importlib.import_module(name + ".optim")
            optim.apply_update = _rowwise_apply_update(optim)
            for module in ENTRY_MODULES:
                setattr(copy, module, importlib.import_module(f"{name}.{module}"))
            copy.context.run_bytes = _quiet_overflow(copy.context.run_bytes)
            # read at call time: the module's global
            importlib.import_module(name + ".updates")._all_finite = _all_finite
        except BaseException:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[loaded]
            raise
        finally:
            config.DISABLE_JIT = was
        return copy
