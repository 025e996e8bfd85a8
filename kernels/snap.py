"""SnAp-1 (Menick et al. 2020, "Practical Real Time Recurrent Learning with a Sparse
Approximation"): RTRL's recursion M_t = J_t M_{t-1} + I_t (NNDL eq. 6.42) kept only on the
sparsity pattern of the immediate Jacobian I_t, i.e. each parameter's influence on the one unit
it writes. Per parameter p of unit j: m_p <- J_jj m_p + I_p, where J_jj is the unit's own 1x1
block of the state Jacobian (2x2 for LSTM: h_j and c_j). O(P) per step.

The sensitivity is a flat [2 * P] array: m[p] for h_j, m[P + p] for c_j (LSTM).
"""
import numpy as np
from numba import njit

from . import cellmath
from .cells import _inline, mat, n_gates
from .codes import (C_CLASSIFY, C_HLAST, C_HW, C_NL, C_OUT, C_P, C_VARIANT, C_Y, GRU_CHO,
                    GRU_UNIT, JORDAN, L_BHH, L_BIH, L_CELL, L_CG, L_CX, L_DIAG, L_H, L_IN, L_REC,
                    L_SC, L_SH, L_UNIT, L_WCH, L_WHH, L_WIH, LSTM_UNIT, PEEPHOLE, TANH_UNIT)

# the per-unit partials, the same functions the CUDA twin compiles as device functions
snap_update = _inline(cellmath.snap_update)
snap_update_h = _inline(cellmath.snap_update_h)
snap_clear = _inline(cellmath.snap_clear)
snap_tanh_partials = _inline(cellmath.snap_tanh_partials)
snap_lstm_partials = _inline(cellmath.snap_lstm_partials)
snap_gru_partials = _inline(cellmath.snap_gru_partials)
gru_cho_cross_term = _inline(cellmath.gru_cho_cross_term)
recurrent_weight_at = _inline(cellmath.recurrent_weight_at)


@njit(inline="always")
def _upd(m, P, p, J, ih, ic, two):
    """One parameter's m <- J_jj m + I; ``two``: the unit has a cell state (LSTM), else
    only the h influence moves (the c one stays 0)."""
    if two:
        m[p], m[P + p] = snap_update(J[0, 0], J[0, 1], J[1, 0], J[1, 1], m[p], m[P + p], ih, ic)
    else:
        m[p] = snap_update_h(J[0, 0], m[p], ih)


@njit(inline="always")
def _upd_row(m, P, base, J, ih, ic, v, two):
    """_upd over a row of weights: m[base + q] with immediate (ih, ic) * v[q]. J's entries
    are held in locals, so the loop carries no reloads and vectorises; the arithmetic is
    _upd's (``snap_update``, ``snap_update_h``)."""
    j00, j01, j10, j11 = J[0, 0], J[0, 1], J[1, 0], J[1, 1]
    mh = m[base:base + v.shape[0]]
    if not two:
        for q in range(v.shape[0]):
            mh[q] = snap_update_h(j00, mh[q], ih * v[q])
        return
    mc = m[P + base:P + base + v.shape[0]]
    for q in range(v.shape[0]):
        mh[q], mc[q] = snap_update(j00, j01, j10, j11, mh[q], mc[q], ih * v[q], ic * v[q])


@njit(inline="always")
def _unit_partials(theta, cfg, lr, variant, j, s0, s1, cache, d_ih, d_hh, J, d_pe):
    """Unit j's partials, for a gated unit (LSTM, GRU; tanh units: ``_propagate_tanh``):
    d_ih[g] / d_hh[g] = d(h_j, c_j)/d(pre-activation of gate g, from the input / recurrent
    side); J = d(h_j, c_j)_t / d(h_j, c_j)_{t-1}; d_pe[0..2] = immediate d(h_j, c_j)/d(w_ci,
    w_cf, w_co) for peepholes. The math is ``kernels/cellmath.py``'s; this gathers its
    scalars."""
    unit = lr[L_UNIT]
    H = lr[L_H]
    nrec = lr[L_REC]
    sh = lr[L_SH]
    sc = lr[L_SC]
    cg = lr[L_CG]
    cx = lr[L_CX]
    whh = lr[L_WHH]
    diag = lr[L_DIAG] == 1
    snap_clear(d_ih, d_hh, J, d_pe)
    if unit == LSTM_UNIT:
        wci = 0.0
        wcf = 0.0
        wco = 0.0
        if variant == PEEPHOLE:
            wci = theta[lr[L_WCH] + j]
            wcf = theta[lr[L_WCH] + H + j]
            wco = theta[lr[L_WCH] + 2 * H + j]
        snap_lstm_partials(variant, cache[cg + j], cache[cg + H + j], cache[cg + 2 * H + j],
                           cache[cg + 3 * H + j], cache[cx + j], s0[sc + j], s1[sc + j],
                           theta[recurrent_weight_at(whh, nrec, diag, j, j)],
                           theta[recurrent_weight_at(whh, nrec, diag, H + j, j)],
                           theta[recurrent_weight_at(whh, nrec, diag, 2 * H + j, j)],
                           theta[recurrent_weight_at(whh, nrec, diag, 3 * H + j, j)], wci, wcf, wco,
                           d_ih, d_hh, J, d_pe)
    else:  # GRU
        cross = 0.0
        if variant == GRU_CHO:
            for k in range(H):
                if k != j:
                    cross += gru_cho_cross_term(theta[whh + (2 * H + j) * nrec + k], s0[sh + k],
                                                cache[cg + k], theta[whh + k * nrec + j])
        snap_gru_partials(variant, cache[cg + j], cache[cg + H + j], cache[cg + 2 * H + j],
                          cache[cx + j], s0[sh + j], theta[whh + j * nrec + j],
                          theta[whh + (H + j) * nrec + j], theta[whh + (2 * H + j) * nrec + j],
                          cross, d_ih, d_hh, J)


@njit(cache=True)
def _jordan_loop(theta, cfg, lay, s0):
    """For each unit j of a Jordan layer 0: sum_o W_hh[j, o] dy_{t-1,o}/dh0_{t-1,j}, the
    Jacobian dy/dh0 taken through the head and the (Elman) layers above at step t-1."""
    O = cfg[C_OUT]
    HL = cfg[C_HLAST]
    yo = cfg[C_Y]
    D = mat(theta, cfg[C_HW], O, HL).copy()  # dy/dh_last for a linear head
    if cfg[C_CLASSIFY] == 1:
        p = s0[yo:yo + O]
        mean_row = np.dot(p, D)
        for o in range(O):
            D[o, :] = p[o] * (D[o, :] - mean_row)
    for k in range(cfg[C_NL] - 1, 0, -1):
        lr = lay[k]
        H = lr[L_H]
        W_ih = mat(theta, lr[L_WIH], H, lr[L_IN])
        hk = s0[lr[L_SH]:lr[L_SH] + H]
        Dk = D.copy()
        for o in range(O):
            for a in range(H):
                Dk[o, a] *= 1.0 - hk[a] * hk[a]
        D = np.dot(Dk, W_ih)
    lr0 = lay[0]
    W_hh = mat(theta, lr0[L_WHH], lr0[L_H], O)
    out = np.zeros(lr0[L_H], dtype=theta.dtype)
    for j in range(lr0[L_H]):
        for o in range(O):
            out[j] += W_hh[j, o] * D[o, j]
    return out


@njit(inline="always")
def _row_step(m, base, j00, d, v):
    """m[base + q] <- j00 m[base + q] + d v[q]: a tanh unit's row of weights."""
    mh = m[base:base + v.shape[0]]
    for q in range(v.shape[0]):
        mh[q] = snap_update_h(j00, mh[q], d * v[q])


@njit(inline="always")
def _propagate_tanh(theta, cfg, lay, lr, inp, rec, s0, cache, m):
    """snap_propagate for a layer of tanh units (Elman, Jordan, IndRNN): each unit's partials
    are two scalars (``snap_tanh_partials``), so the loop keeps them in registers instead of
    the gated units' [4, 2] arrays (about 10x less time per unit)."""
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    whh = lr[L_WHH]
    diag = lr[L_DIAG] == 1
    jordan = lr[L_CELL] == JORDAN
    jordan_loop = _jordan_loop(theta, cfg, lay, s0) if jordan else np.zeros(0, dtype=theta.dtype)
    for j in range(H):
        if jordan:
            loop = jordan_loop[j]
        else:
            loop = theta[recurrent_weight_at(whh, nrec, diag, j, j)]
        d, j00 = snap_tanh_partials(cache[lr[L_CG] + j], loop)
        _row_step(m, lr[L_WIH] + j * nin, j00, d, inp)
        m[lr[L_BIH] + j] = snap_update_h(j00, m[lr[L_BIH] + j], d)
        if diag:  # W_hh[j] meets only h_{t-1, j}
            m[whh + j] = snap_update_h(j00, m[whh + j], d * rec[j])
        else:
            _row_step(m, whh + j * nrec, j00, d, rec)
        m[lr[L_BHH] + j] = snap_update_h(j00, m[lr[L_BHH] + j], d)


@njit(cache=True)
def snap_propagate(theta, cfg, lay, x, s0, s1, cache, m):
    """m <- J_jj m + I for every parameter of every recurrent unit, in place."""
    P = cfg[C_P]
    variant = cfg[C_VARIANT]
    d_ih = np.zeros((4, 2))
    d_hh = np.zeros((4, 2))
    J = np.zeros((2, 2))
    d_pe = np.zeros((3, 2))
    for k in range(cfg[C_NL]):
        lr = lay[k]
        cell = lr[L_CELL]
        H = lr[L_H]
        nin = lr[L_IN]
        nrec = lr[L_REC]
        G = n_gates(cell)
        diag = lr[L_DIAG] == 1
        if k == 0:
            inp = x
        else:
            psh = lay[k - 1, L_SH]
            inp = s1[psh:psh + nin]
        if cell == JORDAN:
            rec = s0[cfg[C_Y]:cfg[C_Y] + nrec]
        else:
            rec = s0[lr[L_SH]:lr[L_SH] + nrec]
        if lr[L_UNIT] == TANH_UNIT:
            _propagate_tanh(theta, cfg, lay, lr, inp, rec, s0, cache, m)
            continue
        cho = lr[L_UNIT] == GRU_UNIT and variant == GRU_CHO
        two = lr[L_SC] >= 0
        for j in range(H):
            _unit_partials(theta, cfg, lr, variant, j, s0, s1, cache, d_ih, d_hh, J, d_pe)
            for g in range(G):
                a = g * H + j
                ih, ic = d_ih[g, 0], d_ih[g, 1]
                _upd_row(m, P, lr[L_WIH] + a * nin, J, ih, ic, inp, two)
                _upd(m, P, lr[L_BIH] + a, J, ih, ic, two)
                hh, hc = d_hh[g, 0], d_hh[g, 1]
                base = lr[L_WHH] + a * nrec
                if diag:  # W_hh[a] meets only h_{t-1, j}
                    _upd(m, P, recurrent_weight_at(lr[L_WHH], nrec, diag, a, j), J,
                         hh * rec[j], hc * rec[j], two)
                elif cho and g == 2:
                    _upd_row(m, P, base, J, hh, hc, cache[lr[L_CX]:lr[L_CX] + H], two)
                else:
                    _upd_row(m, P, base, J, hh, hc, rec, two)
                _upd(m, P, lr[L_BHH] + a, J, hh, hc, two)
            if lr[L_WCH] >= 0:  # peepholes
                for x3 in range(3):
                    _upd(m, P, lr[L_WCH] + x3 * H + j, J, d_pe[x3, 0], d_pe[x3, 1], two)


@njit(cache=True)
def _axpy_row(gvec, m, base, n, dh):
    """gvec[base:base+n] += dh * m[base:base+n], over views so that the loop vectorises."""
    gv = gvec[base:base + n]
    mv = m[base:base + n]
    for q in range(n):
        gv[q] += dh * mv[q]


@njit(cache=True)
def snap_gradient(cfg, lay, m, dHs, gvec):
    """gvec[p] += dL_t/dh_j · m_p for every recurrent parameter p (dHs: dL_t/dS_t, within
    step t)."""
    for k in range(cfg[C_NL]):
        lr = lay[k]
        H = lr[L_H]
        nin = lr[L_IN]
        nrec = lr[L_REC]
        G = n_gates(lr[L_CELL])
        sh = lr[L_SH]
        diag = lr[L_DIAG] == 1
        for j in range(H):
            dh = dHs[sh + j]
            for g in range(G):
                a = g * H + j
                _axpy_row(gvec, m, lr[L_WIH] + a * nin, nin, dh)
                if diag:
                    gvec[lr[L_WHH] + a] += dh * m[lr[L_WHH] + a]
                else:
                    _axpy_row(gvec, m, lr[L_WHH] + a * nrec, nrec, dh)
                gvec[lr[L_BIH] + a] += dh * m[lr[L_BIH] + a]
                gvec[lr[L_BHH] + a] += dh * m[lr[L_BHH] + a]
            if lr[L_WCH] >= 0:
                for x3 in range(3):
                    p = lr[L_WCH] + x3 * H + j
                    gvec[p] += dh * m[p]
