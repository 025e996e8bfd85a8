"""Per-element math written once and compiled for both targets: ``kernels/optim.py`` compiles
these functions as inlined CPU functions (``numba.njit``), ``kernels/cuda/optim.py`` as CUDA
device functions (``numba.cuda.jit(device=True)``). Only the loops around them (a row per
call on the CPU, a thread per stream or per parameter on the GPU) are target-specific, so the
two cannot drift apart. No decorator here, nothing but arithmetic, ``math`` and constants: both
compilers, and the interpreter (``kernels/interpreted.py``), must accept every line.
"""
import math

from .codes import ADAGRAD, ADAM, RMSPROP


def param_update(kind, c, t, gp, w, mo, ve):
    """(new weight, new m, new v) of one parameter with gradient gp (clipped, before weight
    decay) at optimizer step t, torch.optim's SGD (momentum, Nesterov), Adam, RMSprop or
    Adagrad (``kind``: a code of ``kernels/codes.py``). ``c`` holds the hyper-parameters in
    the weights' precision, so the arithmetic stays in it: (1, lr, wd, eps, beta1, beta2,
    step_size, sqrt(bias correction 2), alpha, momentum, nesterov). The order of operations
    sets where float32 overflows, (1 - b2) * g * g, and is the same on both targets."""
    one, lr, wd, eps, b1, b2, step_size, bc2_sqrt, alpha, mom, nesterov = c
    gp = gp + wd * w
    if kind == ADAM:
        mo = mo + (one - b1) * (gp - mo)
        ve = b2 * ve + (one - b2) * gp * gp
        return w - step_size * mo / (math.sqrt(ve) / bc2_sqrt + eps), mo, ve
    if kind == RMSPROP:
        ve = alpha * ve + (one - alpha) * gp * gp
        avg = math.sqrt(ve) + eps
        if mom > 0.0:
            mo = mom * mo + gp / avg
            return w - lr * mo, mo, ve
        return w - lr * gp / avg, mo, ve
    if kind == ADAGRAD:
        ve = ve + gp * gp
        return w - lr * gp / (math.sqrt(ve) + eps), mo, ve
    # SGD
    if mom != 0.0:
        mo = gp if t == 1 else mom * mo + gp
        gp = gp + mom * mo if nesterov else mo
    return w - lr * gp, mo, ve
