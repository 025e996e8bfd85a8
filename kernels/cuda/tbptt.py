"""CUDA twin of ``kernels/tbptt.py``: truncated BPTT over the stream's history ring, one
stream per thread (NNDL 6.4.1, eq. 6.29-6.39, truncated to the window)."""
from numba import cuda

from ..codes import C_EMB, C_HIST, C_IN, C_OUT, C_S, C_VOCAB, K_HCOUNT, K_HPOS
from .model import add_embedding_grad, loss_grad, step_backward, step_forward
from .scratch import W_DS, W_DS0, W_DZ, W_X, W_Z


@cuda.jit(device=True)
def tbptt_window_grad(W, wc, cfg, lay, pool, wk, so, n):
    """Add to W_G the gradient of the counted losses of the last min(count, K) steps, each
    step's forward recomputed from its stored input and previous state with the weights in
    force, back-propagated from the newest step to the oldest."""
    hx, htok, hs, hy, hcls, hflag, cnt = (pool[2], pool[3], pool[4], pool[5], pool[6],
                                         pool[7], pool[8])
    K = cfg[C_HIST]
    S = cfg[C_S]
    I = cfg[C_IN]
    O = cfg[C_OUT]
    ds = so[W_DS]
    ds0 = so[W_DS0]
    dz = so[W_DZ]
    nw = min(cnt[K_HCOUNT, n], K)
    for s in range(S):
        wk[ds + s, n] = 0.0
    for tau in range(nw - 1, -1, -1):
        e = (cnt[K_HPOS, n] - nw + tau + K) % K
        X, xo = hx, e * I
        if cfg[C_VOCAB] > 0:  # the token's current embedding row, as the CPU twin does
            X, xo = wk, so[W_X]
            base = cfg[C_EMB] + htok[e, n] * I
            for q in range(I):
                wk[xo + q, n] = W[base + q, wc]
        step_forward(W, wc, cfg, lay, X, xo, hs, e * S, wk, so, n)
        for o in range(O):
            wk[dz + o, n] = 0.0
        if hflag[e, n] != 0:
            loss_grad(cfg, wk, so[W_Z], n, hy, e * O, n, hcls[e, n], wk, dz)
        step_backward(W, wc, cfg, lay, X, xo, hs, e * S, wk, so, dz, ds, n, 1)
        add_embedding_grad(cfg, htok[e, n], wk, so, n)
        for s in range(S):
            wk[ds + s, n] = wk[ds0 + s, n]
