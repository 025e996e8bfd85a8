"""Truncated back-propagation through time over a window of stored steps (NNDL 6.4.1,
eq. 6.29-6.39, truncated to the window).

The window holds, per step and stream, the layer-0 input, the token, the state before the
step, the target and whether the step's loss counts, plus what the step's forward produced
(cache, logits, new state). A step whose forward ran with the current weights reuses those;
an older one (k2 > k1: run before the last update) is recomputed from its stored input and
previous state with the current weights. Then the gradient flows back from the newest step
to the oldest. The weight matrices' gradients, sums over the window of outer products, are
taken at the end as one matrix product per matrix over all n * nb stream-steps (the factors
are kept per step), not as n small ones.
"""
import numpy as np
from numba import njit

from .cells import D_NFIELDS, deferred_sizes, flush_outer
from .codes import C_CACHE, C_NL, C_OUT, C_S, C_VARIANT, C_VOCAB, FLAG_PENDING
from .model import add_embedding_grad, embed_rows, loss_grad, step_backward, step_forward


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def tbptt_window_grad(theta, cfg, lay, window, forward, grad):
    """Add to grad the gradient of the counted losses of the window, back-propagated through
    all its n steps. window = (x, tokens, state before, target, class, counts) and
    forward = (cache, logits, state after, fresh [n]) are [n, nb, ...] arrays, oldest first."""
    wx, wtok, ws, wy, wcls, wflag = window
    wc, wz, ws1, fresh = forward
    n = wx.shape[0]
    nb = wx.shape[1]
    S = cfg[C_S]
    O = cfg[C_OUT]
    dS = np.zeros((nb, S), dtype=theta.dtype)
    dS0 = np.zeros((nb, S), dtype=theta.dtype)
    dHs = np.empty((nb, S), dtype=theta.dtype)
    S1 = np.empty((nb, S), dtype=theta.dtype)
    cache = np.empty((nb, cfg[C_CACHE]), dtype=theta.dtype)
    Z = np.empty((nb, O), dtype=theta.dtype)
    dZ = np.empty((nb, O), dtype=theta.dtype)
    dx = np.empty((nb, wx.shape[2]), dtype=theta.dtype)
    NL = cfg[C_NL]
    dofs = np.zeros((NL, D_NFIELDS), dtype=np.int64)
    total = 0
    for k in range(NL):
        sizes = deferred_sizes(lay[k], cfg[C_VARIANT], n * nb)
        for f in range(D_NFIELDS):
            dofs[k, f] = total
            total += sizes[f]
    dbuf = np.empty(total, dtype=theta.dtype)
    for tau in range(n - 1, -1, -1):
        if fresh[tau]:
            S1[:, :] = ws1[tau]
            cache[:, :] = wc[tau]
            Z[:, :] = wz[tau]
        else:
            if cfg[C_VOCAB] > 0:  # the current embedding rows, not the ones of back then
                embed_rows(theta, cfg, wtok[tau], wx[tau])
            step_forward(theta, cfg, lay, wx[tau], ws[tau], S1, cache, Z)
        dZ[:, :] = 0.0
        for b in range(nb):
            if wflag[tau, b] == FLAG_PENDING:
                loss_grad(cfg, Z[b], wy[tau, b], wcls[tau, b], dZ[b])
        step_backward(theta, cfg, lay, wx[tau], ws[tau], S1, cache, dZ, dS, grad, dx, dS0,
                      dHs, np.int64(1), dbuf, dofs, tau * nb)
        add_embedding_grad(cfg, wtok[tau], dx, grad)
        dS[:, :] = dS0
    for k in range(NL):
        flush_outer(grad, lay[k], cfg[C_VARIANT], dbuf, dofs[k], n * nb)
