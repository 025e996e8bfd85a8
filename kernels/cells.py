"""One recurrent layer, one time step, for a batch of streams: forward and backward (VJP).

Shapes: X [nb, in] layer input, R [nb, rec] recurrent input (h_{t-1}, or y_{t-1} for a Jordan
layer), Cp [nb, H] previous cell state (LSTM). Gate blocks are stacked in PyTorch's order
(LSTM i, f, g, o; GRU r, z, n). The cache row of a stream holds the layer's gate activations
at ``L_CG`` and one extra vector at ``L_CX`` (tanh(c) for LSTM, W_hn h + b_hn for a PyTorch
GRU, r * h_{t-1} for a Cho GRU).

Equations (NNDL ch. 6): SRN eq. 6.5-6.7; LSTM eq. 6.49-6.56 with the peephole (6.60),
coupled (6.61-6.62) and no-forget variants; GRU eq. 6.64-6.67.
"""
import numpy as np
from numba import njit

from .codes import (COUPLED, ELMAN, GRU, GRU_CHO, JORDAN, L_BHH, L_BIH, L_CELL, L_CG, L_CX,
                    L_H, L_IN, L_REC, L_WCH, L_WHH, L_WIH, LSTM, NO_FORGET, PEEPHOLE)


@njit(cache=True)
def n_gates(cell):
    if cell == LSTM:
        return 4
    if cell == GRU:
        return 3
    return 1


@njit(cache=True)
def mat(theta, off, rows, cols):
    """The [rows, cols] block of the flat parameter vector that starts at ``off``."""
    return theta[off:off + rows * cols].reshape((rows, cols))


@njit(cache=True)
def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


@njit(cache=True)
def layer_forward(theta, lr, variant, X, R, Cp, Hn, Cn, cache):
    """Forward of one layer for nb streams; writes Hn, Cn (LSTM) and the cache rows."""
    cell = lr[L_CELL]
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    G = n_gates(cell)
    GH = G * H
    nb = X.shape[0]
    cg = lr[L_CG]
    cx = lr[L_CX]
    W_ih = mat(theta, lr[L_WIH], GH, nin)
    b_ih = theta[lr[L_BIH]:lr[L_BIH] + GH]
    b_hh = theta[lr[L_BHH]:lr[L_BHH] + GH]
    Xc = np.ascontiguousarray(X)
    Rc = np.ascontiguousarray(R)
    Aih = np.dot(Xc, W_ih.T)
    if cell == GRU and variant == GRU_CHO:
        W_rz = mat(theta, lr[L_WHH], 2 * H, nrec)
        W_hn = mat(theta, lr[L_WHH] + 2 * H * nrec, H, nrec)
        Arz = np.dot(Rc, W_rz.T)
        RH = np.empty((nb, H), dtype=theta.dtype)
        for b in range(nb):
            for j in range(H):
                r = sigmoid(Aih[b, j] + b_ih[j] + Arz[b, j] + b_hh[j])
                z = sigmoid(Aih[b, H + j] + b_ih[H + j] + Arz[b, H + j] + b_hh[H + j])
                cache[b, cg + j] = r
                cache[b, cg + H + j] = z
                RH[b, j] = r * Rc[b, j]
                cache[b, cx + j] = RH[b, j]
        An = np.dot(RH, W_hn.T)
        for b in range(nb):
            for j in range(H):
                z = cache[b, cg + H + j]
                n = np.tanh(Aih[b, 2 * H + j] + b_ih[2 * H + j] + An[b, j] + b_hh[2 * H + j])
                cache[b, cg + 2 * H + j] = n
                Hn[b, j] = (1.0 - z) * n + z * Rc[b, j]
        return
    W_hh = mat(theta, lr[L_WHH], GH, nrec)
    Ahh = np.dot(Rc, W_hh.T)
    if cell == ELMAN or cell == JORDAN:
        for b in range(nb):
            for j in range(H):
                h = np.tanh(Aih[b, j] + b_ih[j] + Ahh[b, j] + b_hh[j])
                cache[b, cg + j] = h
                Hn[b, j] = h
    elif cell == LSTM:
        wc = lr[L_WCH]
        for b in range(nb):
            for j in range(H):
                cp = Cp[b, j]
                ai = Aih[b, j] + b_ih[j] + Ahh[b, j] + b_hh[j]
                af = Aih[b, H + j] + b_ih[H + j] + Ahh[b, H + j] + b_hh[H + j]
                ag = Aih[b, 2 * H + j] + b_ih[2 * H + j] + Ahh[b, 2 * H + j] + b_hh[2 * H + j]
                ao = Aih[b, 3 * H + j] + b_ih[3 * H + j] + Ahh[b, 3 * H + j] + b_hh[3 * H + j]
                if variant == PEEPHOLE:
                    ai += theta[wc + j] * cp
                    af += theta[wc + H + j] * cp
                i = sigmoid(ai)
                if variant == COUPLED:
                    f = 1.0 - i
                elif variant == NO_FORGET:
                    f = 1.0
                else:
                    f = sigmoid(af)
                g = np.tanh(ag)
                c = f * cp + i * g
                if variant == PEEPHOLE:
                    ao += theta[wc + 2 * H + j] * c
                o = sigmoid(ao)
                tc = np.tanh(c)
                cache[b, cg + j] = i
                cache[b, cg + H + j] = f
                cache[b, cg + 2 * H + j] = g
                cache[b, cg + 3 * H + j] = o
                cache[b, cx + j] = tc
                Cn[b, j] = c
                Hn[b, j] = o * tc
    else:  # GRU, PyTorch's form
        for b in range(nb):
            for j in range(H):
                r = sigmoid(Aih[b, j] + b_ih[j] + Ahh[b, j] + b_hh[j])
                z = sigmoid(Aih[b, H + j] + b_ih[H + j] + Ahh[b, H + j] + b_hh[H + j])
                hn = Ahh[b, 2 * H + j] + b_hh[2 * H + j]
                n = np.tanh(Aih[b, 2 * H + j] + b_ih[2 * H + j] + r * hn)
                cache[b, cg + j] = r
                cache[b, cg + H + j] = z
                cache[b, cg + 2 * H + j] = n
                cache[b, cx + j] = hn
                Hn[b, j] = (1.0 - z) * n + z * Rc[b, j]


@njit(cache=True)
def _acc_outer(grad, off, dA, X):
    """grad block at ``off`` += dA^T X (sum over the batch of outer products)."""
    blk = mat(grad, off, dA.shape[1], X.shape[1])
    blk += np.dot(dA.T, X)


@njit(cache=True)
def _acc_bias(grad, off, dA):
    for b in range(dA.shape[0]):
        for a in range(dA.shape[1]):
            grad[off + a] += dA[b, a]


@njit(cache=True)
def layer_backward(theta, lr, variant, X, R, Cp, Cn, cache, dH, dC, grad, dX, dR, dCp, want_params):
    """Vector-Jacobian product of ``layer_forward`` (BPTT, eq. 6.29-6.39).

    dH, dC: gradients w.r.t. this step's h and c. Writes dX (w.r.t. X), dR (w.r.t. R),
    dCp (w.r.t. the previous c); when ``want_params`` adds the parameter gradient to grad.
    """
    cell = lr[L_CELL]
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    G = n_gates(cell)
    GH = G * H
    nb = X.shape[0]
    cg = lr[L_CG]
    cx = lr[L_CX]
    Xc = np.ascontiguousarray(X)
    Rc = np.ascontiguousarray(R)
    W_ih = mat(theta, lr[L_WIH], GH, nin)
    dA = np.zeros((nb, GH), dtype=theta.dtype)
    if cell == ELMAN or cell == JORDAN:
        for b in range(nb):
            for j in range(H):
                h = cache[b, cg + j]
                dA[b, j] = dH[b, j] * (1.0 - h * h)
    elif cell == LSTM:
        wc = lr[L_WCH]
        for b in range(nb):
            for j in range(H):
                i = cache[b, cg + j]
                f = cache[b, cg + H + j]
                g = cache[b, cg + 2 * H + j]
                o = cache[b, cg + 3 * H + j]
                tc = cache[b, cx + j]
                cp = Cp[b, j]
                dh = dH[b, j]
                dao = dh * tc * o * (1.0 - o)
                dc = dC[b, j] + dh * o * (1.0 - tc * tc)
                if variant == PEEPHOLE:
                    dc += dao * theta[wc + 2 * H + j]
                di = dc * g
                df = 0.0
                if variant == COUPLED:
                    di -= dc * cp
                elif variant != NO_FORGET:
                    df = dc * cp
                dai = di * i * (1.0 - i)
                daf = df * f * (1.0 - f)
                dcp = dc * f
                if variant == PEEPHOLE:
                    dcp += dai * theta[wc + j] + daf * theta[wc + H + j]
                    if want_params:
                        grad[wc + j] += dai * cp
                        grad[wc + H + j] += daf * cp
                        grad[wc + 2 * H + j] += dao * Cn[b, j]
                dA[b, j] = dai
                dA[b, H + j] = daf
                dA[b, 2 * H + j] = dc * i * (1.0 - g * g)
                dA[b, 3 * H + j] = dao
                dCp[b, j] = dcp
    else:
        dAhh = np.zeros((nb, GH), dtype=theta.dtype)
        for b in range(nb):
            for j in range(H):
                r = cache[b, cg + j]
                z = cache[b, cg + H + j]
                n = cache[b, cg + 2 * H + j]
                dh = dH[b, j]
                dnp = dh * (1.0 - z) * (1.0 - n * n)
                daz = dh * (Rc[b, j] - n) * z * (1.0 - z)
                dA[b, H + j] = daz
                dAhh[b, H + j] = daz
                dA[b, 2 * H + j] = dnp
                if variant == GRU_CHO:
                    dAhh[b, 2 * H + j] = dnp
                else:
                    hn = cache[b, cx + j]
                    dar = dnp * hn * r * (1.0 - r)
                    dA[b, j] = dar
                    dAhh[b, j] = dar
                    dAhh[b, 2 * H + j] = dnp * r
        if variant == GRU_CHO:
            W_hn = mat(theta, lr[L_WHH] + 2 * H * nrec, H, nrec)
            dRH = np.dot(np.ascontiguousarray(dAhh[:, 2 * H:]), W_hn)
            for b in range(nb):
                for j in range(H):
                    r = cache[b, cg + j]
                    dar = dRH[b, j] * Rc[b, j] * r * (1.0 - r)
                    dA[b, j] = dar
                    dAhh[b, j] = dar
            W_rz = mat(theta, lr[L_WHH], 2 * H, nrec)
            dAhh_rz = np.ascontiguousarray(dAhh[:, :2 * H])
            dR[:, :] = np.dot(dAhh_rz, W_rz)
            for b in range(nb):
                for j in range(H):
                    dR[b, j] += dRH[b, j] * cache[b, cg + j] + dH[b, j] * cache[b, cg + H + j]
            if want_params:
                _acc_outer(grad, lr[L_WHH], dAhh_rz, Rc)
                _acc_outer(grad, lr[L_WHH] + 2 * H * nrec,
                           np.ascontiguousarray(dAhh[:, 2 * H:]),
                           np.ascontiguousarray(cache[:, cx:cx + H]))
        else:
            W_hh = mat(theta, lr[L_WHH], GH, nrec)
            dR[:, :] = np.dot(dAhh, W_hh)
            for b in range(nb):
                for j in range(H):
                    dR[b, j] += dH[b, j] * cache[b, cg + H + j]
            if want_params:
                _acc_outer(grad, lr[L_WHH], dAhh, Rc)
        dX[:, :] = np.dot(dA, W_ih)
        if want_params:
            _acc_outer(grad, lr[L_WIH], dA, Xc)
            _acc_bias(grad, lr[L_BIH], dA)
            _acc_bias(grad, lr[L_BHH], dAhh)
        return
    W_hh = mat(theta, lr[L_WHH], GH, nrec)
    dX[:, :] = np.dot(dA, W_ih)
    dR[:, :] = np.dot(dA, W_hh)
    if want_params:
        _acc_outer(grad, lr[L_WIH], dA, Xc)
        _acc_outer(grad, lr[L_WHH], dA, Rc)
        _acc_bias(grad, lr[L_BIH], dA)
        _acc_bias(grad, lr[L_BHH], dA)
