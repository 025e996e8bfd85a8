"""Optimizer steps with torch.optim's semantics, on one row of a flat parameter matrix.

Clipping follows ``torch.nn.utils.clip_grad_norm_`` (coef = max_norm / (norm + 1e-6), applied
when below 1); weight decay adds wd * θ to the gradient inside the optimizer, after clipping,
as torch.optim does (NNDL 6.5's clipping and weight decay). Moment buffers live in ``m`` and
``v`` ([rows, P]); ``steps`` counts each row's optimizer steps.
"""
import numpy as np
from numba import njit

from .codes import (ADAGRAD, ADAM, O_ALPHA, O_BETA1, O_BETA2, O_CLIP, O_EPS, O_KIND, O_LR,
                    O_MOMENTUM, O_NESTEROV, O_WD, RMSPROP)


# fastmath: the gradient is known finite here, and reassociation lets the loops vectorise
@njit(cache=True, fastmath=True)
def grad_norm(g):
    s = 0.0
    for p in range(g.shape[0]):
        s += float(g[p]) * float(g[p])
    return np.sqrt(s)


# error_model="numpy": no zero-division check per element, which kept the loops scalar; the
# denominators are >= eps > 0 (service.engine.spec refuses eps = 0 for these optimizers)
@njit(cache=True, fastmath=True, error_model="numpy")
def apply_update(W, row, g, m, v, steps, hyp):
    """One optimizer step on W[row] with gradient g (g is modified: clipped).

    Returns (pre-clip gradient norm, 1 if clipped else 0). The caller has checked g is finite.
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
    # hyper-parameters in the weights' precision, so the loops stay in float32 and vectorise
    one = w.dtype.type(1.0)
    lr = w.dtype.type(hyp[O_LR])
    wd = w.dtype.type(hyp[O_WD])
    eps = w.dtype.type(hyp[O_EPS])
    steps[row] += 1
    t = steps[row]
    P = g.shape[0]
    if kind == ADAM:
        b1 = w.dtype.type(hyp[O_BETA1])
        b2 = w.dtype.type(hyp[O_BETA2])
        step_size = w.dtype.type(hyp[O_LR] / (1.0 - hyp[O_BETA1] ** t))
        bc2_sqrt = w.dtype.type(np.sqrt(1.0 - hyp[O_BETA2] ** t))
        for p in range(P):
            gp = g[p] + wd * w[p]
            mm[p] = mm[p] + (one - b1) * (gp - mm[p])
            vv[p] = b2 * vv[p] + (one - b2) * gp * gp
            w[p] = w[p] - step_size * mm[p] / (np.sqrt(vv[p]) / bc2_sqrt + eps)
    elif kind == RMSPROP:
        alpha = w.dtype.type(hyp[O_ALPHA])
        mom = w.dtype.type(hyp[O_MOMENTUM])
        for p in range(P):
            gp = g[p] + wd * w[p]
            vv[p] = alpha * vv[p] + (one - alpha) * gp * gp
            avg = np.sqrt(vv[p]) + eps
            if mom > 0.0:
                mm[p] = mom * mm[p] + gp / avg
                w[p] = w[p] - lr * mm[p]
            else:
                w[p] = w[p] - lr * gp / avg
    elif kind == ADAGRAD:
        for p in range(P):
            gp = g[p] + wd * w[p]
            vv[p] = vv[p] + gp * gp
            w[p] = w[p] - lr * gp / (np.sqrt(vv[p]) + eps)
    else:  # SGD
        mom = w.dtype.type(hyp[O_MOMENTUM])
        nesterov = hyp[O_NESTEROV] != 0.0
        for p in range(P):
            gp = g[p] + wd * w[p]
            if mom != 0.0:
                if t == 1:
                    mm[p] = gp
                else:
                    mm[p] = mom * mm[p] + gp
                if nesterov:
                    gp = gp + mom * mm[p]
                else:
                    gp = mm[p]
            w[p] = w[p] - lr * gp
    return norm, clipped
