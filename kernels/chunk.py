"""The chunk loop: B streams, T steps each, predict then learn, all inside compiled code.

Bundles (tuples of arrays) keep the argument lists short; their fields are named in
``kernels/bundles.py`` (``pool[POOL_CNT]``):
- model   = (cfg, lay, hyp)
- weights = (W [rows, P], m [rows, P], v [rows, P], steps [rows])  optimizer moments per row
- pool    = (state [cap, S], sens [cap, *], hx [cap, K, I], htok [cap, K], hs [cap, K, S],
             hy [cap, K, O], hcls [cap, K], hflag [cap, K], cnt [cap, K_NFIELDS],
             fst [cap, F_NFIELDS], hc [cap, K, C], hz [cap, K, O], hs1 [cap, K, S],
             hver [cap, K])   per-stream storage, indexed by slot; h* is the history ring
             (hc/hz/hs1: each step's cache, logits and new state; hver: the optimizer step
             count of its weights then, so TBPTT reuses them while no update intervened;
             hz also gives a NEXT_INPUT step's logits when its target arrives next call)
- batch   = (slots [B], wrow [B], inputs [B, T, I], tokens [B, T], targets [B, T, O],
             tclass [B, T], lengths [B], learn)
- out     = (preds [B, T, O], losses [B, T], res [R_NFIELDS], gnorms [n]): gnorms gets each
             update's gradient norm, in order; n covers the most updates one call can make
             (the engine's B * (T + 1) * 2 + B * labels + 1)

Order of events per position t (kernels/README.md): NEXT_INPUT finishes the pending step with
this input as its target; every active stream runs its forward with the weights in force; the
EXPLICIT mode finishes step t. Finishing = loss, gradient by the stream's rule, and, for
shared weights, one summed update per position.

Late labels (kernels/README.md, "Late labels"): ``learn_labels`` finishes earlier steps of
the streams before their chunk runs, ``learn_pending`` takes TBPTT's pending update before a
segment's reset, and with max_label_delay > 0 the chunk loop learns a pending step before its
ring overwrites it.
"""
import numpy as np
from numba import njit

from .bundles import (BATCH_LEARN, BATCH_LENGTHS, BATCH_SLOTS, BATCH_WROW, MODEL_CFG,
                      MODEL_HYP, MODEL_LAY, OUT_GNORMS, OUT_LOSSES, OUT_PREDS, OUT_RES, POOL_CNT,
                      POOL_FST, POOL_HFLAG, POOL_HZ, POOL_SENS, WEIGHTS_STEPS, WEIGHTS_W)
from .cells import D_NFIELDS
from .codes import (C_CACHE, C_DELAY, C_EMB, C_HIST, C_HLAST, C_HTOP, C_IN, C_K1, C_NEXT, C_NL,
                    C_OUT, C_P, C_RULE, C_S, C_SHARED, C_VOCAB, F_GNORM, F_HASLOSS, F_RUNNING,
                    FLAG_DONE, FLAG_NONE, FLAG_PENDING, K_HCOUNT, K_HPOS, K_NLOSS, K_NONFINITE,
                    K_PENDING, K_SKIPPED, K_STEPS, K_UPDATES, R_CLIPPED, R_SKIP_GRAD, R_SKIP_LOSS,
                    R_STEPS, R_UPDATES, RTRL, SNAP1, TBPTT)
from .model import (add_embedding_grad, head_logits, loss_grad, predict_row, step_backward,
                    step_forward)
from .optim import apply_update
from .rtrl import rtrl_gradient, rtrl_propagate
from .snap import snap_gradient, snap_propagate
from .tbptt import tbptt_window_grad

# Streams per batched TBPTT backward pass: a [k2, 128, cache] window stays a few MiB.
WINDOW_STREAMS = 128


@njit(cache=True)
def _all_finite(g):
    # x - x is 0 for a finite x and NaN otherwise; an OR of flags, unlike an early exit,
    # vectorises (and a gradient is almost always finite, so it is read whole anyway)
    bad = False
    for p in range(g.shape[0]):
        bad |= (g[p] - g[p]) != 0.0
    return not bad


@njit(cache=True)
def _skip(model, pool, out, slot, reason_grad):
    cfg = model[MODEL_CFG]
    sens, cnt = pool[POOL_SENS], pool[POOL_CNT]
    res = out[OUT_RES]
    cnt[slot, K_SKIPPED] += 1
    if reason_grad:
        res[R_SKIP_GRAD] += 1
        if cfg[C_RULE] != TBPTT:
            sens[slot, :] = 0.0  # a non-finite sensitivity would poison every later step
    else:
        res[R_SKIP_LOSS] += 1


@njit(cache=True)
def _record_update(pool, out, slot, norm, clipped):
    cnt, fst = pool[POOL_CNT], pool[POOL_FST]
    res, gnorms = out[OUT_RES], out[OUT_GNORMS]
    gnorms[res[R_UPDATES]] = norm
    res[R_UPDATES] += 1
    res[R_CLIPPED] += clipped
    cnt[slot, K_UPDATES] += 1
    fst[slot, F_GNORM] = norm


@njit(cache=True)
def _contribute(model, weights, pool, batch, out, acc, b, g):
    """Hand stream b's gradient g to its weights: summed (shared) or applied at once."""
    cfg, hyp = model[MODEL_CFG], model[MODEL_HYP]
    W, m, v, steps = weights
    slot = batch[BATCH_SLOTS][b]
    if not _all_finite(g):
        _skip(model, pool, out, slot, True)
        return
    if cfg[C_SHARED] == 1:
        gsum, contrib = acc
        gsum += g
        contrib[b] = True
        return
    norm, clipped, applied = apply_update(W, batch[BATCH_WROW][b], g, m, v, steps, hyp)
    if applied:
        _record_update(pool, out, slot, norm, clipped)
    else:  # the step itself overflowed: W, m, v untouched; the gradient and sensitivity were finite
        pool[POOL_CNT][slot, K_SKIPPED] += 1
        out[OUT_RES][R_SKIP_GRAD] += 1


@njit(cache=True)
def _flush_shared(model, weights, pool, batch, out, acc):
    cfg, hyp = model[MODEL_CFG], model[MODEL_HYP]
    if cfg[C_SHARED] == 0:
        return
    gsum, contrib = acc
    if not contrib.any():
        return
    W, m, v, steps = weights
    # the sum of finite gradients can overflow; apply_update then skips the step
    norm, clipped, applied = apply_update(W, 0, gsum, m, v, steps, hyp)
    res, gnorms = out[OUT_RES], out[OUT_GNORMS]
    if applied:
        gnorms[res[R_UPDATES]] = norm
        res[R_UPDATES] += 1
        res[R_CLIPPED] += clipped
    cnt, fst = pool[POOL_CNT], pool[POOL_FST]
    for b in range(contrib.shape[0]):
        if contrib[b]:
            slot = batch[BATCH_SLOTS][b]
            if applied:
                cnt[slot, K_UPDATES] += 1
                fst[slot, F_GNORM] = norm
            else:  # counted per contributing stream, as a stream's own skip is (and on CUDA)
                cnt[slot, K_SKIPPED] += 1
                res[R_SKIP_GRAD] += 1
            contrib[b] = False
    gsum[:] = 0.0


@njit(cache=True)
def _finish(model, weights, pool, batch, out, acc, st, z, b, back, target, cls, need_bwd, dz):
    """Loss of the stream's step ``back`` steps before its latest one (logits z, as they were
    predicted) against its target, then its rule's gradient (back > 0: a late label; never
    for RTRL). dz [1, O] is scratch for the loss's gradient w.r.t. z."""
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    slot = batch[BATCH_SLOTS][b]
    theta = W[batch[BATCH_WROW][b]]
    learn = batch[BATCH_LEARN]
    O = cfg[C_OUT]
    loss = loss_grad(cfg, z, target, cls, dz[0])
    finite = np.isfinite(loss)
    if finite:
        if fst[slot, F_HASLOSS] == 0.0:
            fst[slot, F_RUNNING] = loss
            fst[slot, F_HASLOSS] = 1.0
        else:
            fst[slot, F_RUNNING] = 0.99 * fst[slot, F_RUNNING] + 0.01 * loss
    cnt[slot, K_PENDING] = 0
    if learn != 1:
        return loss
    K = cfg[C_HIST]
    last = (cnt[slot, K_HPOS] - 1 - back + K) % K
    rule = cfg[C_RULE]
    if rule == TBPTT:
        hy[slot, last] = target
        hcls[slot, last] = cls
        hflag[slot, last] = FLAG_PENDING
        if not finite:
            cnt[slot, K_NONFINITE] = 1
        cnt[slot, K_NLOSS] += 1
        if cnt[slot, K_NLOSS] >= cfg[C_K1]:
            need_bwd[b] = True
        return loss
    if cfg[C_DELAY] > 0:  # so that a second label for this step is refused
        hflag[slot, last] = FLAG_DONE
    if not finite:
        _skip(model, pool, out, slot, False)
        return loss
    P = cfg[C_P]
    g = np.zeros(P, dtype=theta.dtype)
    if rule == RTRL:
        rtrl_gradient(theta, cfg, st[b], sens[slot], dz[0], htok[slot, last], hx[slot, last], g)
    else:
        # SnAp-1: dL_t/dS_t within step t, from the step's forward (recomputed if the weights moved)
        S = cfg[C_S]
        x0 = hx[slot, last:last + 1]
        s0 = hs[slot, last:last + 1]
        if hver[slot, last] == weights[WEIGHTS_STEPS][batch[BATCH_WROW][b]]:
            # its forward ran with these weights: its results as they were (as TBPTT's)
            S1 = hs1[slot, last:last + 1]
            cache = hc[slot, last:last + 1]
        else:
            S1 = np.empty((1, S), dtype=theta.dtype)
            cache = np.empty((1, cfg[C_CACHE]), dtype=theta.dtype)
            zr = np.empty((1, O), dtype=theta.dtype)
            step_forward(theta, cfg, lay, x0, s0, S1, cache, zr)
        dS1 = np.zeros((1, S), dtype=theta.dtype)
        dS0 = np.empty((1, S), dtype=theta.dtype)
        dHs = np.empty((1, S), dtype=theta.dtype)
        dx = np.empty((1, x0.shape[1]), dtype=theta.dtype)
        no_rows = np.zeros((cfg[C_NL], D_NFIELDS), dtype=np.int64)  # mode 2 defers nothing
        within_step = np.int64(2)  # param_mode 2, as a run-time int: one compiled step_backward
        step_backward(theta, cfg, lay, x0, s0, S1, cache, dz, dS1, g, dx, dS0, dHs, within_step,
                      np.empty(0, dtype=theta.dtype), no_rows, np.int64(0))
        add_embedding_grad(cfg, htok[slot, last:last + 1], dx, g)
        if back == 0:
            snap_gradient(cfg, lay, sens[slot], dHs[0], g)
        else:  # the sensitivity of the labelled step, kept beside the ring
            snap_gradient(cfg, lay, sens[slot, 2 * P * (1 + last):2 * P * (2 + last)], dHs[0], g)
    _contribute(model, weights, pool, batch, out, acc, b, g)
    return loss


@njit(cache=True)
def _window_span(cfg, hflag, cnt, slot):
    """(back, n): the update's window is the n steps ending ``back`` steps before the
    stream's latest one. It ends at the newest step whose loss is pending and reaches k2
    steps back from there, or further when an older pending step (a late label that came
    out of order) needs it, never past the ring's oldest step. Without late labels the
    newest pending step is the latest step: the last min(count, k2) steps, as always."""
    K = cfg[C_HIST]
    k2 = K - cfg[C_DELAY]
    count = min(cnt[slot, K_HCOUNT], K)
    pos = cnt[slot, K_HPOS]
    newest = -1
    oldest = -1
    for j in range(count):
        if hflag[slot, (pos - 1 - j + K) % K] == FLAG_PENDING:
            if newest < 0:
                newest = j
            oldest = j
    if newest < 0:
        return 0, count
    start = min(max(newest + k2 - 1, oldest), count - 1)
    return newest, start - newest + 1


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def _window_grad(cfg, lay, weights, pool, row, theta, slots, members, ends, n, g):
    """Gather n steps of each member stream i from its ring, ending ends[i] steps before its
    latest step, and add their window gradient to g."""
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    K = cfg[C_HIST]
    nb = members.shape[0]
    wx = np.empty((n, nb, hx.shape[2]), dtype=theta.dtype)
    wtok = np.empty((n, nb), dtype=htok.dtype)
    ws = np.empty((n, nb, cfg[C_S]), dtype=theta.dtype)
    wy = np.empty((n, nb, hy.shape[2]), dtype=theta.dtype)
    wcls = np.empty((n, nb), dtype=hcls.dtype)
    wflag = np.empty((n, nb), dtype=hflag.dtype)
    wc = np.empty((n, nb, hc.shape[2]), dtype=theta.dtype)
    wz = np.empty((n, nb, hz.shape[2]), dtype=theta.dtype)
    ws1 = np.empty((n, nb, cfg[C_S]), dtype=theta.dtype)
    fresh = np.ones(n, dtype=np.bool_)
    version = weights[WEIGHTS_STEPS][row]
    for i in range(nb):
        slot = slots[members[i]]
        for tau in range(n):
            e = (cnt[slot, K_HPOS] - ends[i] - n + tau + K) % K
            wx[tau, i] = hx[slot, e]
            wtok[tau, i] = htok[slot, e]
            ws[tau, i] = hs[slot, e]
            wy[tau, i] = hy[slot, e]
            wcls[tau, i] = hcls[slot, e]
            wflag[tau, i] = hflag[slot, e]
            wc[tau, i] = hc[slot, e]
            wz[tau, i] = hz[slot, e]
            ws1[tau, i] = hs1[slot, e]
            if hver[slot, e] != version:
                fresh[tau] = False
    tbptt_window_grad(theta, cfg, lay, (wx, wtok, ws, wy, wcls, wflag), (wc, wz, ws1, fresh), g)


@njit(cache=True)
def _due_windows(model, pool, out, slots, need_bwd):
    """The TBPTT windows due for the streams with need_bwd set: (todo, ends, lens), each
    stream's window as ``_window_span`` gives it. A stream whose losses were not finite is
    skipped (and counted) instead."""
    cfg = model[MODEL_CFG]
    hflag, cnt = pool[POOL_HFLAG], pool[POOL_CNT]
    B = slots.shape[0]
    for b in range(B):
        if need_bwd[b] and cnt[slots[b], K_NONFINITE] != 0:
            _skip(model, pool, out, slots[b], False)
    todo = need_bwd.copy()
    ends = np.zeros(B, dtype=np.int64)
    lens = np.zeros(B, dtype=np.int64)
    for b in range(B):
        if todo[b] and cnt[slots[b], K_NONFINITE] != 0:
            todo[b] = False
        if todo[b]:
            ends[b], lens[b] = _window_span(cfg, hflag, cnt, slots[b])
    return todo, ends, lens


@njit(cache=True)
def _windows_learned(cfg, pool, slots, need_bwd):
    """After the due windows' backward: their pending steps are learned (late labels must
    still see that these steps have their targets) and their loss counts start again."""
    hflag, cnt = pool[POOL_HFLAG], pool[POOL_CNT]
    K = cfg[C_HIST]
    done = FLAG_DONE if cfg[C_DELAY] > 0 else FLAG_NONE
    for b in range(slots.shape[0]):
        if need_bwd[b]:
            slot = slots[b]
            for e in range(K):
                if hflag[slot, e] == FLAG_PENDING:
                    hflag[slot, e] = done
            cnt[slot, K_NLOSS] = 0
            cnt[slot, K_NONFINITE] = 0
            need_bwd[b] = False


@njit(cache=True)
def _tbptt_phase(model, weights, pool, batch, out, acc, need_bwd):
    """Run the due TBPTT backward passes: one batched pass per group of streams that share
    the weights and the window length, one pass per stream otherwise."""
    if not need_bwd.any():
        return
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    slots, wrow = batch[BATCH_SLOTS], batch[BATCH_WROW]
    P = cfg[C_P]
    B = slots.shape[0]
    todo, ends, lens = _due_windows(model, pool, out, slots, need_bwd)
    while todo.any():
        lead = np.argmax(todo)
        n = lens[lead]
        group = np.zeros(B, dtype=np.bool_)
        for b in range(B):
            if todo[b] and lens[b] == n and (cfg[C_SHARED] == 1 or b == lead):
                group[b] = True
        members = np.nonzero(group)[0]
        nb = members.shape[0]
        theta = W[wrow[lead]]
        g = np.zeros(P, dtype=theta.dtype)
        # Sub-batches keep the window's arrays small enough to stay in cache and in the
        # heap (kernels/README.md: the shared gradient is summed per sub-batch, then added).
        for lo in range(0, nb, WINDOW_STREAMS):
            _window_grad(cfg, lay, weights, pool, wrow[lead], theta, slots,
                         members[lo:lo + WINDOW_STREAMS], ends[members[lo:lo + WINDOW_STREAMS]],
                         n, g)
        if cfg[C_SHARED] == 1:
            if _all_finite(g):
                gsum, contrib = acc
                gsum += g
                for i in range(nb):
                    contrib[members[i]] = True
            else:
                for i in range(nb):
                    _skip(model, pool, out, slots[members[i]], True)
        else:
            _contribute(model, weights, pool, batch, out, acc, lead, g)
        for i in range(nb):
            todo[members[i]] = False
    _windows_learned(cfg, pool, slots, need_bwd)


@njit(cache=True)
def _layer0_inputs(cfg, W, wrow, inputs, tokens, t, x):
    if cfg[C_VOCAB] == 0:
        x[:, :] = inputs[:, t, :]
        return
    I = cfg[C_IN]
    for b in range(x.shape[0]):
        base = cfg[C_EMB] + tokens[b, t] * I
        x[b, :] = W[wrow[b], base:base + I]


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def _learn_before_eviction(model, weights, pool, batch, out, acc, need_bwd, t):
    """Late labels (TBPTT): a step whose loss is still pending is learned before the ring
    overwrites it, so a label once accepted is never dropped (k1 labels may take longer than
    the ring holds, e.g. one segment label per many steps)."""
    cfg = model[MODEL_CFG]
    hflag, cnt = pool[POOL_HFLAG], pool[POOL_CNT]
    slots, lengths = batch[BATCH_SLOTS], batch[BATCH_LENGTHS]
    K = cfg[C_HIST]
    for b in range(slots.shape[0]):
        slot = slots[b]
        if (t < lengths[b] and cnt[slot, K_HCOUNT] >= K
                and hflag[slot, cnt[slot, K_HPOS]] == FLAG_PENDING):
            need_bwd[b] = True
    _tbptt_phase(model, weights, pool, batch, out, acc, need_bwd)
    _flush_shared(model, weights, pool, batch, out, acc)


@njit(cache=True, nogil=True)
def learn_labels(model, weights, pool, batch, labels, out):
    """Late labels of B streams, before their chunk's steps run. labels = (count [B], back
    [B, L] (steps before the stream's latest step), targets [B, L, O], classes [B, L], losses
    [B, L] out). Round r scores every stream's r-th label against the logits its step was
    predicted with, then takes the rules' gradients, as one position of run_chunk does: SnAp-1
    at once (with the step's stored sensitivity), TBPTT when k1 losses are pending; shared
    weights take one summed update per round."""
    cfg = model[MODEL_CFG]
    W = weights[WEIGHTS_W]
    cnt, hz = pool[POOL_CNT], pool[POOL_HZ]
    count, back, ly, lcls, lloss = labels
    slots = batch[BATCH_SLOTS]
    B = slots.shape[0]
    K = cfg[C_HIST]
    dt = W.dtype
    acc = (np.zeros(cfg[C_P], dtype=dt), np.zeros(B, dtype=np.bool_))
    need_bwd = np.zeros(B, dtype=np.bool_)
    dz = np.empty((1, cfg[C_OUT]), dtype=dt)
    st = np.empty((B, cfg[C_S]), dtype=dt)  # RTRL's current state: RTRL takes no late labels
    for r in range(back.shape[1]):
        for b in range(B):
            if r < count[b]:
                slot = slots[b]
                z = hz[slot, (cnt[slot, K_HPOS] - 1 - back[b, r] + K) % K].copy()
                lloss[b, r] = _finish(model, weights, pool, batch, out, acc, st, z, b,
                                      back[b, r], ly[b, r], lcls[b, r], need_bwd, dz)
        _tbptt_phase(model, weights, pool, batch, out, acc, need_bwd)
        _flush_shared(model, weights, pool, batch, out, acc)


@njit(cache=True, nogil=True)
def learn_pending(model, weights, pool, batch, which, out):
    """TBPTT: the update for the pending losses of the streams with which[b] set, now (fewer
    than k1 of them), e.g. before their state is reset at a segment's end."""
    cfg = model[MODEL_CFG]
    if cfg[C_RULE] != TBPTT:
        return
    cnt = pool[POOL_CNT]
    slots = batch[BATCH_SLOTS]
    B = slots.shape[0]
    need_bwd = np.zeros(B, dtype=np.bool_)
    for b in range(B):
        need_bwd[b] = which[b] and cnt[slots[b], K_NLOSS] > 0
    acc = (np.zeros(cfg[C_P], dtype=weights[WEIGHTS_W].dtype), np.zeros(B, dtype=np.bool_))
    _tbptt_phase(model, weights, pool, batch, out, acc, need_bwd)
    _flush_shared(model, weights, pool, batch, out, acc)


# nogil: the service runs engine calls on a worker thread while gRPC I/O goes on
@njit(cache=True, nogil=True)
def run_chunk(model, weights, pool, batch, out):
    """Predict and learn T steps of B streams (see the module docstring)."""
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    slots, wrow, inputs, tokens, targets, tclass, lengths, learn = batch
    preds, losses = out[OUT_PREDS], out[OUT_LOSSES]
    res = out[OUT_RES]
    B = slots.shape[0]
    S = cfg[C_S]
    O = cfg[C_OUT]
    P = cfg[C_P]
    K = cfg[C_HIST]
    rule = cfg[C_RULE]
    now = np.int64(0)  # 'the latest step' for _finish: a run-time 0, one compiled _finish
    nxt = cfg[C_NEXT] == 1
    shared = cfg[C_SHARED] == 1
    delayed = cfg[C_DELAY] > 0
    dt = W.dtype
    st = np.empty((B, S), dtype=dt)
    for b in range(B):
        st[b] = state[slots[b]]
    st1 = np.empty((B, S), dtype=dt)
    cache = np.empty((B, cfg[C_CACHE]), dtype=dt)
    Z = np.empty((B, O), dtype=dt)
    x = np.empty((B, cfg[C_IN]), dtype=dt)
    acc = (np.zeros(P, dtype=dt), np.zeros(B, dtype=np.bool_))
    need_bwd = np.zeros(B, dtype=np.bool_)
    dz = np.empty((1, O), dtype=dt)
    if rule == RTRL:
        Mtmp = np.empty(sens.shape[1], dtype=dt)
    else:
        Mtmp = np.empty(0, dtype=dt)
    empty_target = np.zeros(O, dtype=dt)
    T = lengths.max() if B > 0 else 0
    for t in range(T):
        if nxt:
            if t == 0:  # the pending steps' logits, as their forward computed them
                for b in range(B):
                    Z[b] = hz[slots[b], (cnt[slots[b], K_HPOS] - 1 + K) % K]
            for b in range(B):
                if t >= lengths[b]:
                    continue
                if cnt[slots[b], K_PENDING] == 1:
                    if cfg[C_VOCAB] > 0:
                        losses[b, t] = _finish(model, weights, pool, batch, out, acc, st, Z[b], b,
                                               now, empty_target, tokens[b, t], need_bwd, dz)
                    else:
                        losses[b, t] = _finish(model, weights, pool, batch, out, acc, st, Z[b], b,
                                               now, inputs[b, t, :O], now, need_bwd, dz)
                else:
                    losses[b, t] = np.nan
            _tbptt_phase(model, weights, pool, batch, out, acc, need_bwd)
            _flush_shared(model, weights, pool, batch, out, acc)
        if rule == TBPTT and delayed:
            _learn_before_eviction(model, weights, pool, batch, out, acc, need_bwd, t)
        _layer0_inputs(cfg, W, wrow, inputs, tokens, t, x)
        if shared:
            step_forward(W[0], cfg, lay, x, st, st1, cache, Z)
        else:
            for b in range(B):
                if t < lengths[b]:
                    step_forward(W[wrow[b]], cfg, lay, x[b:b + 1], st[b:b + 1], st1[b:b + 1],
                                 cache[b:b + 1], Z[b:b + 1])
        for b in range(B):
            if t >= lengths[b]:
                continue
            slot = slots[b]
            theta = W[wrow[b]]
            pos = cnt[slot, K_HPOS]
            hx[slot, pos] = x[b]
            htok[slot, pos] = tokens[b, t]
            hs[slot, pos] = st[b]
            hflag[slot, pos] = 0
            hz[slot, pos] = Z[b]
            if rule != RTRL:  # forward results a later gradient reuses while the weights hold
                hc[slot, pos] = cache[b]
                hs1[slot, pos] = st1[b]
                hver[slot, pos] = weights[WEIGHTS_STEPS][wrow[b]]
            cnt[slot, K_HPOS] = (pos + 1) % K
            cnt[slot, K_HCOUNT] = min(cnt[slot, K_HCOUNT] + 1, K)
            if rule == RTRL:
                rtrl_propagate(theta, cfg, lay, tokens[b, t], x[b], st[b], st1[b], cache[b],
                               sens[slot], Mtmp)
                sens[slot, :] = Mtmp
            elif rule == SNAP1:
                snap_propagate(theta, cfg, lay, x[b], st[b], st1[b], cache[b], sens[slot])
                if delayed:  # what a late label for this step will need
                    sens[slot, 2 * P * (1 + pos):2 * P * (2 + pos)] = sens[slot, :2 * P]
            st[b] = st1[b]
            predict_row(cfg, Z[b], preds[b, t])
            cnt[slot, K_STEPS] += 1
            res[R_STEPS] += 1
        if nxt:
            for b in range(B):
                if t < lengths[b]:
                    cnt[slots[b], K_PENDING] = 1
        else:
            for b in range(B):
                if t < lengths[b] and learn != 2:  # 2: predict only, no targets sent
                    losses[b, t] = _finish(model, weights, pool, batch, out, acc, st, Z[b], b,
                                           now, targets[b, t], tclass[b, t], need_bwd, dz)
            _tbptt_phase(model, weights, pool, batch, out, acc, need_bwd)
            _flush_shared(model, weights, pool, batch, out, acc)
    for b in range(B):
        state[slots[b]] = st[b]


@njit(cache=True, nogil=True)
def forecast(theta, cfg, lay, s, horizon, out):
    """out[i] = the prediction i steps past the state s, each fed back as the next input
    (tokens: the most probable one). s is not modified."""
    S = cfg[C_S]
    O = cfg[C_OUT]
    st = np.empty((1, S), dtype=theta.dtype)
    st[0] = s
    st1 = np.empty((1, S), dtype=theta.dtype)
    cache = np.empty((1, cfg[C_CACHE]), dtype=theta.dtype)
    Z = np.empty((1, O), dtype=theta.dtype)
    x = np.empty((1, cfg[C_IN]), dtype=theta.dtype)
    htop = cfg[C_HTOP]
    head_logits(theta, cfg, st[:, htop:htop + cfg[C_HLAST]], x, Z)  # no skip on this path
    for i in range(horizon):
        predict_row(cfg, Z[0], out[i])
        if i == horizon - 1:
            break
        if cfg[C_VOCAB] > 0:
            tok = np.argmax(out[i])
            base = cfg[C_EMB] + tok * cfg[C_IN]
            x[0] = theta[base:base + cfg[C_IN]]
        else:
            x[0] = out[i]
        step_forward(theta, cfg, lay, x, st, st1, cache, Z)
        st[0] = st1[0]
