"""Optimizer steps with torch.optim's semantics, on one row of a flat parameter matrix.

Clipping follows ``torch.nn.utils.clip_grad_norm_`` (coef = max_norm / (norm + 1e-6), applied
when below 1); weight decay adds wd * θ to the gradient inside the optimizer, after clipping,
as torch.optim does (NNDL 6.5's clipping and weight decay). Moment buffers live in ``m`` and
``v`` ([rows, P]); ``steps`` counts each row's optimizer steps.

A step is computed whole before anything is written: finite gradients can still overflow
float32 (a squared gradient in Adam's second moment, a sum of many streams' gradients), and
a step with any non-finite new weight or moment is skipped, leaving the row untouched.
"""
import numpy as np
from numba import njit

from .codes import (ADAM, O_ALPHA, O_BETA1, O_BETA2, O_CLIP, O_EPS, O_KIND, O_LR, O_MOMENTUM,
                    O_NESTEROV, O_WD)
from .elementwise import param_update

# fastmath without 'nnan'/'ninf': the compiler may not assume values are finite, so the
# overflow checks below are not folded away. The norm's sum may reassociate (to vectorise);
# a step's arithmetic may not, so it overflows exactly where the CUDA twin's does
# ((1 - b2) * g * g, not g * g * (1 - b2)).
FAST = {"nsz", "arcp", "contract", "afn"}


@njit(cache=True, fastmath=FAST | {"reassoc"})
def grad_norm(g):
    # squares in float64: numba's float() keeps a float32 a float32, and a finite gradient's
    # square overflows float32 above 1.8e19 (the norm read inf, and the update was lost)
    s = 0.0
    for p in range(g.shape[0]):
        x = np.float64(g[p])
        s += x * x
    return np.sqrt(s)


# one parameter's step: the same function the CUDA twin compiles as a device function
_param_step = njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")(param_update)


@njit(cache=True)
def _coefficients(hyp, t, like):
    f = like.dtype.type  # the weights' precision, so the loops stay in float32 and vectorise
    return (f(1.0), f(hyp[O_LR]), f(hyp[O_WD]), f(hyp[O_EPS]), f(hyp[O_BETA1]), f(hyp[O_BETA2]),
            f(hyp[O_LR] / (1.0 - hyp[O_BETA1] ** t)), f(np.sqrt(1.0 - hyp[O_BETA2] ** t)),
            f(hyp[O_ALPHA]), f(hyp[O_MOMENTUM]), hyp[O_NESTEROV] != 0.0)


# error_model="numpy": no zero-division check per element, which kept the loops scalar; the
# denominators are >= eps > 0 (service.engine.spec refuses eps = 0 for these optimizers)
@njit(cache=True, fastmath=FAST, error_model="numpy")
def apply_update(W, row, g, m, v, steps, hyp):
    """One optimizer step on W[row] with gradient g (g is modified: clipped).

    Returns (pre-clip gradient norm, 1 if clipped else 0, 1 if applied else 0). The step is
    computed first and written only when every new weight and moment is finite; otherwise
    W, m, v and steps stay as they were (the caller counts a skipped update).
    """
    norm = grad_norm(g)
    clipped = 0
    clip = hyp[O_CLIP]
    if clip > 0.0:
        coef = clip / (norm + 1e-6)
        if coef < 1.0:
            clipped = 1
            c = g.dtype.type(coef)
            for p in range(g.shape[0]):
                g[p] = g[p] * c
    kind = int(hyp[O_KIND])
    w = W[row]
    mm = m[row]
    vv = v[row]
    t = steps[row] + 1
    c = _coefficients(hyp, t, w[:1])
    # Adam, the default, has loops of its own: with the optimizer a constant, the other
    # optimizers' arithmetic leaves the loop body (an update 1.8x faster; the same arithmetic,
    # so the same bits: tests/kernels/test_optim.py)
    if kind == ADAM:
        bad = _step_overflows(ADAM, c, t, g, w, mm, vv)
    else:
        bad = _step_overflows(kind, c, t, g, w, mm, vv)
    if bad or not np.isfinite(norm):
        return norm, clipped, 0
    steps[row] = t
    if kind == ADAM:
        _write_step(ADAM, c, t, g, w, mm, vv)
    else:
        _write_step(kind, c, t, g, w, mm, vv)
    return norm, clipped, 1


@njit(inline="always", fastmath=FAST, error_model="numpy")
def _step_overflows(kind, c, t, g, w, mm, vv):
    """Pass 1: would any new weight or moment be non-finite? (x - x is 0 only for a finite x;
    an OR of flags, unlike an early exit, vectorises.)"""
    bad = False
    for p in range(g.shape[0]):
        nw, nm, nv = _param_step(kind, c, t, g[p], w[p], mm[p], vv[p])
        bad |= ((nw - nw) != 0.0) | ((nm - nm) != 0.0) | ((nv - nv) != 0.0)
    return bad


@njit(inline="always", fastmath=FAST, error_model="numpy")
def _write_step(kind, c, t, g, w, mm, vv):
    """Pass 2: the same arithmetic, written."""
    for p in range(g.shape[0]):
        w[p], mm[p], vv[p] = _param_step(kind, c, t, g[p], w[p], mm[p], vv[p])
