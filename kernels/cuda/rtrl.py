"""CUDA twin of ``kernels/rtrl.py``: exact RTRL for the calling thread's stream (NNDL 6.4.2,
eq. 6.40-6.44). The sensitivity M = dS/dθ is column n of ``sens`` [S * P, slots], row
s * P + p; the new one is built in the scratch region W_M and copied back by the caller.
Pre-activation tangents live in W_DAI (input side) and W_DAH (recurrent side), [GH * P] each.
"""
from numba import cuda

from .. import cellmath
from ..codes import (C_CLASSIFY, C_EMB, C_HB, C_HLAST, C_HTOP, C_HW, C_NL, C_OUT, C_P,
                     C_VARIANT, C_VOCAB, C_Y, GRU_CHO, GRU_UNIT, JORDAN, L_BHH, L_BIH, L_CELL,
                     L_CG, L_CX, L_DIAG, L_H, L_IN, L_REC, L_SC, L_SH, L_UNIT, L_WCH, L_WHH,
                     L_WIH, LSTM_UNIT, PEEPHOLE, TANH_UNIT)
from .cells import device, n_gates
from .scratch import W_CACHE, W_DAH, W_DAI, W_DZ, W_G, W_M, W_MRH, W_ST1

# one parameter's tangent through one unit: the functions the CPU twin compiles
tanh_unit_tangent = device(cellmath.tanh_unit_tangent)
lstm_unit_tangent = device(cellmath.lstm_unit_tangent)
gru_cho_reset_tangent = device(cellmath.gru_cho_reset_tangent)
gru_unit_tangent = device(cellmath.gru_unit_tangent)


@cuda.jit(device=True)
def _matM(W, wc, woff, nrows, ncols, M, mo, n, D, do, P):
    """D[do + a*P + p] = sum_q W[woff + a*ncols + q] M[mo + q*P + p], a < nrows."""
    for a in range(nrows):
        for p in range(P):
            acc = W[woff + a * ncols, wc] * M[mo + p, n]
            for q in range(1, ncols):
                acc += W[woff + a * ncols + q, wc] * M[mo + q * P + p, n]
            D[do + a * P + p, n] = acc


@cuda.jit(device=True)
def _immediate(D, do, P, off_w, off_b, rows_from, nrows, V, vo, nin, n):
    """D[a, off_w + a*nin + q] += V[vo + q]; D[a, off_b + a] += 1, for rows a of one block."""
    for a in range(rows_from, rows_from + nrows):
        base = do + a * P + off_w + a * nin
        for q in range(nin):
            D[base + q, n] += V[vo + q, n]
        D[do + a * P + off_b + a, n] += 1.0


@cuda.jit(device=True)
def _diagonal_recurrent(W, wc, whh, bhh, GH, H, M, mo, R, ro, n, D, do, P):
    """D[a] = u[a] M[mo + (a mod H)] plus u's and b_hh's immediate terms, for a diagonal
    W_hh = u [G*H]: the [G*H, P] tangent in H*P work instead of H*rec*P."""
    for a in range(GH):
        u = W[whh + a, wc]
        j = a % H
        for p in range(P):
            D[do + a * P + p, n] = u * M[mo + j * P + p, n]
        D[do + a * P + whh + a, n] += R[ro + j, n]
        D[do + a * P + bhh + a, n] += 1.0


@cuda.jit(device=True)
def rtrl_propagate(W, wc, cfg, lay, token, X, xo, S0, s0o, sens, wk, so, n):
    """W_M = J_t M_{t-1} + I_t (eq. 6.42), after ``step_forward`` ran into the scratch."""
    P = cfg[C_P]
    variant = cfg[C_VARIANT]
    s1 = so[W_ST1]
    m1 = so[W_M]
    dai = so[W_DAI]
    dah = so[W_DAH]
    for k in range(cfg[C_NL]):
        lr = lay[k]
        unit = lr[L_UNIT]
        H = lr[L_H]
        nin = lr[L_IN]
        nrec = lr[L_REC]
        GH = n_gates(lr[L_CELL]) * H
        sh = lr[L_SH]
        sc = lr[L_SC]
        cg = so[W_CACHE] + lr[L_CG]
        cx = so[W_CACHE] + lr[L_CX]
        wih = lr[L_WIH]
        whh = lr[L_WHH]
        if k == 0:
            for e in range(GH * P):
                wk[dai + e, n] = 0.0
            if cfg[C_VOCAB] > 0:
                base = cfg[C_EMB] + token * nin
                for a in range(GH):
                    for q in range(nin):
                        wk[dai + a * P + base + q, n] += W[wih + a * nin + q, wc]
            _immediate(wk, dai, P, wih, lr[L_BIH], 0, GH, X, xo, nin, n)
        else:
            psh = lay[k - 1, L_SH]
            _matM(W, wc, wih, GH, nin, wk, m1 + psh * P, n, wk, dai, P)
            _immediate(wk, dai, P, wih, lr[L_BIH], 0, GH, wk, s1 + psh, nin, n)
        if lr[L_CELL] == JORDAN:
            rec0 = cfg[C_Y]
        else:
            rec0 = sh
        if lr[L_DIAG] == 1:
            _diagonal_recurrent(W, wc, whh, lr[L_BHH], GH, H, sens, rec0 * P, S0, s0o + rec0, n,
                                wk, dah, P)
        else:
            nrows_hh = GH
            if unit == GRU_UNIT and variant == GRU_CHO:
                nrows_hh = 2 * H
            _matM(W, wc, whh, nrows_hh, nrec, sens, rec0 * P, n, wk, dah, P)
            for e in range(nrows_hh * P, GH * P):
                wk[dah + e, n] = 0.0
            _immediate(wk, dah, P, whh, lr[L_BHH], 0, nrows_hh, S0, s0o + rec0, nrec, n)
        if unit == TANH_UNIT:
            for j in range(H):
                h = wk[cg + j, n]
                for p in range(P):
                    wk[m1 + (sh + j) * P + p, n] = tanh_unit_tangent(
                        h, wk[dai + j * P + p, n] + wk[dah + j * P + p, n])
        elif unit == LSTM_UNIT:
            wc_ = lr[L_WCH]
            for j in range(H):
                i = wk[cg + j, n]
                f = wk[cg + H + j, n]
                g = wk[cg + 2 * H + j, n]
                o = wk[cg + 3 * H + j, n]
                tc = wk[cx + j, n]
                cp = S0[s0o + sc + j, n]
                wci = 0.0
                wcf = 0.0
                wco = 0.0
                if variant == PEEPHOLE:
                    wci = W[wc_ + j, wc]
                    wcf = W[wc_ + H + j, wc]
                    wco = W[wc_ + 2 * H + j, wc]
                    wk[dai + j * P + wc_ + j, n] += cp
                    wk[dai + (H + j) * P + wc_ + H + j, n] += cp
                    wk[dai + (3 * H + j) * P + wc_ + 2 * H + j, n] += wk[s1 + sc + j, n]
                for p in range(P):
                    dc, dh = lstm_unit_tangent(
                        variant, i, f, g, o, tc, cp, wci, wcf, wco,
                        wk[dai + j * P + p, n] + wk[dah + j * P + p, n],
                        wk[dai + (H + j) * P + p, n] + wk[dah + (H + j) * P + p, n],
                        wk[dai + (2 * H + j) * P + p, n] + wk[dah + (2 * H + j) * P + p, n],
                        wk[dai + (3 * H + j) * P + p, n] + wk[dah + (3 * H + j) * P + p, n],
                        sens[(sc + j) * P + p, n])
                    wk[m1 + (sc + j) * P + p, n] = dc
                    wk[m1 + (sh + j) * P + p, n] = dh
        else:
            if variant == GRU_CHO:
                mrh = so[W_MRH]
                for j in range(H):
                    rj = wk[cg + j, n]
                    hp = S0[s0o + sh + j, n]
                    for p in range(P):
                        dar, drh = gru_cho_reset_tangent(
                            rj, hp, wk[dai + j * P + p, n] + wk[dah + j * P + p, n],
                            sens[(sh + j) * P + p, n])
                        wk[dah + j * P + p, n] = dar
                        wk[mrh + j * P + p, n] = drh
                _matM(W, wc, whh + 2 * H * nrec, H, nrec, wk, mrh, n, wk, dah + 2 * H * P, P)
                _immediate(wk, dah, P, whh, lr[L_BHH], 2 * H, H, wk, cx, H, n)
            for j in range(H):
                rj = wk[cg + j, n]
                z = wk[cg + H + j, n]
                nn = wk[cg + 2 * H + j, n]
                hn = wk[cx + j, n]
                hp = S0[s0o + sh + j, n]
                for p in range(P):
                    wk[m1 + (sh + j) * P + p, n] = gru_unit_tangent(
                        variant, rj, z, nn, hn, hp,
                        wk[dai + j * P + p, n] + wk[dah + j * P + p, n],
                        wk[dai + (H + j) * P + p, n] + wk[dah + (H + j) * P + p, n],
                        wk[dai + (2 * H + j) * P + p, n], wk[dah + (2 * H + j) * P + p, n],
                        sens[(sh + j) * P + p, n])
    yo = cfg[C_Y]
    if yo >= 0:
        # a Jordan model carries y_t = prediction(head(h_last)) in its state
        O = cfg[C_OUT]
        HL = cfg[C_HLAST]
        htop = cfg[C_HTOP]
        _matM(W, wc, cfg[C_HW], O, HL, wk, m1 + htop * P, n, wk, dai, P)
        _immediate(wk, dai, P, cfg[C_HW], cfg[C_HB], 0, O, wk, s1 + htop, HL, n)
        my = m1 + yo * P
        if cfg[C_CLASSIFY] == 0:
            for e in range(O * P):
                wk[my + e, n] = wk[dai + e, n]
        else:
            for p in range(P):
                py = 0.0
                for o in range(O):
                    py += wk[s1 + yo + o, n] * wk[dai + o * P + p, n]
                for o in range(O):
                    wk[my + o * P + p, n] = wk[s1 + yo + o, n] * (wk[dai + o * P + p, n] - py)


@cuda.jit(device=True)
def rtrl_gradient(W, wc, cfg, S1, s1o, sens, wk, so, n):
    """W_G = dL_t/dθ = (W_head^T dz) · M_t[h_last] + the head's direct term (eq. 6.44);
    dz in W_DZ, S1[s1o:] the state after the step, M_t in ``sens``."""
    P = cfg[C_P]
    O = cfg[C_OUT]
    HL = cfg[C_HLAST]
    htop = cfg[C_HTOP]
    g0 = so[W_G]
    dz = so[W_DZ]
    for p in range(P):
        wk[g0 + p, n] = 0.0
    for q in range(HL):
        dh = W[cfg[C_HW] + q, wc] * wk[dz, n]
        for o in range(1, O):
            dh += W[cfg[C_HW] + o * HL + q, wc] * wk[dz + o, n]
        base = (htop + q) * P
        for p in range(P):
            wk[g0 + p, n] += dh * sens[base + p, n]
    for o in range(O):
        d = wk[dz + o, n]
        for q in range(HL):
            wk[g0 + cfg[C_HW] + o * HL + q, n] += d * S1[s1o + htop + q, n]
        wk[g0 + cfg[C_HB] + o, n] += d
