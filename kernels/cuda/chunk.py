"""CUDA twin of ``kernels/chunk.py``: B streams, T steps each, predict then learn, one thread
per stream, all state resident on the device.

Bundles (tuples of device arrays), each per-stream array stream-minor (last axis = slot):
- model   = (cfg, lay, hyp, so)          so: scratch region offsets (``scratch.py``)
- weights = (W [P, cols], m, v, steps [cols])   cols = 1 (shared) or the pool capacity
- pool    = (state [S, cap], sens [*, cap], hx [K*I, cap], htok [K, cap], hs [K*S, cap],
             hy [K*O, cap], hcls [K, cap], hflag [K, cap], cnt [K_NFIELDS, cap],
             fst [F_NFIELDS, cap])
- batch   = (slots [B], wrow [B], inputs [T*I, B], tokens [T, B], targets [T*O, B],
             tclass [T, B], lengths [B], need_bwd [B], contrib [B])
- out     = (preds [T*O, B], losses [T, B], ev [T, B], nrm [T, B], ev_s [T], nrm_s [T])
- wk [rows, cap]: per-stream scratch; gsum [P], (upd, part): the shared update

``ev`` records what happened to stream b at position t (bits EV_*), ``nrm`` the norm of its
update; ``ev_s``/``nrm_s`` the shared update of position t. The host turns them into the CPU
kernel's counters and its ordered list of gradient norms.

Per position t, as the CPU loop: NEXT_INPUT finishes the pending step (``k_finish``), then
the due TBPTT windows run (``k_tbptt``) and the shared gradients are summed and applied
(``k_reduce``, ``k_norm``, ``k_apply``, ``k_book``); every active stream steps forward
(``k_forward``); the EXPLICIT mode then finishes step t the same way.
"""
import math

import numpy as np
from numba import cuda

from ..codes import (C_EMB, C_HIST, C_HTOP, C_IN, C_K1, C_NEXT, C_OUT, C_P, C_RULE, C_S,
                     C_SHARED, C_VOCAB, C_CLASSIFY, F_HASLOSS, F_GNORM, F_RUNNING, K_HCOUNT,
                     K_HPOS, K_NLOSS, K_NONFINITE, K_PENDING, K_SKIPPED, K_STEPS, K_UPDATES,
                     RTRL, SNAP1, TBPTT)
from . import config
from .model import (add_embedding_grad, head_logits, loss_grad, predict_row, step_backward,
                    step_forward)
from .optim import (U_ANY, U_CLIPPED, U_NFIELDS, U_NORM, U_SKIP, apply_update, k_apply,
                    k_norm,
                    k_reduce_final, k_reduce_part)
from .rtrl import rtrl_gradient, rtrl_propagate
from .scratch import W_DS, W_DZ, W_G, W_M, W_ST1, W_X, W_Z
from .snap import snap_gradient, snap_propagate
from .tbptt import tbptt_window_grad

EV_UPDATE, EV_CLIPPED, EV_SKIP_LOSS, EV_SKIP_GRAD = 1, 2, 4, 8


@cuda.jit(device=True)
def _all_finite(G, g0, n, P):
    for p in range(P):
        if not math.isfinite(G[g0 + p, n]):
            return False
    return True


@cuda.jit(device=True)
def _contribute(model, weights, pool, batch, wk, out, t, b, n):
    """Hand the stream's gradient (W_G) to its weights: marked for the shared sum, or
    applied at once to its own column."""
    cfg, hyp, so = model[0], model[2], model[3]
    W, m, v, steps = weights
    cnt, fst = pool[8], pool[9]
    ev, nrm = out[2], out[3]
    P = cfg[C_P]
    if not _all_finite(wk, so[W_G], n, P):
        cnt[K_SKIPPED, n] += 1
        ev[t, b] |= EV_SKIP_GRAD
        if cfg[C_RULE] != TBPTT:
            sens = pool[1]
            for e in range(sens.shape[0]):
                sens[e, n] = 0.0  # a non-finite sensitivity would poison every later step
        return
    if cfg[C_SHARED] == 1:
        batch[8][b] = 1
        return
    norm, clipped, applied = apply_update(W, m, v, steps, batch[1][b], wk, so[W_G], n, P, hyp)
    if applied == 0:  # the step itself overflowed float32: W, m, v untouched (sensitivity kept)
        cnt[K_SKIPPED, n] += 1
        ev[t, b] |= EV_SKIP_GRAD
        return
    ev[t, b] |= EV_UPDATE | (EV_CLIPPED * clipped)
    nrm[t, b] = norm
    cnt[K_UPDATES, n] += 1
    fst[F_GNORM, n] = norm


@cuda.jit(device=True)
def _finish(model, weights, pool, batch, wk, out, t, b, TA, to, tcol, cls, learn):
    """Loss of the stream's latest step against its target TA[to:, tcol] (or class ``cls``),
    then its rule's gradient."""
    cfg, lay, so = model[0], model[1], model[3]
    W = weights[0]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst = pool
    n = batch[0][b]
    wc = batch[1][b]
    O = cfg[C_OUT]
    head_logits(W, wc, cfg, state, cfg[C_HTOP], wk, so[W_Z], n)
    loss = loss_grad(cfg, wk, so[W_Z], n, TA, to, tcol, cls, wk, so[W_DZ])
    finite = math.isfinite(loss)
    if finite:
        if fst[F_HASLOSS, n] == 0.0:
            fst[F_RUNNING, n] = loss
            fst[F_HASLOSS, n] = 1.0
        else:
            fst[F_RUNNING, n] = 0.99 * fst[F_RUNNING, n] + 0.01 * loss
    cnt[K_PENDING, n] = 0
    if learn != 1:
        return loss
    K = cfg[C_HIST]
    last = (cnt[K_HPOS, n] - 1 + K) % K
    rule = cfg[C_RULE]
    if rule == TBPTT:
        for o in range(O):
            if cfg[C_CLASSIFY] == 0:
                hy[last * O + o, n] = TA[to + o, tcol]
            else:
                hy[last * O + o, n] = 0.0
        hcls[last, n] = cls
        hflag[last, n] = 1
        if not finite:
            cnt[K_NONFINITE, n] = 1
        cnt[K_NLOSS, n] += 1
        if cnt[K_NLOSS, n] >= cfg[C_K1]:
            batch[7][b] = 1
        return loss
    if not finite:
        cnt[K_SKIPPED, n] += 1
        out[2][t, b] |= EV_SKIP_LOSS
        return loss
    if rule == RTRL:
        rtrl_gradient(W, wc, cfg, state, 0, sens, wk, so, n)
    else:
        # SnAp-1: dL_t/dS_t within step t, from the step's recomputed forward
        P = cfg[C_P]
        g0 = so[W_G]
        for p in range(P):
            wk[g0 + p, n] = 0.0
        S = cfg[C_S]
        I = cfg[C_IN]
        ds = so[W_DS]
        for s in range(S):
            wk[ds + s, n] = 0.0
        step_forward(W, wc, cfg, lay, hx, last * I, hs, last * S, wk, so, n)
        step_backward(W, wc, cfg, lay, hx, last * I, hs, last * S, wk, so, so[W_DZ], ds, n, 2)
        add_embedding_grad(cfg, htok[last, n], wk, so, n)
        snap_gradient(cfg, lay, sens, wk, so, n)
    _contribute(model, weights, pool, batch, wk, out, t, b, n)
    return loss


@cuda.jit
def k_finish(model, weights, pool, batch, wk, out, t, learn):
    """Finish step t (EXPLICIT) or the step pending before input t (NEXT_INPUT)."""
    b = cuda.grid(1)
    slots, lengths = batch[0], batch[6]
    if b >= slots.shape[0] or t >= lengths[b]:
        return
    cfg = model[0]
    n = slots[b]
    inputs, tokens, targets, tclass = batch[2], batch[3], batch[4], batch[5]
    losses = out[1]
    if cfg[C_NEXT] == 1:
        if pool[8][K_PENDING, n] == 1:
            if cfg[C_VOCAB] > 0:
                losses[t, b] = _finish(model, weights, pool, batch, wk, out, t, b, inputs, 0, b,
                                       tokens[t, b], learn)
            else:
                losses[t, b] = _finish(model, weights, pool, batch, wk, out, t, b, inputs,
                                       t * cfg[C_IN], b, 0, learn)
        else:
            losses[t, b] = math.nan
    else:
        losses[t, b] = _finish(model, weights, pool, batch, wk, out, t, b, targets,
                               t * cfg[C_OUT], b, tclass[t, b], learn)


@cuda.jit
def k_tbptt(model, weights, pool, batch, wk, out, t):
    """The due TBPTT windows: each due stream back-propagates its own window."""
    b = cuda.grid(1)
    slots, need = batch[0], batch[7]
    if b >= slots.shape[0] or need[b] == 0:
        return
    cfg, lay, so = model[0], model[1], model[3]
    W = weights[0]
    hflag, cnt = pool[7], pool[8]
    n = slots[b]
    if cnt[K_NONFINITE, n] != 0:
        cnt[K_SKIPPED, n] += 1
        out[2][t, b] |= EV_SKIP_LOSS
    else:
        g0 = so[W_G]
        for p in range(cfg[C_P]):
            wk[g0 + p, n] = 0.0
        tbptt_window_grad(W, batch[1][b], cfg, lay, pool, wk, so, n)
        _contribute(model, weights, pool, batch, wk, out, t, b, n)
    for e in range(cfg[C_HIST]):
        hflag[e, n] = 0
    cnt[K_NLOSS, n] = 0
    cnt[K_NONFINITE, n] = 0
    need[b] = 0


@cuda.jit
def k_forward(model, weights, pool, batch, wk, out, t):
    """Step t of every active stream: layer-0 input, forward, history, sensitivity,
    prediction."""
    b = cuda.grid(1)
    slots, lengths = batch[0], batch[6]
    if b >= slots.shape[0] or t >= lengths[b]:
        return
    cfg, lay, so = model[0], model[1], model[3]
    W = weights[0]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst = pool
    inputs, tokens = batch[2], batch[3]
    n = slots[b]
    wc = batch[1][b]
    I = cfg[C_IN]
    S = cfg[C_S]
    K = cfg[C_HIST]
    xo = so[W_X]
    if cfg[C_VOCAB] == 0:
        for q in range(I):
            wk[xo + q, n] = inputs[t * I + q, b]
    else:
        base = cfg[C_EMB] + tokens[t, b] * I
        for q in range(I):
            wk[xo + q, n] = W[base + q, wc]
    step_forward(W, wc, cfg, lay, wk, xo, state, 0, wk, so, n)
    pos = cnt[K_HPOS, n]
    for q in range(I):
        hx[pos * I + q, n] = wk[xo + q, n]
    htok[pos, n] = tokens[t, b]
    for s in range(S):
        hs[pos * S + s, n] = state[s, n]
    hflag[pos, n] = 0
    cnt[K_HPOS, n] = (pos + 1) % K
    cnt[K_HCOUNT, n] = min(cnt[K_HCOUNT, n] + 1, K)
    rule = cfg[C_RULE]
    if rule == RTRL:
        rtrl_propagate(W, wc, cfg, lay, tokens[t, b], wk, xo, state, 0, sens, wk, so, n)
        m1 = so[W_M]
        for e in range(sens.shape[0]):
            sens[e, n] = wk[m1 + e, n]
    elif rule == SNAP1:
        snap_propagate(W, wc, cfg, lay, wk, xo, state, 0, sens, wk, so, n)
    s1 = so[W_ST1]
    for s in range(S):
        state[s, n] = wk[s1 + s, n]
    predict_row(cfg, wk, so[W_Z], n, out[0], t * cfg[C_OUT], b)
    cnt[K_STEPS, n] += 1
    if cfg[C_NEXT] == 1:
        cnt[K_PENDING, n] = 1


@cuda.jit
def k_book(batch, pool, upd, ev, ev_s, nrm_s, t):
    """After a shared update: the contributing streams' counters, the position's record
    (a skipped step counts as a skip for each contributing stream, as on the CPU)."""
    b = cuda.grid(1)
    contrib = batch[8]
    if b == 0 and upd[U_ANY] != 0:
        ev_s[t] = EV_UPDATE | (EV_CLIPPED * int(upd[U_CLIPPED]))
        nrm_s[t] = upd[U_NORM]
    if b >= contrib.shape[0] or contrib[b] == 0:
        return
    n = batch[0][b]
    if upd[U_SKIP] != 0:
        pool[8][K_SKIPPED, n] += 1
        ev[t, b] |= EV_SKIP_GRAD
    else:
        pool[8][K_UPDATES, n] += 1
        pool[9][F_GNORM, n] = upd[U_NORM]
    contrib[b] = 0


def _grid(n):
    tpb = config.THREADS_PER_BLOCK
    return max(1, (n + tpb - 1) // tpb), tpb


def _flush_shared(model, weights, pool, batch, wk, out, gsum, upd, g0, t):
    W, m, v, steps = weights
    P = gsum.shape[0]
    B = batch[0].shape[0]
    part = upd[1]
    upd = upd[0]
    blocks = min((P * part.shape[1] + config.THREADS_PER_BLOCK - 1) // config.THREADS_PER_BLOCK,
                 config.MAX_BLOCKS)
    k_reduce_part[blocks, config.THREADS_PER_BLOCK](wk, g0, batch[0], batch[8], part)
    blocks = min((P + config.THREADS_PER_BLOCK - 1) // config.THREADS_PER_BLOCK,
                 config.MAX_BLOCKS)
    k_reduce_final[blocks, config.THREADS_PER_BLOCK](part, gsum)
    k_norm[1, config.REDUCE_THREADS](gsum, batch[8], model[2], steps, upd, W, m, v)
    k_apply[blocks, config.THREADS_PER_BLOCK](W, m, v, gsum, model[2], upd)
    g, tpb = _grid(B)
    k_book[g, tpb](batch, pool, upd, out[2], out[4], out[5], t)


def run_chunk(model, weights, pool, batch, wk, out, gsum, upd, T, learn, host):
    """Launch the chunk's kernels position by position (see the module docstring).

    ``host`` = (cfg as a NumPy array, the offset of W_G in the scratch): what the host needs
    to decide which launches a position needs. ``gsum`` and ``upd`` = (upd, part) are the
    shared update's device buffers (``new_update_buffers``)."""
    cfg, g0 = host
    B = batch[0].shape[0]
    g, tpb = _grid(B)
    nxt = int(cfg[C_NEXT]) == 1
    tbptt = int(cfg[C_RULE]) == TBPTT
    shared = int(cfg[C_SHARED]) == 1
    for t in range(T):
        if nxt:
            k_finish[g, tpb](model, weights, pool, batch, wk, out, t, learn)
            if learn == 1:
                if tbptt:
                    k_tbptt[g, tpb](model, weights, pool, batch, wk, out, t)
                if shared:
                    _flush_shared(model, weights, pool, batch, wk, out, gsum, upd, g0, t)
        k_forward[g, tpb](model, weights, pool, batch, wk, out, t)
        if not nxt and learn != 2:
            k_finish[g, tpb](model, weights, pool, batch, wk, out, t, learn)
            if learn == 1:
                if tbptt:
                    k_tbptt[g, tpb](model, weights, pool, batch, wk, out, t)
                if shared:
                    _flush_shared(model, weights, pool, batch, wk, out, gsum, upd, g0, t)


def new_update_buffers(P, dtype):
    """(gsum [P], (upd [U_NFIELDS], part [P, REDUCE_LANES])) for ``run_chunk``."""
    return (cuda.device_array(P, dtype=dtype),
            (cuda.to_device(np.zeros(U_NFIELDS)),
             cuda.device_array((P, config.REDUCE_LANES), dtype=np.float64)))


# moving stream columns between the host's [slot, ...] arrays and the device's [..., slot]

@cuda.jit
def k_gather(arr, slots, outv):
    """outv[i, f] = arr[f, slots[i]]."""
    i, f = cuda.grid(2)
    if i < slots.shape[0] and f < arr.shape[0]:
        outv[i, f] = arr[f, slots[i]]


@cuda.jit
def k_scatter(arr, slots, vals):
    """arr[f, slots[i]] = vals[i, f]."""
    i, f = cuda.grid(2)
    if i < slots.shape[0] and f < arr.shape[0]:
        arr[f, slots[i]] = vals[i, f]


@cuda.jit
def k_copy_cols(src, dst):
    """dst[:, :src.shape[1]] = src (growing a pool)."""
    f, c = cuda.grid(2)
    if f < src.shape[0] and c < src.shape[1]:
        dst[f, c] = src[f, c]


def grid2(a, b):
    tpb = max(1, int(math.isqrt(config.THREADS_PER_BLOCK)))
    return ((a + tpb - 1) // tpb, (b + tpb - 1) // tpb), (tpb, tpb)
