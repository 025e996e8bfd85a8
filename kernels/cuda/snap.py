"""CUDA twin of ``kernels/snap.py``: SnAp-1 (Menick et al. 2020) for the calling thread's
stream. Each parameter p of unit j keeps its influence on that unit only:
m_p <- J_jj m_p + I_p (the diagonal of NNDL eq. 6.42). ``sens`` column n holds m[p] (h_j) in
rows [0, P) and m[P + p] (c_j, LSTM) in rows [P, 2P)."""
from numba import cuda, float64

from ..codes import (C_CLASSIFY, C_HLAST, C_HW, C_NL, C_OUT, C_P, C_VARIANT, C_Y, COUPLED,
                     ELMAN, GRU, GRU_CHO, JORDAN, L_BHH, L_BIH, L_CELL, L_CG, L_CX, L_H, L_IN,
                     L_REC, L_SC, L_SH, L_WCH, L_WHH, L_WIH, LSTM, PEEPHOLE, STANDARD)
from .cells import n_gates
from .scratch import W_CACHE, W_DHS, W_G, W_ST1


@cuda.jit(device=True, inline=True)
def _upd(sens, P, p, J, ih, ic, n):
    mh = sens[p, n]
    mc = sens[P + p, n]
    sens[p, n] = J[0, 0] * mh + J[0, 1] * mc + ih
    sens[P + p, n] = J[1, 0] * mh + J[1, 1] * mc + ic


@cuda.jit(device=True)
def _unit_partials(W, wc, cfg, lr, variant, j, S0, s0o, wk, so, n, d_ih, d_hh, J, d_pe, dc):
    """Unit j's partials, as the CPU twin: d_ih/d_hh [4, 2], J [2, 2], d_pe [3, 2]."""
    cell = lr[L_CELL]
    H = lr[L_H]
    nrec = lr[L_REC]
    cg = so[W_CACHE] + lr[L_CG]
    cx = so[W_CACHE] + lr[L_CX]
    whh = lr[L_WHH]
    for a in range(4):
        for c in range(2):
            d_ih[a, c] = 0.0
            d_hh[a, c] = 0.0
    for a in range(3):
        for c in range(2):
            d_pe[a, c] = 0.0
    J[0, 0] = 0.0
    J[0, 1] = 0.0
    J[1, 0] = 0.0
    J[1, 1] = 0.0
    if cell == ELMAN:
        h = wk[cg + j, n]
        d = 1.0 - h * h
        d_ih[0, 0] = d
        d_hh[0, 0] = d
        J[0, 0] = d * W[whh + j * nrec + j, wc]
    elif cell == JORDAN:
        h = wk[cg + j, n]
        d = 1.0 - h * h
        d_ih[0, 0] = d
        d_hh[0, 0] = d
        O = cfg[C_OUT]
        HL = cfg[C_HLAST]
        yo = s0o + cfg[C_Y]
        hw = cfg[C_HW]
        py = 0.0
        if cfg[C_CLASSIFY] == 1:
            for q in range(O):
                py += S0[yo + q, n] * W[hw + q * HL + j, wc]
        acc = 0.0
        for o in range(O):
            dy = float64(W[hw + o * HL + j, wc])
            if cfg[C_CLASSIFY] == 1:
                dy = S0[yo + o, n] * (dy - py)
            acc += W[whh + j * nrec + o, wc] * dy
        J[0, 0] = d * acc
    elif cell == LSTM:
        i = wk[cg + j, n]
        f = wk[cg + H + j, n]
        g = wk[cg + 2 * H + j, n]
        o = wk[cg + 3 * H + j, n]
        tc = wk[cx + j, n]
        cp = S0[s0o + lr[L_SC] + j, n]
        si = i * (1.0 - i)
        sf = f * (1.0 - f)
        so_ = o * (1.0 - o)
        wco = 0.0
        if variant == PEEPHOLE:
            wco = W[lr[L_WCH] + 2 * H + j, wc]
        dhdc = o * (1.0 - tc * tc) + tc * so_ * wco
        dc[0] = si * g
        if variant == COUPLED:
            dc[0] = si * (g - cp)
        dc[1] = 0.0
        if variant == STANDARD or variant == PEEPHOLE:
            dc[1] = sf * cp
        dc[2] = (1.0 - g * g) * i
        for x in range(3):
            d_ih[x, 0] = dhdc * dc[x]
            d_ih[x, 1] = dc[x]
        d_ih[3, 0] = tc * so_
        d_ih[3, 1] = 0.0
        dcdh = 0.0
        dhdh = 0.0
        for x in range(4):
            d_hh[x, 0] = d_ih[x, 0]
            d_hh[x, 1] = d_ih[x, 1]
            w = W[whh + (x * H + j) * nrec + j, wc]
            dcdh += d_ih[x, 1] * w
            dhdh += d_ih[x, 0] * w
        dcdc = f
        if variant == PEEPHOLE:
            wch = lr[L_WCH]
            dcdc += dc[0] * W[wch + j, wc] + dc[1] * W[wch + H + j, wc]
            d_pe[0, 0] = d_ih[0, 0] * cp
            d_pe[0, 1] = dc[0] * cp
            d_pe[1, 0] = d_ih[1, 0] * cp
            d_pe[1, 1] = dc[1] * cp
            d_pe[2, 0] = tc * so_ * wk[so[W_ST1] + lr[L_SC] + j, n]
        J[0, 0] = dhdh
        J[0, 1] = dhdc * dcdc
        J[1, 0] = dcdh
        J[1, 1] = dcdc
    else:  # GRU
        r = wk[cg + j, n]
        z = wk[cg + H + j, n]
        nn = wk[cg + 2 * H + j, n]
        hp = S0[s0o + lr[L_SH] + j, n]
        q = (1.0 - z) * (1.0 - nn * nn)
        sr = r * (1.0 - r)
        wnn = W[whh + (2 * H + j) * nrec + j, wc]
        if variant == GRU_CHO:
            dr = q * wnn * hp * sr
            d_hh[2, 0] = q
            own_n = q * wnn * r
        else:
            dr = q * wk[cx + j, n] * sr
            d_hh[2, 0] = q * r
            own_n = d_hh[2, 0] * wnn
        dzz = (hp - nn) * z * (1.0 - z)
        d_ih[0, 0] = dr
        d_hh[0, 0] = dr
        d_ih[1, 0] = dzz
        d_hh[1, 0] = dzz
        d_ih[2, 0] = q
        J[0, 0] = (z + dr * W[whh + j * nrec + j, wc] + dzz * W[whh + (H + j) * nrec + j, wc]
                   + own_n)
        if variant == GRU_CHO:
            # n_j reads every r_k h_k, and each r_k reads h_j: those loops return to h_j too
            cross = 0.0
            for k in range(H):
                if k != j:
                    rk = wk[cg + k, n]
                    cross += (W[whh + (2 * H + j) * nrec + k, wc] * S0[s0o + lr[L_SH] + k, n]
                              * rk * (1.0 - rk) * W[whh + k * nrec + j, wc])
            J[0, 0] += q * cross


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
    dc = cuda.local.array(3, float64)
    s1 = so[W_ST1]
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
        cho = cell == GRU and variant == GRU_CHO
        cx = so[W_CACHE] + lr[L_CX]
        for j in range(H):
            _unit_partials(W, wc, cfg, lr, variant, j, S0, s0o, wk, so, n, d_ih, d_hh, J,
                           d_pe, dc)
            for g in range(G):
                a = g * H + j
                ih = d_ih[g, 0]
                ic = d_ih[g, 1]
                base = lr[L_WIH] + a * nin
                for q in range(nin):
                    v = IA[io + q, n]
                    _upd(sens, P, base + q, J, ih * v, ic * v, n)
                _upd(sens, P, lr[L_BIH] + a, J, ih, ic, n)
                hh = d_hh[g, 0]
                hc = d_hh[g, 1]
                base = lr[L_WHH] + a * nrec
                if cho and g == 2:
                    for q in range(nrec):
                        v = wk[cx + q, n]
                        _upd(sens, P, base + q, J, hh * v, hc * v, n)
                else:
                    for q in range(nrec):
                        v = S0[ro + q, n]
                        _upd(sens, P, base + q, J, hh * v, hc * v, n)
                _upd(sens, P, lr[L_BHH] + a, J, hh, hc, n)
            if cell == LSTM and variant == PEEPHOLE:
                for x3 in range(3):
                    _upd(sens, P, lr[L_WCH] + x3 * H + j, J, d_pe[x3, 0], d_pe[x3, 1], n)


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
                for q in range(nrec):
                    wk[g0 + base + q, n] += dh * sens[base + q, n]
                wk[g0 + lr[L_BIH] + a, n] += dh * sens[lr[L_BIH] + a, n]
                wk[g0 + lr[L_BHH] + a, n] += dh * sens[lr[L_BHH] + a, n]
            if lr[L_WCH] >= 0:
                for x3 in range(3):
                    p = lr[L_WCH] + x3 * H + j
                    wk[g0 + p, n] += dh * sens[p, n]
