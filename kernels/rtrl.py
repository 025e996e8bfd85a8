"""Exact real-time recurrent learning for one stream (NNDL 6.4.2, eq. 6.40-6.44).

The sensitivity M_t = dS_t/dθ is a flat [S * P] array, row s holding d(state s)/dθ. One step:
M_t = J_t M_{t-1} + I_t (eq. 6.42), where the product with J_t runs through the gate
pre-activations, dA = W_ih dX + W_hh dR + (immediate terms), and then each unit's elementwise
nonlinearity. The gradient of step t's loss is dL_t/dS_t · M_t plus the head's direct term
(eq. 6.44). Cost per step: sum over layers of G·H·(in + rec)·P multiply-adds.
"""
import numpy as np
from numba import njit

from . import cellmath
from .cells import _inline, mat, n_gates
from .codes import (C_CLASSIFY, C_EMB, C_HB, C_HLAST, C_HTOP, C_HW, C_IN, C_NL, C_OUT, C_P,
                    C_SKIP, C_VARIANT, C_VOCAB, C_Y, GRU_CHO, GRU_UNIT, JORDAN, L_BHH, L_BIH,
                    L_CELL, L_CG, L_CX, L_DIAG, L_H, L_IN, L_REC, L_SC, L_SH, L_UNIT, L_WCH, L_WHH,
                    L_WIH, PEEPHOLE, TANH_UNIT)

# one parameter's tangent through one unit: the functions the CUDA twin compiles
tanh_unit_tangent = _inline(cellmath.tanh_unit_tangent)
lstm_unit_tangent = _inline(cellmath.lstm_unit_tangent)
gru_cho_reset_tangent = _inline(cellmath.gru_cho_reset_tangent)
gru_unit_tangent = _inline(cellmath.gru_unit_tangent)


@njit(cache=True)
def rows(M, start, n, P):
    """Rows [start, start + n) of a flat [S * P] sensitivity, as an [n, P] view."""
    return M[start * P:(start + n) * P].reshape((n, P))


@njit(cache=True)
def _immediate(dA, off_w, off_b, rows_from, nrows, inp):
    """dA[a, off_w + a*len(inp) + q] += inp[q]; dA[a, off_b + a] += 1 for rows a of one block."""
    nin = inp.shape[0]
    for a in range(rows_from, rows_from + nrows):
        base = off_w + a * nin
        for q in range(nin):
            dA[a, base + q] += inp[q]
        dA[a, off_b + a] += 1.0


@njit(cache=True)
def _recurrent_tangent(theta, lr, Mrec, r):
    """[G*H, P] = W_hh M_rec plus W_hh's and b_hh's immediate terms (recurrent input r). A
    diagonal W_hh [G*H] scales row a mod H of M_rec: H*P work instead of H*rec*P."""
    GH = n_gates(lr[L_CELL]) * lr[L_H]
    if lr[L_DIAG] == 0:
        dA = np.dot(mat(theta, lr[L_WHH], GH, lr[L_REC]), Mrec)
        _immediate(dA, lr[L_WHH], lr[L_BHH], 0, GH, r)
        return dA
    H = lr[L_H]
    whh = lr[L_WHH]
    dA = np.empty((GH, Mrec.shape[1]), dtype=theta.dtype)
    for a in range(GH):
        dA[a] = theta[whh + a] * Mrec[a % H]
        dA[a, whh + a] += r[a % H]
        dA[a, lr[L_BHH] + a] += 1.0
    return dA


@njit(cache=True)
def _add_input_tangent(theta, cfg, lay, k, token, x, s1, M1, dA):
    """dA [G*H, P] += the tangent of layer k's input pre-activations W_ih x_t + b_ih: through
    the embedding row (token models' layer 0) or the layer below (W_ih M_t[below]), plus the
    immediate term of W_ih and b_ih."""
    P = cfg[C_P]
    lr = lay[k]
    nin = lr[L_IN]
    GH = n_gates(lr[L_CELL]) * lr[L_H]
    W_ih = mat(theta, lr[L_WIH], GH, nin)
    if k == 0:
        inp = x
        if cfg[C_VOCAB] > 0:
            base = cfg[C_EMB] + token * nin
            for a in range(GH):
                for q in range(nin):
                    dA[a, base + q] += W_ih[a, q]
    else:
        psh = lay[k - 1, L_SH]
        dA += np.dot(W_ih, rows(M1, psh, nin, P))
        inp = s1[psh:psh + nin]
    _immediate(dA, lr[L_WIH], lr[L_BIH], 0, GH, inp)


@njit(cache=True)
def _propagate_summed(theta, cfg, lay, k, token, x, s0, s1, cache, M0, M1):
    """Layer k of rtrl_propagate for tanh and LSTM units, which see the input and
    recurrent tangents only through their sum: dA = W_hh M_rec (+ W_ih M_below) + I_t,
    built in one [G*H, P] array, without the zero-filled input half (layer 0's input
    tangent is only the immediate term) and without copies."""
    P = cfg[C_P]
    variant = cfg[C_VARIANT]
    lr = lay[k]
    H = lr[L_H]
    nrec = lr[L_REC]
    sh = lr[L_SH]
    sc = lr[L_SC]
    cg = lr[L_CG]
    cx = lr[L_CX]
    rec0 = cfg[C_Y] if lr[L_CELL] == JORDAN else sh
    dA = _recurrent_tangent(theta, lr, rows(M0, rec0, nrec, P), s0[rec0:rec0 + nrec])
    _add_input_tangent(theta, cfg, lay, k, token, x, s1, M1, dA)
    Mh1 = rows(M1, sh, H, P)
    if lr[L_UNIT] == TANH_UNIT:
        for j in range(H):
            h = cache[cg + j]
            for p in range(P):
                Mh1[j, p] = tanh_unit_tangent(h, dA[j, p])
        return
    Mc1 = rows(M1, sc, H, P)
    Mc0 = rows(M0, sc, H, P)
    wc = lr[L_WCH]
    for j in range(H):
        i = cache[cg + j]
        f = cache[cg + H + j]
        g = cache[cg + 2 * H + j]
        o = cache[cg + 3 * H + j]
        tc = cache[cx + j]
        cp = s0[sc + j]
        wci = 0.0
        wcf = 0.0
        wco = 0.0
        if variant == PEEPHOLE:
            wci = theta[wc + j]
            wcf = theta[wc + H + j]
            wco = theta[wc + 2 * H + j]
            dA[j, wc + j] += cp
            dA[H + j, wc + H + j] += cp
            dA[3 * H + j, wc + 2 * H + j] += s1[sc + j]
        for p in range(P):
            Mc1[j, p], Mh1[j, p] = lstm_unit_tangent(
                variant, i, f, g, o, tc, cp, wci, wcf, wco, dA[j, p], dA[H + j, p],
                dA[2 * H + j, p], dA[3 * H + j, p], Mc0[j, p])


@njit(cache=True)
def rtrl_propagate(theta, cfg, lay, token, x, s0, s1, cache, M0, M1):
    """M1 = J_t M0 + I_t for one stream; x [I], s0/s1 [S], cache [C], M0/M1 [S * P]."""
    P = cfg[C_P]
    variant = cfg[C_VARIANT]
    for k in range(cfg[C_NL]):
        lr = lay[k]
        if lr[L_UNIT] != GRU_UNIT:
            _propagate_summed(theta, cfg, lay, k, token, x, s0, s1, cache, M0, M1)
            continue
        # GRU: the input and recurrent tangents stay apart (r scales only the recurrent n part)
        H = lr[L_H]
        nrec = lr[L_REC]
        GH = 3 * H
        sh = lr[L_SH]
        cg = lr[L_CG]
        cx = lr[L_CX]
        dAi = np.zeros((GH, P), dtype=theta.dtype)
        _add_input_tangent(theta, cfg, lay, k, token, x, s1, M1, dAi)
        # recurrent part
        r = s0[sh:sh + nrec]
        Mr = rows(M0, sh, nrec, P)
        nrows_hh = 2 * H if variant == GRU_CHO else GH
        W_hh = mat(theta, lr[L_WHH], nrows_hh, nrec)
        dAh = np.zeros((GH, P), dtype=theta.dtype)
        dAh[:nrows_hh] = np.dot(W_hh, Mr)
        _immediate(dAh, lr[L_WHH], lr[L_BHH], 0, nrows_hh, r)
        Mh1 = rows(M1, sh, H, P)
        Mh0 = rows(M0, sh, H, P)
        if variant == GRU_CHO:
            dRH = np.empty((H, P), dtype=theta.dtype)
            for j in range(H):
                rj = cache[cg + j]
                hp = s0[sh + j]
                for p in range(P):
                    # keep dr/dθ in dAh for the update below
                    dAh[j, p], dRH[j, p] = gru_cho_reset_tangent(rj, hp, dAi[j, p] + dAh[j, p],
                                                                 Mh0[j, p])
            W_hn = mat(theta, lr[L_WHH] + 2 * H * nrec, H, nrec)
            dAh[2 * H:] = np.dot(W_hn, dRH)
            _immediate(dAh, lr[L_WHH], lr[L_BHH], 2 * H, H, cache[cx:cx + H])
        for j in range(H):
            rj = cache[cg + j]
            z = cache[cg + H + j]
            n = cache[cg + 2 * H + j]
            hn = cache[cx + j]
            hp = s0[sh + j]
            for p in range(P):
                Mh1[j, p] = gru_unit_tangent(variant, rj, z, n, hn, hp, dAi[j, p] + dAh[j, p],
                                             dAi[H + j, p] + dAh[H + j, p], dAi[2 * H + j, p],
                                             dAh[2 * H + j, p], Mh0[j, p])
    # a Jordan model carries y_t = prediction(head(h_last)) in its state
    yo = cfg[C_Y]
    if yo >= 0:
        O = cfg[C_OUT]
        HL = cfg[C_HLAST]
        htop = cfg[C_HTOP]
        dZ = np.dot(mat(theta, cfg[C_HW], O, HL), rows(M1, htop, HL, P))
        _immediate(dZ, cfg[C_HW], cfg[C_HB], 0, O, s1[htop:htop + HL])
        _add_skip_tangent(theta, cfg, token, x, dZ)
        My = rows(M1, yo, O, P)
        if cfg[C_CLASSIFY] == 0:
            My[:, :] = dZ
        else:
            for p in range(P):
                py = 0.0
                for o in range(O):
                    py += s1[yo + o] * dZ[o, p]
                for o in range(O):
                    My[o, p] = s1[yo + o] * (dZ[o, p] - py)


@njit(cache=True)
def _add_skip_tangent(theta, cfg, token, x, dZ):
    """dZ [O, P] += the linear skip's direct tangent of the logits: x on skip.weight's rows,
    and W_skip on the embedding row of the token (token models)."""
    if cfg[C_SKIP] < 0:
        return
    O = cfg[C_OUT]
    F = cfg[C_IN]
    W_skip = mat(theta, cfg[C_SKIP], O, F)
    for o in range(O):
        base = cfg[C_SKIP] + o * F
        for q in range(F):
            dZ[o, base + q] += x[q]
        if cfg[C_VOCAB] > 0:
            eb = cfg[C_EMB] + token * F
            for q in range(F):
                dZ[o, eb + q] += W_skip[o, q]


@njit(cache=True)
def rtrl_gradient(theta, cfg, s1, M1, dz, token, x, gvec):
    """gvec = dL_t/dθ = (W_head^T dz) · M_t[h_last] + the head's direct term (eq. 6.44), and
    the linear skip's: dz ⊗ x, and W_skip^T dz on the token's embedding row."""
    P = cfg[C_P]
    O = cfg[C_OUT]
    HL = cfg[C_HLAST]
    htop = cfg[C_HTOP]
    W = mat(theta, cfg[C_HW], O, HL)
    dh = np.dot(dz, W)
    gvec[:] = np.dot(dh, rows(M1, htop, HL, P))
    for o in range(O):
        for q in range(HL):
            gvec[cfg[C_HW] + o * HL + q] += dz[o] * s1[htop + q]
        gvec[cfg[C_HB] + o] += dz[o]
    if cfg[C_SKIP] >= 0:
        F = cfg[C_IN]
        W_skip = mat(theta, cfg[C_SKIP], O, F)
        for o in range(O):
            for q in range(F):
                gvec[cfg[C_SKIP] + o * F + q] += dz[o] * x[q]
                if cfg[C_VOCAB] > 0:
                    gvec[cfg[C_EMB] + token * F + q] += dz[o] * W_skip[o, q]
