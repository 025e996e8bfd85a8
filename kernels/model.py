"""A whole model for one time step: stacked layers, the head and the loss, forward and VJP.

``S0``/``S1`` are the states before/after the step ([nb, S] rows: per layer h and c, then
y_{t-1} for a Jordan model); ``x`` [nb, I] is the layer-0 input (a feature row or an embedding
row). Head: z = W_head h_last + b_head (+ W_skip x with a linear skip); prediction y = z (MSE)
or softmax(z) (cross-entropy).
"""
import numpy as np
from numba import njit

from .cells import layer_backward, layer_forward, mat
from .codes import (C_CLASSIFY, C_EMB, C_HB, C_HLAST, C_HTOP, C_HW, C_IN, C_NL, C_OUT,
                    C_SKIP, C_VARIANT, C_VOCAB, C_Y, JORDAN, L_CELL, L_H, L_REC, L_SC, L_SH)

_FEW_OUTPUTS = 8  # up to this many outputs the head's backward products are loops


@njit(cache=True)
def head_logits(theta, cfg, htop, x, Z):
    """Z [nb, O] = htop W_head^T + b_head (+ x W_skip^T: the linear skip from the layer-0
    input row x [nb, C_IN])."""
    O = cfg[C_OUT]
    W = mat(theta, cfg[C_HW], O, cfg[C_HLAST])
    Z[:, :] = np.dot(np.ascontiguousarray(htop), W.T)
    for b in range(Z.shape[0]):
        for o in range(O):
            Z[b, o] += theta[cfg[C_HB] + o]
    if cfg[C_SKIP] >= 0:
        Z += np.dot(np.ascontiguousarray(x), mat(theta, cfg[C_SKIP], O, cfg[C_IN]).T)


@njit(cache=True)
def predict_row(cfg, z, y):
    """The prediction from one logit row: z itself, or softmax(z)."""
    if cfg[C_CLASSIFY] == 0:
        y[:] = z
        return
    m = z.max()
    s = 0.0
    for o in range(z.shape[0]):
        y[o] = np.exp(z[o] - m)
        s += y[o]
    for o in range(z.shape[0]):
        y[o] = y[o] / s


@njit(cache=True)
def loss_grad(cfg, z, target, target_class, dz):
    """Loss of one step and its gradient w.r.t. the logits (dz is overwritten).

    MSE: mean_o (z_o - t_o)^2, dz = 2 (z - t) / O. Cross-entropy: -log softmax(z)[c],
    dz = softmax(z) - onehot(c) (NNDL eq. 6.30's per-step loss).
    """
    O = z.shape[0]
    if cfg[C_CLASSIFY] == 0:
        loss = 0.0
        for o in range(O):
            d = z[o] - target[o]
            loss += d * d
            dz[o] = 2.0 * d / O
        return loss / O
    m = z.max()
    s = 0.0
    for o in range(O):
        s += np.exp(z[o] - m)
    lse = m + np.log(s)
    for o in range(O):
        dz[o] = np.exp(z[o] - lse)
    dz[target_class] -= 1.0
    return lse - z[target_class]


@njit(cache=True)
def embed_rows(theta, cfg, tokens, x):
    """x[b] = embedding.weight[tokens[b]]."""
    I = cfg[C_IN]
    for b in range(tokens.shape[0]):
        base = cfg[C_EMB] + tokens[b] * I
        for q in range(I):
            x[b, q] = theta[base + q]


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def layer_inputs(cfg, lay, k, x, S0, S1):
    """Layer k's input (x, or the new h of layer k-1) and recurrent input (its previous h,
    or y_{t-1} for a Jordan layer), as contiguous [nb, n] arrays."""
    if k == 0:
        X = x
    else:
        X = np.ascontiguousarray(S1[:, lay[k - 1, L_SH]:lay[k - 1, L_SH] + lay[k - 1, L_H]])
    lr = lay[k]
    if lr[L_CELL] == JORDAN:
        R = np.ascontiguousarray(S0[:, cfg[C_Y]:cfg[C_Y] + lr[L_REC]])
    else:
        R = np.ascontiguousarray(S0[:, lr[L_SH]:lr[L_SH] + lr[L_H]])
    return X, R


@njit(cache=True)
def step_forward(theta, cfg, lay, x, S0, S1, cache, Z):
    """Run all layers and the head for nb streams; writes S1, cache and the logits Z."""
    nb = x.shape[0]
    variant = cfg[C_VARIANT]
    for k in range(cfg[C_NL]):
        lr = lay[k]
        H = lr[L_H]
        sh = lr[L_SH]
        sc = lr[L_SC]
        X, R = layer_inputs(cfg, lay, k, x, S0, S1)
        Hn = np.empty((nb, H), dtype=theta.dtype)
        Cn = np.empty((nb, H), dtype=theta.dtype)
        if sc >= 0:
            Cp = np.ascontiguousarray(S0[:, sc:sc + H])
        else:
            Cp = Cn
        layer_forward(theta, lr, variant, X, R, Cp, Hn, Cn, cache)
        S1[:, sh:sh + H] = Hn
        if sc >= 0:
            S1[:, sc:sc + H] = Cn
    htop = cfg[C_HTOP]
    head_logits(theta, cfg, S1[:, htop:htop + cfg[C_HLAST]], x, Z)
    if cfg[C_Y] >= 0:
        y = np.empty(cfg[C_OUT], dtype=theta.dtype)
        for b in range(nb):
            predict_row(cfg, Z[b], y)
            S1[b, cfg[C_Y]:cfg[C_Y] + cfg[C_OUT]] = y


@njit(cache=True)
def step_backward(theta, cfg, lay, x, S0, S1, cache, dZ, dS1, grad, dx, dS0, dHs, param_mode,
                  dbuf, dofs, r0):
    """VJP of ``step_forward``.

    dZ [nb, O]: gradient of this step's loss w.r.t. the logits; dS1 [nb, S]: gradient w.r.t.
    S1 from later steps. Writes dS0 (w.r.t. S0), dx (w.r.t. x; token models only: it reaches
    the embedding) and dHs (the total gradient w.r.t. S1, within-step paths included).
    param_mode 1: every parameter's gradient, the
    layers' W_ih/W_hh and bias ones as factors in rows r0.. of the deferred buffer dbuf
    (layer k's blocks at dofs[k], kernels.cells.D_*; kernels.cells.flush_outer adds them up),
    the rest into grad; 2 only the head's into grad (SnAp-1 takes the recurrent ones from its
    sensitivities); 0 none.
    dZ is modified in place (a Jordan model adds the gradient arriving through y_t).
    """
    nb = x.shape[0]
    O = cfg[C_OUT]
    HL = cfg[C_HLAST]
    htop = cfg[C_HTOP]
    variant = cfg[C_VARIANT]
    yo = cfg[C_Y]
    if yo >= 0:
        for b in range(nb):
            if cfg[C_CLASSIFY] == 0:
                for o in range(O):
                    dZ[b, o] += dS1[b, yo + o]
            else:
                py = 0.0
                for o in range(O):
                    py += S1[b, yo + o] * dS1[b, yo + o]
                for o in range(O):
                    dZ[b, o] += S1[b, yo + o] * (dS1[b, yo + o] - py)
    W_head = mat(theta, cfg[C_HW], O, HL)
    Htop = S1[:, htop:htop + HL]
    # a few outputs: the head's products as row updates (axpy), not matrix products whose
    # call costs more than their arithmetic
    few = O <= _FEW_OUTPUTS
    if param_mode > 0:
        blk = mat(grad, cfg[C_HW], O, HL)
        if few:
            for b in range(nb):
                for o in range(O):
                    d = dZ[b, o]
                    for j in range(HL):
                        blk[o, j] += d * Htop[b, j]
        else:
            blk += np.dot(dZ.T, np.ascontiguousarray(Htop))
        for b in range(nb):
            for o in range(O):
                grad[cfg[C_HB] + o] += dZ[b, o]
        if cfg[C_SKIP] >= 0:
            sk = mat(grad, cfg[C_SKIP], O, cfg[C_IN])
            sk += np.dot(dZ.T, np.ascontiguousarray(x))
    dS0[:, :] = 0.0
    dHs[:, :] = dS1
    if few:
        for b in range(nb):
            for o in range(O):
                d = dZ[b, o]
                for j in range(HL):
                    dHs[b, htop + j] += d * W_head[o, j]
    else:
        dHs[:, htop:htop + HL] += np.dot(dZ, W_head)
    want = param_mode == 1
    # dx (w.r.t. the layer-0 input) is wanted only to reach a token model's embedding
    want_dx0 = cfg[C_VOCAB] > 0
    for k in range(cfg[C_NL] - 1, -1, -1):
        lr = lay[k]
        H = lr[L_H]
        sh = lr[L_SH]
        sc = lr[L_SC]
        X, R = layer_inputs(cfg, lay, k, x, S0, S1)
        dH = np.ascontiguousarray(dHs[:, sh:sh + H])
        if sc >= 0:
            Cp = np.ascontiguousarray(S0[:, sc:sc + H])
            Cn = np.ascontiguousarray(S1[:, sc:sc + H])
            dC = np.ascontiguousarray(dHs[:, sc:sc + H])
        else:
            Cp = dH
            Cn = dH
            dC = dH
        dX = np.empty((nb, X.shape[1]), dtype=theta.dtype)
        dR = np.empty((nb, R.shape[1]), dtype=theta.dtype)
        dCp = np.empty((nb, H), dtype=theta.dtype)
        layer_backward(theta, lr, variant, X, R, Cp, Cn, cache, dH, dC, grad, dX, dR, dCp, want,
                       dbuf, dofs[k], r0, k > 0 or want_dx0)
        if lr[L_CELL] == JORDAN:
            dS0[:, yo:yo + lr[L_REC]] += dR
        else:
            dS0[:, sh:sh + H] += dR
        if sc >= 0:
            dS0[:, sc:sc + H] += dCp
        if k == 0:
            if want_dx0:
                dx[:, :] = dX
                if cfg[C_SKIP] >= 0:
                    dx += np.dot(dZ, mat(theta, cfg[C_SKIP], O, cfg[C_IN]))
        else:
            psh = lay[k - 1, L_SH]
            dHs[:, psh:psh + lay[k - 1, L_H]] += dX


@njit(cache=True)
def add_embedding_grad(cfg, tokens, dx, grad):
    """grad of embedding.weight[tokens[b]] += dx[b] (token input only)."""
    if cfg[C_VOCAB] == 0:
        return
    I = cfg[C_IN]
    for b in range(tokens.shape[0]):
        base = cfg[C_EMB] + tokens[b] * I
        for q in range(I):
            grad[base + q] += dx[b, q]
