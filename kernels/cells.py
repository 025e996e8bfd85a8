"""One recurrent layer, one time step, for a batch of streams: forward and backward (VJP).

Shapes: X [nb, in] layer input, R [nb, rec] recurrent input (h_{t-1}, or y_{t-1} for a Jordan
layer), Cp [nb, H] previous cell state (LSTM). Gate blocks are stacked in PyTorch's order
(LSTM i, f, g, o; GRU r, z, n). The cache row of a stream holds the layer's gate activations
at ``L_CG`` and one extra vector at ``L_CX`` (tanh(c) for LSTM, W_hn h + b_hn for a PyTorch
GRU, r * h_{t-1} for a Cho GRU).

Equations (NNDL ch. 6): SRN eq. 6.5-6.7; LSTM eq. 6.49-6.56 with the peephole (6.60),
coupled (6.61-6.62) and no-forget variants; GRU eq. 6.64-6.67. Each unit's gate math is
``kernels/cellmath.py``'s, shared with the CUDA twin; the matrix products and the activation
passes over whole blocks are this target's own.
"""
import numpy as np
from numba import njit

from . import cellmath
from .activations import sigmoid_inplace, tanh_inplace
from .codes import (GRU_CHO, GRU_UNIT, L_BHH, L_BIH, L_CELL, L_CG, L_CX, L_DIAG, L_H, L_IN,
                    L_REC, L_UNIT, L_WCH, L_WHH, L_WIH, LSTM_UNIT, PEEPHOLE, TANH_UNIT)
from .registry import GATES_BY_CODE

# the per-unit math, the same functions the CUDA twin compiles as device functions; _inline
# also wraps rtrl.py's and snap.py's
_inline = njit(inline="always")
lstm_forget = _inline(cellmath.lstm_forget)
lstm_cell = _inline(cellmath.lstm_cell)
gru_hidden = _inline(cellmath.gru_hidden)
tanh_unit_backward = _inline(cellmath.tanh_unit_backward)
lstm_unit_backward = _inline(cellmath.lstm_unit_backward)
gru_unit_backward = _inline(cellmath.gru_unit_backward)
gru_cho_reset_backward = _inline(cellmath.gru_cho_reset_backward)


@njit(cache=True)
def n_gates(cell):
    """Gate blocks stacked in a layer's weights (kernels/registry.py, the one table)."""
    return GATES_BY_CODE[cell]


@njit(cache=True)
def mat(theta, off, rows, cols):
    """The [rows, cols] block of the flat parameter vector that starts at ``off``."""
    return theta[off:off + rows * cols].reshape((rows, cols))


@njit(cache=True)
def recurrent_products(theta, lr, R):
    """[nb, G*H] = R W_hh^T for a tanh or LSTM layer: a full W_hh [G*H, rec], or a diagonal
    one [G*H] whose row a meets only its own unit's h_{t-1} (a mod H)."""
    H = lr[L_H]
    GH = n_gates(lr[L_CELL]) * H
    if lr[L_DIAG] == 0:
        return np.dot(R, mat(theta, lr[L_WHH], GH, lr[L_REC]).T)
    u = theta[lr[L_WHH]:lr[L_WHH] + GH]
    out = np.empty((R.shape[0], GH), dtype=theta.dtype)
    for b in range(R.shape[0]):
        for a in range(GH):
            out[b, a] = u[a] * R[b, a % H]
    return out


@njit(cache=True)
def recurrent_vjp(theta, lr, dA):
    """[nb, rec] = dA W_hh: the transposed product of ``recurrent_products``."""
    H = lr[L_H]
    GH = n_gates(lr[L_CELL]) * H
    if lr[L_DIAG] == 0:
        return np.dot(dA, mat(theta, lr[L_WHH], GH, lr[L_REC]))
    u = theta[lr[L_WHH]:lr[L_WHH] + GH]
    out = np.zeros((dA.shape[0], H), dtype=theta.dtype)
    for b in range(dA.shape[0]):
        for a in range(GH):
            out[b, a % H] += u[a] * dA[b, a]
    return out


@njit(cache=True)
def _add_biases(A, B, b_ih, b_hh, lo, hi):
    """A[:, lo:hi] += B[:, lo:hi] + b_ih[lo:hi] + b_hh[lo:hi]."""
    for b in range(A.shape[0]):
        for a in range(lo, hi):
            A[b, a] += B[b, a] + b_ih[a] + b_hh[a]


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def layer_forward(theta, lr, variant, X, R, Cp, Hn, Cn, cache):
    """Forward of one layer for nb streams; writes Hn, Cn (LSTM) and the cache rows.

    The nonlinearities run as passes over whole contiguous blocks (kernels.activations).
    """
    unit = lr[L_UNIT]
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    G = n_gates(lr[L_CELL])
    GH = G * H
    nb = X.shape[0]
    cg = lr[L_CG]
    cx = lr[L_CX]
    W_ih = mat(theta, lr[L_WIH], GH, nin)
    b_ih = theta[lr[L_BIH]:lr[L_BIH] + GH]
    b_hh = theta[lr[L_BHH]:lr[L_BHH] + GH]
    Rc = np.ascontiguousarray(R)
    A = np.dot(np.ascontiguousarray(X), W_ih.T)  # becomes the gate activations
    if unit == GRU_UNIT:
        nrows = 2 * H if variant == GRU_CHO else GH
        Ahh = np.dot(Rc, mat(theta, lr[L_WHH], nrows, nrec).T)
        _add_biases(A, Ahh, b_ih, b_hh, 0, 2 * H)
        RZ = np.ascontiguousarray(A[:, :2 * H])
        sigmoid_inplace(RZ.reshape(-1))
        N = np.empty((nb, H), dtype=theta.dtype)
        if variant == GRU_CHO:
            RH = np.empty((nb, H), dtype=theta.dtype)
            for b in range(nb):
                for j in range(H):
                    RH[b, j] = RZ[b, j] * Rc[b, j]
            An = np.dot(RH, mat(theta, lr[L_WHH] + 2 * H * nrec, H, nrec).T)
            for b in range(nb):
                for j in range(H):
                    N[b, j] = A[b, 2 * H + j] + b_ih[2 * H + j] + An[b, j] + b_hh[2 * H + j]
                    cache[b, cx + j] = RH[b, j]
        else:
            for b in range(nb):
                for j in range(H):
                    hn = Ahh[b, 2 * H + j] + b_hh[2 * H + j]
                    N[b, j] = A[b, 2 * H + j] + b_ih[2 * H + j] + RZ[b, j] * hn
                    cache[b, cx + j] = hn
        tanh_inplace(N.reshape(-1))
        for b in range(nb):
            for j in range(H):
                z = RZ[b, H + j]
                cache[b, cg + j] = RZ[b, j]
                cache[b, cg + H + j] = z
                cache[b, cg + 2 * H + j] = N[b, j]
                Hn[b, j] = gru_hidden(z, N[b, j], Rc[b, j])
        return
    Ahh = recurrent_products(theta, lr, Rc)
    _add_biases(A, Ahh, b_ih, b_hh, 0, GH)
    if unit == TANH_UNIT:
        tanh_inplace(A.reshape(-1))
        for b in range(nb):
            for j in range(H):
                cache[b, cg + j] = A[b, j]
                Hn[b, j] = A[b, j]
        return
    # LSTM: sigmoid over all four blocks at once, with g = tanh(a) = 2 sigmoid(2a) - 1
    wc = lr[L_WCH]
    peep = variant == PEEPHOLE
    Opre = np.empty((nb, H), dtype=theta.dtype)
    for b in range(nb):
        for j in range(H):
            if peep:
                A[b, j] += theta[wc + j] * Cp[b, j]
                A[b, H + j] += theta[wc + H + j] * Cp[b, j]
            A[b, 2 * H + j] *= 2.0
            Opre[b, j] = A[b, 3 * H + j]
    sigmoid_inplace(A.reshape(-1))
    for b in range(nb):
        for j in range(H):
            i = A[b, j]
            f = lstm_forget(variant, i, A[b, H + j])
            g = 2.0 * A[b, 2 * H + j] - 1.0
            c = lstm_cell(f, Cp[b, j], i, g)
            cache[b, cg + j] = i
            cache[b, cg + H + j] = f
            cache[b, cg + 2 * H + j] = g
            Cn[b, j] = c
            if peep:
                Opre[b, j] += theta[wc + 2 * H + j] * c
    if peep:
        sigmoid_inplace(Opre.reshape(-1))
    else:
        for b in range(nb):
            for j in range(H):
                Opre[b, j] = A[b, 3 * H + j]
    TC = Cn[:, :H].copy()
    tanh_inplace(TC.reshape(-1))
    for b in range(nb):
        for j in range(H):
            o = Opre[b, j]
            cache[b, cg + 3 * H + j] = o
            cache[b, cx + j] = TC[b, j]
            Hn[b, j] = o * TC[b, j]


# The W_ih/W_hh gradients are sums of outer products over stream-steps; layer_backward keeps
# their factors as rows of a flat buffer and flush_outer takes each sum as one matrix product.
# Blocks of a layer's deferred rows (offsets into the flat buffer, one row per stream-step):
D_DIH = 0  # dL/d(input pre-activations) [rows, G*H]
D_X = 1    # layer input [rows, in]
D_DHH = 2  # GRU: dL/d(recurrent pre-activations) [rows, G*H] (other cells: D_DIH's)
D_R = 3    # recurrent input [rows, rec]
D_RH = 4   # Cho GRU: r * h_{t-1} [rows, H], the input of W_hn
D_NFIELDS = 5


@njit(cache=True)
def _acc_outer(grad, off, dA, X):
    """grad block at ``off`` += dA^T X (sum over the batch of outer products)."""
    blk = mat(grad, off, dA.shape[1], X.shape[1])
    blk += np.dot(dA.T, X)


@njit(cache=True)
def deferred_sizes(lr, variant, rows):
    """Lengths of a layer's deferred blocks (D_*) for ``rows`` stream-steps."""
    H = lr[L_H]
    GH = n_gates(lr[L_CELL]) * H
    sizes = np.zeros(D_NFIELDS, dtype=np.int64)
    sizes[D_DIH] = rows * GH
    sizes[D_X] = rows * lr[L_IN]
    sizes[D_R] = rows * lr[L_REC]
    if lr[L_UNIT] == GRU_UNIT:
        sizes[D_DHH] = rows * GH
        if variant == GRU_CHO:
            sizes[D_RH] = rows * H
    return sizes


@njit(cache=True)
def _block(buf, off, rows, width):
    return buf[off:off + rows * width].reshape((rows, width))


@njit(cache=True)
def _put_rows(buf, off, r0, block):
    """Rows r0.. of the [*, width] block of ``buf`` at ``off`` = block [nb, width]."""
    nb, width = block.shape
    buf[off + r0 * width:off + (r0 + nb) * width].reshape((nb, width))[:, :] = block


@njit(cache=True)
def _acc_bias_rows(grad, off, dA, nb):
    """grad[off:] += the rows of dA, newest step first (the order a step-by-step backward
    adds them in, so the sums are the same bits): rows of step tau are tau * nb .. + nb - 1."""
    acc = grad[off:off + dA.shape[1]]  # indices from 0: no negative-index check, so it vectorises
    for tau in range(dA.shape[0] // nb - 1, -1, -1):
        for b in range(tau * nb, (tau + 1) * nb):
            row = dA[b]
            for a in range(row.shape[0]):
                acc[a] += row[a]


@njit(cache=True)
def flush_outer(grad, lr, variant, buf, dofs, rows, nb):
    """Add the W_ih and W_hh gradients of ``rows`` deferred stream-steps (nb streams a step):
    dA^T X summed over all of them in one product, instead of one small product per step;
    and the biases', sums of the dA rows."""
    H = lr[L_H]
    GH = n_gates(lr[L_CELL]) * H
    nin = lr[L_IN]
    nrec = lr[L_REC]

    dih = _block(buf, dofs[D_DIH], rows, GH)
    _acc_outer(grad, lr[L_WIH], dih, _block(buf, dofs[D_X], rows, nin))
    gru = lr[L_UNIT] == GRU_UNIT
    dhh = _block(buf, dofs[D_DHH if gru else D_DIH], rows, GH)
    _acc_bias_rows(grad, lr[L_BIH], dih, nb)
    _acc_bias_rows(grad, lr[L_BHH], dhh, nb)
    R = _block(buf, dofs[D_R], rows, nrec)
    if lr[L_DIAG] == 1:  # row a of W_hh is one weight, on unit a mod H
        for a in range(GH):
            acc = 0.0
            for r in range(rows):
                acc += dhh[r, a] * R[r, a % H]
            grad[lr[L_WHH] + a] += acc
    elif gru and variant == GRU_CHO:
        _acc_outer(grad, lr[L_WHH], np.ascontiguousarray(dhh[:, :2 * H]), R)
        _acc_outer(grad, lr[L_WHH] + 2 * H * nrec, np.ascontiguousarray(dhh[:, 2 * H:]),
                   _block(buf, dofs[D_RH], rows, H))
    else:
        _acc_outer(grad, lr[L_WHH], dhh, R)


@njit(cache=True)
def _defer(dbuf, dofs, r0, dA_ih, X, dA_hh, R):
    """Keep one step's factors; dA_hh is None where it equals dA_ih (not a GRU)."""
    _put_rows(dbuf, dofs[D_DIH], r0, dA_ih)
    _put_rows(dbuf, dofs[D_X], r0, X)
    if dA_hh is not None:
        _put_rows(dbuf, dofs[D_DHH], r0, dA_hh)
    _put_rows(dbuf, dofs[D_R], r0, R)


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def layer_backward(theta, lr, variant, X, R, Cp, Cn, cache, dH, dC, grad, dX, dR, dCp, want_params,
                   dbuf, dofs, r0, want_dx):
    """Vector-Jacobian product of ``layer_forward`` (BPTT, eq. 6.29-6.39).

    dH, dC: gradients w.r.t. this step's h and c. Writes dX (w.r.t. X; only with
    ``want_dx``), dR (w.r.t. R), dCp (w.r.t. the previous c). With ``want_params`` the
    peepholes' gradients go to grad, and the factors of the weight matrices' and biases'
    gradients to rows r0.. of the deferred blocks of ``dbuf`` at offsets ``dofs`` (D_*), for
    flush_outer.
    """
    unit = lr[L_UNIT]
    H = lr[L_H]
    nin = lr[L_IN]
    nrec = lr[L_REC]
    G = n_gates(lr[L_CELL])
    GH = G * H
    nb = X.shape[0]
    cg = lr[L_CG]
    cx = lr[L_CX]
    Xc = np.ascontiguousarray(X)
    Rc = np.ascontiguousarray(R)
    W_ih = mat(theta, lr[L_WIH], GH, nin)
    dA = np.zeros((nb, GH), dtype=theta.dtype)
    if unit == TANH_UNIT:
        for b in range(nb):
            for j in range(H):
                dA[b, j] = tanh_unit_backward(cache[b, cg + j], dH[b, j])
    elif unit == LSTM_UNIT:
        wc = lr[L_WCH]
        peep = variant == PEEPHOLE
        for b in range(nb):
            for j in range(H):
                cp = Cp[b, j]
                wci = theta[wc + j] if peep else 0.0
                wcf = theta[wc + H + j] if peep else 0.0
                wco = theta[wc + 2 * H + j] if peep else 0.0
                dai, daf, dag, dao, dcp = lstm_unit_backward(
                    variant, cache[b, cg + j], cache[b, cg + H + j], cache[b, cg + 2 * H + j],
                    cache[b, cg + 3 * H + j], cache[b, cx + j], cp, dH[b, j], dC[b, j],
                    wci, wcf, wco)
                if peep and want_params:
                    grad[wc + j] += dai * cp
                    grad[wc + H + j] += daf * cp
                    grad[wc + 2 * H + j] += dao * Cn[b, j]
                dA[b, j] = dai
                dA[b, H + j] = daf
                dA[b, 2 * H + j] = dag
                dA[b, 3 * H + j] = dao
                dCp[b, j] = dcp
    else:
        dAhh = np.zeros((nb, GH), dtype=theta.dtype)
        for b in range(nb):
            for j in range(H):
                dar, daz, dn_ih, dn_hh = gru_unit_backward(
                    variant, cache[b, cg + j], cache[b, cg + H + j], cache[b, cg + 2 * H + j],
                    cache[b, cx + j], Rc[b, j], dH[b, j])
                dA[b, j] = dar  # Cho: 0 here, its own product below
                dAhh[b, j] = dar
                dA[b, H + j] = daz
                dAhh[b, H + j] = daz
                dA[b, 2 * H + j] = dn_ih
                dAhh[b, 2 * H + j] = dn_hh
        if variant == GRU_CHO:
            W_hn = mat(theta, lr[L_WHH] + 2 * H * nrec, H, nrec)
            dRH = np.dot(np.ascontiguousarray(dAhh[:, 2 * H:]), W_hn)
            for b in range(nb):
                for j in range(H):
                    dar = gru_cho_reset_backward(dRH[b, j], Rc[b, j], cache[b, cg + j])
                    dA[b, j] = dar
                    dAhh[b, j] = dar
            W_rz = mat(theta, lr[L_WHH], 2 * H, nrec)
            dAhh_rz = np.ascontiguousarray(dAhh[:, :2 * H])
            dR[:, :] = np.dot(dAhh_rz, W_rz)
            for b in range(nb):
                for j in range(H):
                    dR[b, j] += dRH[b, j] * cache[b, cg + j] + dH[b, j] * cache[b, cg + H + j]
            if want_params:
                _put_rows(dbuf, dofs[D_RH], r0, cache[:, cx:cx + H])
        else:
            W_hh = mat(theta, lr[L_WHH], GH, nrec)
            dR[:, :] = np.dot(dAhh, W_hh)
            for b in range(nb):
                for j in range(H):
                    dR[b, j] += dH[b, j] * cache[b, cg + H + j]
        if want_dx:
            dX[:, :] = np.dot(dA, W_ih)
        if want_params:
            _defer(dbuf, dofs, r0, dA, Xc, dAhh, Rc)
        return
    if want_dx:
        dX[:, :] = np.dot(dA, W_ih)
    dR[:, :] = recurrent_vjp(theta, lr, dA)
    if want_params:
        _defer(dbuf, dofs, r0, dA, Xc, None, Rc)
