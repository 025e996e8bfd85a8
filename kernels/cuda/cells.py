"""CUDA twin of ``kernels/cells.py``: one recurrent layer, one time step, forward and VJP, for
the one stream of the calling thread.

Every per-stream vector is a region of a stream-minor array: ``(array, row offset)`` at the
thread's column ``n``. The step's output lives in the scratch ``wk`` (regions ``so[W_*]``):
h and c in W_ST1, the gate activations in W_CACHE (same layout as the CPU cache). Weights are
column ``wc`` of ``W`` [P, columns]. Equations as the CPU twin: NNDL eq. 6.5-6.7 (SRN),
6.49-6.62 (LSTM and variants), 6.64-6.67 (GRU). Each unit's gate math is
``kernels/cellmath.py``'s, the functions the CPU twin compiles too; the loops and the
products are this target's own.
"""
import math

from numba import cuda

from .. import cellmath
from ..codes import (GRU_CHO, GRU_UNIT, JORDAN, L_BHH, L_BIH, L_CELL, L_CG, L_CX, L_DIAG, L_H,
                     L_IN, L_REC, L_SC, L_SH, L_UNIT, L_WCH, L_WHH, L_WIH, LSTM_UNIT, PEEPHOLE,
                     STANDARD, TANH_UNIT)
from ..registry import GATES_BY_CODE
from .scratch import W_CACHE, W_DA, W_DAHH, W_DCP, W_DHS, W_DR, W_DRH, W_DX, W_G, W_ST1


def device(fn):
    """One of ``kernels/cellmath.py``'s functions as an inlined device function: the CPU
    kernels compile the same one."""
    return cuda.jit(device=True, inline=True)(fn)


sigmoid = device(cellmath.sigmoid)
lstm_forget = device(cellmath.lstm_forget)
lstm_cell = device(cellmath.lstm_cell)
gru_hidden = device(cellmath.gru_hidden)
tanh_unit_backward = device(cellmath.tanh_unit_backward)
lstm_unit_backward = device(cellmath.lstm_unit_backward)
gru_unit_backward = device(cellmath.gru_unit_backward)
gru_cho_reset_backward = device(cellmath.gru_cho_reset_backward)


@cuda.jit(device=True, inline=True)
def n_gates(cell):
    """Gate blocks stacked in a layer's weights (kernels/registry.py, the one table)."""
    return GATES_BY_CODE[cell]


@cuda.jit(device=True)
def dot_row(W, wc, off, X, xo, n, m):
    """sum_q W[off + q, wc] * X[xo + q, n], q < m (m >= 1), in the arrays' precision."""
    acc = W[off, wc] * X[xo, n]
    for q in range(1, m):
        acc += W[off + q, wc] * X[xo + q, n]
    return acc


@cuda.jit(device=True)
def dot_col(W, wc, off, stride, D, do, n, m):
    """sum_a W[off + a * stride, wc] * D[do + a, n], a < m: a column of a weight block
    times a gradient vector (the transposed products of the VJP)."""
    acc = W[off, wc] * D[do, n]
    for a in range(1, m):
        acc += W[off + a * stride, wc] * D[do + a, n]
    return acc


@cuda.jit(device=True)
def rec_row(W, wc, lr, a, R, ro, n):
    """sum_q W_hh[a, q] R[ro + q, n]; a diagonal W_hh's row a has one term, unit a mod H."""
    if lr[L_DIAG] == 1:
        return W[lr[L_WHH] + a, wc] * R[ro + a % lr[L_H], n]
    return dot_row(W, wc, lr[L_WHH] + a * lr[L_REC], R, ro, n, lr[L_REC])


@cuda.jit(device=True)
def rec_col(W, wc, lr, q, D, do, n):
    """sum_a W_hh[a, q] D[do + a, n] over the G*H rows: the transposed product of rec_row."""
    H = lr[L_H]
    if lr[L_DIAG] == 1:
        acc = W[lr[L_WHH] + q, wc] * D[do + q, n]
        for g in range(1, n_gates(lr[L_CELL])):
            acc += W[lr[L_WHH] + g * H + q, wc] * D[do + g * H + q, n]
        return acc
    return dot_col(W, wc, lr[L_WHH] + q, lr[L_REC], D, do, n, n_gates(lr[L_CELL]) * H)


@cuda.jit(device=True)
def rec_offset(lr, yo):
    """Offset in the state of the layer's recurrent input: h_{t-1}, or y_{t-1} (Jordan)."""
    if lr[L_CELL] == JORDAN:
        return yo
    return lr[L_SH]


@cuda.jit(device=True)
def layer_forward(W, wc, lr, variant, yo, X, xo, S0, s0o, wk, so, n):
    """Layer forward from input X[xo:] and state S0[s0o:]; writes h (and c) into W_ST1 and the
    gate activations into W_CACHE."""
    unit = lr[L_UNIT]
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    wih = lr[L_WIH]
    whh = lr[L_WHH]
    bih = lr[L_BIH]
    bhh = lr[L_BHH]
    cg = so[W_CACHE] + lr[L_CG]
    cx = so[W_CACHE] + lr[L_CX]
    r0 = s0o + rec_offset(lr, yo)
    h1 = so[W_ST1] + lr[L_SH]
    if unit == GRU_UNIT and variant == GRU_CHO:
        for j in range(H):
            r = sigmoid(dot_row(W, wc, wih + j * nin, X, xo, n, nin) + W[bih + j, wc]
                        + dot_row(W, wc, whh + j * nrec, S0, r0, n, nrec) + W[bhh + j, wc])
            z = sigmoid(dot_row(W, wc, wih + (H + j) * nin, X, xo, n, nin) + W[bih + H + j, wc]
                        + dot_row(W, wc, whh + (H + j) * nrec, S0, r0, n, nrec)
                        + W[bhh + H + j, wc])
            wk[cg + j, n] = r
            wk[cg + H + j, n] = z
            wk[cx + j, n] = r * S0[r0 + j, n]
        for j in range(H):
            z = wk[cg + H + j, n]
            nn = math.tanh(dot_row(W, wc, wih + (2 * H + j) * nin, X, xo, n, nin)
                           + W[bih + 2 * H + j, wc]
                           + dot_row(W, wc, whh + (2 * H + j) * nrec, wk, cx, n, nrec)
                           + W[bhh + 2 * H + j, wc])
            wk[cg + 2 * H + j, n] = nn
            wk[h1 + j, n] = gru_hidden(z, nn, S0[r0 + j, n])
        return
    if unit == TANH_UNIT:
        for j in range(H):
            h = math.tanh(dot_row(W, wc, wih + j * nin, X, xo, n, nin) + W[bih + j, wc]
                          + rec_row(W, wc, lr, j, S0, r0, n) + W[bhh + j, wc])
            wk[cg + j, n] = h
            wk[h1 + j, n] = h
    elif unit == LSTM_UNIT:
        wch = lr[L_WCH]
        c1 = so[W_ST1] + lr[L_SC]
        c0 = s0o + lr[L_SC]
        for j in range(H):
            cp = S0[c0 + j, n]
            ai = (dot_row(W, wc, wih + j * nin, X, xo, n, nin) + W[bih + j, wc]
                  + rec_row(W, wc, lr, j, S0, r0, n) + W[bhh + j, wc])
            af = (dot_row(W, wc, wih + (H + j) * nin, X, xo, n, nin) + W[bih + H + j, wc]
                  + rec_row(W, wc, lr, H + j, S0, r0, n) + W[bhh + H + j, wc])
            ag = (dot_row(W, wc, wih + (2 * H + j) * nin, X, xo, n, nin)
                  + W[bih + 2 * H + j, wc]
                  + rec_row(W, wc, lr, 2 * H + j, S0, r0, n) + W[bhh + 2 * H + j, wc])
            ao = (dot_row(W, wc, wih + (3 * H + j) * nin, X, xo, n, nin)
                  + W[bih + 3 * H + j, wc]
                  + rec_row(W, wc, lr, 3 * H + j, S0, r0, n) + W[bhh + 3 * H + j, wc])
            if variant == PEEPHOLE:
                ai += W[wch + j, wc] * cp
                af += W[wch + H + j, wc] * cp
            i = sigmoid(ai)
            fs = 0.0
            if variant == STANDARD or variant == PEEPHOLE:
                fs = sigmoid(af)
            f = lstm_forget(variant, i, fs)
            g = math.tanh(ag)
            c = lstm_cell(f, cp, i, g)
            if variant == PEEPHOLE:
                ao += W[wch + 2 * H + j, wc] * c
            o = sigmoid(ao)
            tc = math.tanh(c)
            wk[cg + j, n] = i
            wk[cg + H + j, n] = f
            wk[cg + 2 * H + j, n] = g
            wk[cg + 3 * H + j, n] = o
            wk[cx + j, n] = tc
            wk[c1 + j, n] = c
            wk[h1 + j, n] = o * tc
    else:  # GRU, PyTorch's form
        for j in range(H):
            r = sigmoid(dot_row(W, wc, wih + j * nin, X, xo, n, nin) + W[bih + j, wc]
                        + dot_row(W, wc, whh + j * nrec, S0, r0, n, nrec) + W[bhh + j, wc])
            z = sigmoid(dot_row(W, wc, wih + (H + j) * nin, X, xo, n, nin) + W[bih + H + j, wc]
                        + dot_row(W, wc, whh + (H + j) * nrec, S0, r0, n, nrec)
                        + W[bhh + H + j, wc])
            hn = dot_row(W, wc, whh + (2 * H + j) * nrec, S0, r0, n, nrec) + W[bhh + 2 * H + j, wc]
            nn = math.tanh(dot_row(W, wc, wih + (2 * H + j) * nin, X, xo, n, nin)
                           + W[bih + 2 * H + j, wc] + r * hn)
            wk[cg + j, n] = r
            wk[cg + H + j, n] = z
            wk[cg + 2 * H + j, n] = nn
            wk[cx + j, n] = hn
            wk[h1 + j, n] = gru_hidden(z, nn, S0[r0 + j, n])


@cuda.jit(device=True)
def _acc_outer(wk, g0, off, D, do, na, X, xo, m, n):
    """grad block at ``off`` ([na, m]) += D[do:do+na] (outer) X[xo:xo+m]."""
    for a in range(na):
        d = D[do + a, n]
        base = g0 + off + a * m
        for q in range(m):
            wk[base + q, n] += d * X[xo + q, n]


@cuda.jit(device=True)
def layer_backward(W, wc, lr, variant, yo, X, xo, S0, s0o, wk, so, n, want):
    """VJP of ``layer_forward`` (BPTT, eq. 6.29-6.39) after it ran into W_ST1/W_CACHE.

    Reads dH, dC from W_DHS; writes dX (W_DX), dR (W_DR), dCp (W_DCP); when ``want`` adds the
    parameter gradient to W_G."""
    unit = lr[L_UNIT]
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    G = n_gates(lr[L_CELL])
    GH = G * H
    wih = lr[L_WIH]
    whh = lr[L_WHH]
    cg = so[W_CACHE] + lr[L_CG]
    cx = so[W_CACHE] + lr[L_CX]
    r0 = s0o + rec_offset(lr, yo)
    dh0 = so[W_DHS] + lr[L_SH]
    da = so[W_DA]
    dahh = so[W_DAHH]
    dx = so[W_DX]
    dr = so[W_DR]
    g0 = so[W_G]
    if unit == TANH_UNIT:
        for j in range(H):
            wk[da + j, n] = tanh_unit_backward(wk[cg + j, n], wk[dh0 + j, n])
    elif unit == LSTM_UNIT:
        wch = lr[L_WCH]
        dc0 = so[W_DHS] + lr[L_SC]
        c0 = s0o + lr[L_SC]
        c1 = so[W_ST1] + lr[L_SC]
        dcp0 = so[W_DCP]
        peep = variant == PEEPHOLE
        for j in range(H):
            cp = S0[c0 + j, n]
            wci = 0.0
            wcf = 0.0
            wco = 0.0
            if peep:
                wci = W[wch + j, wc]
                wcf = W[wch + H + j, wc]
                wco = W[wch + 2 * H + j, wc]
            dai, daf, dag, dao, dcp = lstm_unit_backward(
                variant, wk[cg + j, n], wk[cg + H + j, n], wk[cg + 2 * H + j, n],
                wk[cg + 3 * H + j, n], wk[cx + j, n], cp, wk[dh0 + j, n], wk[dc0 + j, n],
                wci, wcf, wco)
            if peep and want:
                wk[g0 + wch + j, n] += dai * cp
                wk[g0 + wch + H + j, n] += daf * cp
                wk[g0 + wch + 2 * H + j, n] += dao * wk[c1 + j, n]
            wk[da + j, n] = dai
            wk[da + H + j, n] = daf
            wk[da + 2 * H + j, n] = dag
            wk[da + 3 * H + j, n] = dao
            wk[dcp0 + j, n] = dcp
    else:
        for j in range(H):
            dar, daz, dn_ih, dn_hh = gru_unit_backward(
                variant, wk[cg + j, n], wk[cg + H + j, n], wk[cg + 2 * H + j, n],
                wk[cx + j, n], S0[r0 + j, n], wk[dh0 + j, n])
            wk[da + j, n] = dar  # Cho: 0 here, its own product below
            wk[dahh + j, n] = dar
            wk[da + H + j, n] = daz
            wk[dahh + H + j, n] = daz
            wk[da + 2 * H + j, n] = dn_ih
            wk[dahh + 2 * H + j, n] = dn_hh
        if variant == GRU_CHO:
            drh = so[W_DRH]
            whn = whh + 2 * H * nrec
            for j in range(H):
                wk[drh + j, n] = dot_col(W, wc, whn + j, nrec, wk, dahh + 2 * H, n, H)
            for j in range(H):
                dar = gru_cho_reset_backward(wk[drh + j, n], S0[r0 + j, n], wk[cg + j, n])
                wk[da + j, n] = dar
                wk[dahh + j, n] = dar
            for q in range(nrec):
                wk[dr + q, n] = (dot_col(W, wc, whh + q, nrec, wk, dahh, n, 2 * H)
                                 + wk[drh + q, n] * wk[cg + q, n]
                                 + wk[dh0 + q, n] * wk[cg + H + q, n])
            if want:
                _acc_outer(wk, g0, whh, wk, dahh, 2 * H, S0, r0, nrec, n)
                _acc_outer(wk, g0, whn, wk, dahh + 2 * H, H, wk, cx, nrec, n)
        else:
            for q in range(nrec):
                wk[dr + q, n] = (dot_col(W, wc, whh + q, nrec, wk, dahh, n, GH)
                                 + wk[dh0 + q, n] * wk[cg + H + q, n])
            if want:
                _acc_outer(wk, g0, whh, wk, dahh, GH, S0, r0, nrec, n)
        for q in range(nin):
            wk[dx + q, n] = dot_col(W, wc, wih + q, nin, wk, da, n, GH)
        if want:
            _acc_outer(wk, g0, wih, wk, da, GH, X, xo, nin, n)
            for a in range(GH):
                wk[g0 + lr[L_BIH] + a, n] += wk[da + a, n]
                wk[g0 + lr[L_BHH] + a, n] += wk[dahh + a, n]
        return
    for q in range(nin):
        wk[dx + q, n] = dot_col(W, wc, wih + q, nin, wk, da, n, GH)
    for q in range(nrec):
        wk[dr + q, n] = rec_col(W, wc, lr, q, wk, da, n)
    if want:
        _acc_outer(wk, g0, wih, wk, da, GH, X, xo, nin, n)
        if lr[L_DIAG] == 1:  # row a of W_hh is one weight, on unit a mod H
            for a in range(GH):
                wk[g0 + whh + a, n] += wk[da + a, n] * S0[r0 + a % H, n]
        else:
            _acc_outer(wk, g0, whh, wk, da, GH, S0, r0, nrec, n)
        for a in range(GH):
            wk[g0 + lr[L_BIH] + a, n] += wk[da + a, n]
            wk[g0 + lr[L_BHH] + a, n] += wk[da + a, n]
