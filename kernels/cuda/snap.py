"""CUDA twin of ``kernels/snap.py``: SnAp-1 (Menick et al. 2020) for the calling thread's
stream. Each parameter p of unit j keeps its influence on that unit only:
m_p <- J_jj m_p + I_p (the diagonal of NNDL eq. 6.42). ``sens`` column n holds m[p] (h_j) in
rows [0, P) and m[P + p] (c_j, LSTM) in rows [P, 2P)."""
from numba import cuda, float64

from .. import cellmath
from ..codes import (C_CLASSIFY, C_HLAST, C_HW, C_NL, C_OUT, C_P, C_VARIANT, C_Y, GRU_CHO,
                     GRU_UNIT, JORDAN, L_BHH, L_BIH, L_CELL, L_CG, L_CX, L_DIAG, L_H, L_IN, L_REC,
                     L_SC, L_SH, L_UNIT, L_WCH, L_WHH, L_WIH, LSTM_UNIT, PEEPHOLE, TANH_UNIT)
from .cells import device, n_gates
from .scratch import W_CACHE, W_DA, W_DHS, W_DR, W_DX, W_G, W_ST1

# the per-unit partials: the functions the CPU twin compiles
snap_update = device(cellmath.snap_update)
snap_update_h = device(cellmath.snap_update_h)
snap_clear = device(cellmath.snap_clear)
snap_tanh_partials = device(cellmath.snap_tanh_partials)
snap_lstm_partials = device(cellmath.snap_lstm_partials)
snap_gru_partials = device(cellmath.snap_gru_partials)
gru_cho_cross_term = device(cellmath.gru_cho_cross_term)
recurrent_weight_at = device(cellmath.recurrent_weight_at)


@cuda.jit(device=True, inline=True)
def _upd(sens, P, p, J, ih, ic, n, two):
    """As the CPU's: ``two``, the unit has a cell state; else only h's influence moves."""
    if two:
        sens[p, n], sens[P + p, n] = snap_update(J[0, 0], J[0, 1], J[1, 0], J[1, 1], sens[p, n],
                                                 sens[P + p, n], ih, ic)
    else:
        sens[p, n] = snap_update_h(J[0, 0], sens[p, n], ih)


@cuda.jit(device=True)
def _jordan_loop(W, wc, cfg, lay, S0, s0o, wk, so, n, out):
    """wk[out + j] = sum_o W_hh[j, o] dy_{t-1,o}/dh0_{t-1,j} for each unit j of a Jordan
    layer 0, as the CPU's ``_jordan_loop``: row o of dy/dh_last (the head, softmax for
    classes) taken down through the (Elman) layers above at step t-1. The rows live in the
    scratch regions W_DX and W_DR (WMAX >= every width), free during the forward."""
    O = cfg[C_OUT]
    HL = cfg[C_HLAST]
    yo = s0o + cfg[C_Y]
    hw = cfg[C_HW]
    H0 = lay[0, L_H]
    whh0 = lay[0, L_WHH]  # [H0, O]
    for j in range(H0):
        wk[out + j, n] = 0.0
    for o in range(O):
        cur = so[W_DX]
        nxt = so[W_DR]
        for q in range(HL):
            d = W[hw + o * HL + q, wc]
            if cfg[C_CLASSIFY] == 1:
                mean = S0[yo, n] * W[hw + q, wc]
                for p in range(1, O):
                    mean += S0[yo + p, n] * W[hw + p * HL + q, wc]
                d = S0[yo + o, n] * (d - mean)
            wk[cur + q, n] = d
        for k in range(cfg[C_NL] - 1, 0, -1):
            H = lay[k, L_H]
            nin = lay[k, L_IN]
            sh = s0o + lay[k, L_SH]
            wih = lay[k, L_WIH]
            for q in range(nin):
                acc = 0.0
                for a in range(H):
                    ha = S0[sh + a, n]
                    acc += wk[cur + a, n] * (1.0 - ha * ha) * W[wih + a * nin + q, wc]
                wk[nxt + q, n] = acc
            cur, nxt = nxt, cur
        for j in range(H0):
            wk[out + j, n] += W[whh0 + j * O + o, wc] * wk[cur + j, n]


@cuda.jit(device=True)
def _unit_partials(W, wc, lr, variant, j, S0, s0o, wk, so, n, jloop, d_ih, d_hh, J, d_pe):
    """Unit j's partials, as the CPU twin: d_ih/d_hh [4, 2], J [2, 2], d_pe [3, 2]; the
    math is ``kernels/cellmath.py``'s, this gathers its scalars. wk[jloop + j]: a Jordan
    unit's loop through y_{t-1} (``_jordan_loop``)."""
    unit = lr[L_UNIT]
    H = lr[L_H]
    nrec = lr[L_REC]
    cg = so[W_CACHE] + lr[L_CG]
    cx = so[W_CACHE] + lr[L_CX]
    whh = lr[L_WHH]
    diag = lr[L_DIAG] == 1
    sh = s0o + lr[L_SH]
    snap_clear(d_ih, d_hh, J, d_pe)
    if unit == TANH_UNIT:
        if lr[L_CELL] == JORDAN:
            loop = wk[jloop + j, n]
        else:
            loop = W[recurrent_weight_at(whh, nrec, diag, j, j), wc]
        d, j00 = snap_tanh_partials(wk[cg + j, n], loop)
        d_ih[0, 0] = d
        d_hh[0, 0] = d
        J[0, 0] = j00
    elif unit == LSTM_UNIT:
        wci = 0.0
        wcf = 0.0
        wco = 0.0
        if variant == PEEPHOLE:
            wci = W[lr[L_WCH] + j, wc]
            wcf = W[lr[L_WCH] + H + j, wc]
            wco = W[lr[L_WCH] + 2 * H + j, wc]
        snap_lstm_partials(variant, wk[cg + j, n], wk[cg + H + j, n], wk[cg + 2 * H + j, n],
                           wk[cg + 3 * H + j, n], wk[cx + j, n], S0[s0o + lr[L_SC] + j, n],
                           wk[so[W_ST1] + lr[L_SC] + j, n],
                           W[recurrent_weight_at(whh, nrec, diag, j, j), wc],
                           W[recurrent_weight_at(whh, nrec, diag, H + j, j), wc],
                           W[recurrent_weight_at(whh, nrec, diag, 2 * H + j, j), wc],
                           W[recurrent_weight_at(whh, nrec, diag, 3 * H + j, j), wc], wci, wcf, wco,
                           d_ih, d_hh, J, d_pe)
    else:  # GRU
        cross = 0.0
        if variant == GRU_CHO:
            for k in range(H):
                if k != j:
                    cross += gru_cho_cross_term(W[whh + (2 * H + j) * nrec + k, wc],
                                                S0[sh + k, n], wk[cg + k, n],
                                                W[whh + k * nrec + j, wc])
        snap_gru_partials(variant, wk[cg + j, n], wk[cg + H + j, n], wk[cg + 2 * H + j, n],
                          wk[cx + j, n], S0[sh + j, n], W[whh + j * nrec + j, wc],
                          W[whh + (H + j) * nrec + j, wc], W[whh + (2 * H + j) * nrec + j, wc],
                          cross, d_ih, d_hh, J)


@cuda.jit(device=True)
def snap_propagate(W, wc, cfg, lay, X, xo, S0, s0o, sens, wk, so, n):
    """m <- J_jj m + I for every parameter of every recurrent unit, in place, after
    ``step_forward`` ran into the scratch."""
    P = cfg[C_P]
    variant = cfg[C_VARIANT]
    d_ih = cuda.local.array((4, 2), float64)
    d_hh = cuda.local.array((4, 2), float64)
    J = cuda.local.array((2, 2), float64)
    d_pe = cuda.local.array((3, 2), float64)
    s1 = so[W_ST1]
    jloop = so[W_DA]  # a Jordan layer 0's loops through y_{t-1}, [H0] of [GHMAX]
    for k in range(cfg[C_NL]):
        lr = lay[k]
        cell = lr[L_CELL]
        H = lr[L_H]
        nin = lr[L_IN]
        nrec = lr[L_REC]
        G = n_gates(cell)
        if k == 0:
            IA = X
            io = xo
        else:
            IA = wk
            io = s1 + lay[k - 1, L_SH]
        if cell == JORDAN:
            ro = s0o + cfg[C_Y]
        else:
            ro = s0o + lr[L_SH]
        cho = lr[L_UNIT] == GRU_UNIT and variant == GRU_CHO
        diag = lr[L_DIAG] == 1
        two = lr[L_SC] >= 0
        cx = so[W_CACHE] + lr[L_CX]
        if cell == JORDAN:
            _jordan_loop(W, wc, cfg, lay, S0, s0o, wk, so, n, jloop)
        for j in range(H):
            _unit_partials(W, wc, lr, variant, j, S0, s0o, wk, so, n, jloop, d_ih, d_hh, J,
                           d_pe)
            for g in range(G):
                a = g * H + j
                ih = d_ih[g, 0]
                ic = d_ih[g, 1]
                base = lr[L_WIH] + a * nin
                for q in range(nin):
                    v = IA[io + q, n]
                    _upd(sens, P, base + q, J, ih * v, ic * v, n, two)
                _upd(sens, P, lr[L_BIH] + a, J, ih, ic, n, two)
                hh = d_hh[g, 0]
                hc = d_hh[g, 1]
                base = lr[L_WHH] + a * nrec
                if diag:  # W_hh[a] meets only h_{t-1, j}
                    v = S0[ro + j, n]
                    _upd(sens, P, lr[L_WHH] + a, J, hh * v, hc * v, n, two)
                elif cho and g == 2:
                    for q in range(nrec):
                        v = wk[cx + q, n]
                        _upd(sens, P, base + q, J, hh * v, hc * v, n, two)
                else:
                    for q in range(nrec):
                        v = S0[ro + q, n]
                        _upd(sens, P, base + q, J, hh * v, hc * v, n, two)
                _upd(sens, P, lr[L_BHH] + a, J, hh, hc, n, two)
            if lr[L_WCH] >= 0:  # peepholes
                for x3 in range(3):
                    _upd(sens, P, lr[L_WCH] + x3 * H + j, J, d_pe[x3, 0], d_pe[x3, 1], n, two)


@cuda.jit(device=True)
def snap_gradient(cfg, lay, sens, wk, so, n):
    """W_G[p] += dL_t/dh_j · m_p for every recurrent parameter p (dL_t/dS_t in W_DHS)."""
    g0 = so[W_G]
    dhs = so[W_DHS]
    for k in range(cfg[C_NL]):
        lr = lay[k]
        H = lr[L_H]
        nin = lr[L_IN]
        nrec = lr[L_REC]
        G = n_gates(lr[L_CELL])
        for j in range(H):
            dh = wk[dhs + lr[L_SH] + j, n]
            for g in range(G):
                a = g * H + j
                base = lr[L_WIH] + a * nin
                for q in range(nin):
                    wk[g0 + base + q, n] += dh * sens[base + q, n]
                base = lr[L_WHH] + a * nrec
                if lr[L_DIAG] == 1:
                    base = lr[L_WHH] + a
                    wk[g0 + base, n] += dh * sens[base, n]
                else:
                    for q in range(nrec):
                        wk[g0 + base + q, n] += dh * sens[base + q, n]
                wk[g0 + lr[L_BIH] + a, n] += dh * sens[lr[L_BIH] + a, n]
                wk[g0 + lr[L_BHH] + a, n] += dh * sens[lr[L_BHH] + a, n]
            if lr[L_WCH] >= 0:
                for x3 in range(3):
                    p = lr[L_WCH] + x3 * H + j
                    wk[g0 + p, n] += dh * sens[p, n]
