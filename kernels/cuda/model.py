"""CUDA twin of ``kernels/model.py``: the whole model for one step of the calling thread's
stream: stacked layers, the head and the loss, forward and VJP.

Forward writes S1 into W_ST1, the cache into W_CACHE and the logits into W_Z of the scratch
``wk``. Head: z = W_head h_last + b_head; prediction y = z (MSE) or softmax(z) (cross-entropy).
"""
import math

from numba import cuda

from ..codes import (C_CLASSIFY, C_EMB, C_HB, C_HLAST, C_HTOP, C_HW, C_IN, C_NL, C_OUT, C_S,
                     C_VARIANT, C_VOCAB, C_Y, JORDAN, L_CELL, L_H, L_REC, L_SC, L_SH)
from .cells import dot_col, dot_row, layer_backward, layer_forward
from .scratch import W_DCP, W_DHS, W_DR, W_DS0, W_DX, W_G, W_ST1, W_Z


@cuda.jit(device=True)
def head_logits(W, wc, cfg, S, ho, Z, zo, n):
    """Z[zo:zo+O] = W_head S[ho:ho+HL] + b_head."""
    HL = cfg[C_HLAST]
    for o in range(cfg[C_OUT]):
        Z[zo + o, n] = dot_row(W, wc, cfg[C_HW] + o * HL, S, ho, n, HL) + W[cfg[C_HB] + o, wc]


@cuda.jit(device=True)
def predict_row(cfg, Z, zo, zn, Y, yo, yn):
    """Y[yo:, yn] = z, or softmax(z), from Z[zo:, zn]."""
    O = cfg[C_OUT]
    if cfg[C_CLASSIFY] == 0:
        for o in range(O):
            Y[yo + o, yn] = Z[zo + o, zn]
        return
    m = Z[zo, zn]
    for o in range(1, O):
        m = max(m, Z[zo + o, zn])
    s = 0.0
    for o in range(O):
        e = math.exp(Z[zo + o, zn] - m)
        Y[yo + o, yn] = e
        s += e
    for o in range(O):
        Y[yo + o, yn] = Y[yo + o, yn] / s


@cuda.jit(device=True)
def loss_grad(cfg, Z, zo, n, T, to, tcol, cls, D, do):
    """Loss of the logits Z[zo:, n] against target T[to:, tcol] (or class ``cls``); writes
    dL/dz into D[do:, n]. MSE: mean (z - t)^2; cross-entropy: -log softmax(z)[cls]."""
    O = cfg[C_OUT]
    if cfg[C_CLASSIFY] == 0:
        loss = 0.0
        for o in range(O):
            d = Z[zo + o, n] - T[to + o, tcol]
            loss += d * d
            D[do + o, n] = 2.0 * d / O
        return loss / O
    m = Z[zo, n]
    for o in range(1, O):
        m = max(m, Z[zo + o, n])
    s = 0.0
    for o in range(O):
        s += math.exp(Z[zo + o, n] - m)
    lse = m + math.log(s)
    for o in range(O):
        D[do + o, n] = math.exp(Z[zo + o, n] - lse)
    D[do + cls, n] -= 1.0
    return lse - Z[zo + cls, n]


@cuda.jit(device=True)
def step_forward(W, wc, cfg, lay, X, xo, S0, s0o, wk, so, n):
    """All layers and the head for one stream from input X[xo:] and state S0[s0o:]."""
    variant = cfg[C_VARIANT]
    yo = cfg[C_Y]
    s1 = so[W_ST1]
    for k in range(cfg[C_NL]):
        if k == 0:
            layer_forward(W, wc, lay[k], variant, yo, X, xo, S0, s0o, wk, so, n)
        else:
            layer_forward(W, wc, lay[k], variant, yo, wk, s1 + lay[k - 1, L_SH], S0, s0o,
                          wk, so, n)
    head_logits(W, wc, cfg, wk, s1 + cfg[C_HTOP], wk, so[W_Z], n)
    if yo >= 0:
        predict_row(cfg, wk, so[W_Z], n, wk, s1 + yo, n)


@cuda.jit(device=True)
def step_backward(W, wc, cfg, lay, X, xo, S0, s0o, wk, so, dz, ds1, n, param_mode):
    """VJP of ``step_forward`` (which must have just run into the scratch).

    wk[dz:] holds dL/dlogits of this step (modified: a Jordan model adds the gradient through
    y_t), wk[ds1:] dL/dS1 from later steps. Writes W_DS0 (dL/dS0), W_DX (dL/dx of layer 0) and
    W_DHS (the total dL/dS1). param_mode 1 adds every parameter's gradient to W_G, 2 only the
    head's, 0 none."""
    O = cfg[C_OUT]
    HL = cfg[C_HLAST]
    yo = cfg[C_Y]
    s1 = so[W_ST1]
    htop = s1 + cfg[C_HTOP]
    g0 = so[W_G]
    dhs = so[W_DHS]
    ds0 = so[W_DS0]
    if yo >= 0:
        if cfg[C_CLASSIFY] == 0:
            for o in range(O):
                wk[dz + o, n] += wk[ds1 + yo + o, n]
        else:
            py = 0.0
            for o in range(O):
                py += wk[s1 + yo + o, n] * wk[ds1 + yo + o, n]
            for o in range(O):
                wk[dz + o, n] += wk[s1 + yo + o, n] * (wk[ds1 + yo + o, n] - py)
    if param_mode > 0:
        hw = g0 + cfg[C_HW]
        for o in range(O):
            d = wk[dz + o, n]
            for q in range(HL):
                wk[hw + o * HL + q, n] += d * wk[htop + q, n]
            wk[g0 + cfg[C_HB] + o, n] += d
    for s in range(cfg[C_S]):
        wk[ds0 + s, n] = 0.0
        wk[dhs + s, n] = wk[ds1 + s, n]
    ht = dhs + cfg[C_HTOP]
    for q in range(HL):
        wk[ht + q, n] += dot_col(W, wc, cfg[C_HW] + q, HL, wk, dz, n, O)
    want = param_mode == 1
    variant = cfg[C_VARIANT]
    for k in range(cfg[C_NL] - 1, -1, -1):
        lr = lay[k]
        H = lr[L_H]
        if k == 0:
            layer_backward(W, wc, lr, variant, yo, X, xo, S0, s0o, wk, so, n, want)
        else:
            layer_backward(W, wc, lr, variant, yo, wk, s1 + lay[k - 1, L_SH], S0, s0o, wk,
                           so, n, want)
        if lr[L_CELL] == JORDAN:
            ro = yo
        else:
            ro = lr[L_SH]
        for q in range(lr[L_REC]):
            wk[ds0 + ro + q, n] += wk[so[W_DR] + q, n]
        if lr[L_SC] >= 0:
            for j in range(H):
                wk[ds0 + lr[L_SC] + j, n] += wk[so[W_DCP] + j, n]
        if k > 0:
            psh = dhs + lay[k - 1, L_SH]
            for q in range(lay[k - 1, L_H]):
                wk[psh + q, n] += wk[so[W_DX] + q, n]


@cuda.jit(device=True)
def add_embedding_grad(cfg, token, wk, so, n):
    """grad of embedding.weight[token] += dL/dx (token input only)."""
    if cfg[C_VOCAB] == 0:
        return
    I = cfg[C_IN]
    base = so[W_G] + cfg[C_EMB] + token * I
    for q in range(I):
        wk[base + q, n] += wk[so[W_DX] + q, n]
