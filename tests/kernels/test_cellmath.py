"""The per-unit math is one source: every function of ``kernels/cellmath.py`` (and the
optimizer's ``elementwise.param_update``) is the very function object that a CPU kernel module
compiles inline and a CUDA module compiles as a device function, so neither target can carry
a copy of its own. Numerical agreement of the two targets is the CUDA simulator's job
(``cuda_chunk_cases.py``); here, that the compiled CPU form computes what the plain function
does, in float64 and float32."""
import inspect

import numpy as np
import pytest

from rnnstream.kernels import cellmath, elementwise

CPU_MODULES = ("cells", "snap", "rtrl", "optim")
CUDA_MODULES = ("cells", "snap", "rtrl", "optim")
# compiled on one target only, and why
ONE_TARGET = {
    "sigmoid": "cuda",  # the CPU's forward takes its activations as whole-block passes
}


def _shared():
    fns = {name: fn for name, fn in inspect.getmembers(cellmath, inspect.isfunction)
           if fn.__module__ == cellmath.__name__}
    fns["param_update"] = elementwise.param_update
    return fns


def _compiled_from(package, modules):
    """{id of the Python function: [module.name, ...]} for every dispatcher in ``modules``."""
    import importlib
    found = {}
    for mod_name in modules:
        mod = importlib.import_module(f"{package}.{mod_name}")
        for name, obj in vars(mod).items():
            py = getattr(obj, "py_func", None)
            if py is not None:
                found.setdefault(id(py), []).append(f"{mod_name}.{name}")
    return found


def test_every_shared_function_is_compiled_by_both_targets():
    cpu = _compiled_from("rnnstream.kernels", CPU_MODULES)
    cuda = _compiled_from("rnnstream.kernels.cuda", CUDA_MODULES)
    shared = _shared()
    assert len(shared) >= 15
    for name, fn in shared.items():
        only = ONE_TARGET.get(name)
        if only != "cuda":
            assert id(fn) in cpu, f"{name} is not compiled by any CPU kernel module"
        if only != "cpu":
            assert id(fn) in cuda, f"{name} is not compiled by any CUDA kernel module"


def _args(fn, rng, dtype):
    """Scalars in (0.05, 0.95) (gate-like) for every argument; variant codes 0..3; the
    snap partials' arrays zeroed."""
    args = []
    for p in inspect.signature(fn).parameters:
        if p in ("variant", "kind"):
            args.append(None)
        elif p in ("d_ih", "d_hh"):
            args.append(np.zeros((4, 2)))
        elif p == "J":
            args.append(np.zeros((2, 2)))
        elif p == "d_pe":
            args.append(np.zeros((3, 2)))
        else:
            args.append(dtype(rng.uniform(0.05, 0.95)))
    return args


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_cpu_form_computes_the_plain_function(dtype):
    from numba import njit
    rng = np.random.default_rng(7)
    for name, fn in _shared().items():
        if name == "param_update":
            continue  # its own tests: tests/kernels (optimizers against torch.optim)
        compiled = njit(fn)
        for variant in range(4):
            args = _args(fn, rng, dtype)
            args = [variant if a is None else a for a in args]
            plain_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            got = compiled(*args)
            want = fn(*plain_args)
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64),
                                       np.asarray(want, dtype=np.float64),
                                       rtol=1e-6, err_msg=f"{name}, variant {variant}")
            for a, b in zip(args, plain_args):
                if isinstance(a, np.ndarray):
                    np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=f"{name}, variant {variant}")
                    if name.startswith("snap_") and name != "snap_clear":
                        assert np.any(a != 0.0) or a.shape == (3, 2), f"{name} wrote nothing"
