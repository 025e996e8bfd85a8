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

Order of events per position t (kernels/README.md), in up to three stages: NEXT (NEXT_INPUT
finishes the pending step with this input as its target), EVICT (TBPTT with late labels: a
pending step about to leave the ring is learned) and STEP (every active stream runs its forward
with the weights in force; the EXPLICIT mode finishes step t). Finishing = loss and gradient by
the stream's rule; a stage ends with the due TBPTT windows and, for shared weights, one summed
update. ``run_stages`` is that loop over a stretch of stages: ``run_chunk`` runs it over all of
a chunk's stages in one call, and each part of a shared model's split batch over a stretch
(``kernels/shared_steps.py``); one loop, compiled once.

Late labels (kernels/README.md, "Late labels"): ``learn_labels`` finishes earlier steps of
the streams before their chunk runs, ``learn_pending`` takes TBPTT's pending update before a
segment's reset, and with max_label_delay > 0 the EVICT stage learns a pending step before its
ring overwrites it.
"""
import numpy as np
from numba import njit

from .bundles import (BATCH_LEARN, BATCH_LENGTHS, BATCH_SLOTS, BATCH_WROW, MODEL_CFG, MODEL_LAY,
                      OUT_LOSSES, OUT_PREDS, OUT_RES, POOL_CNT, POOL_FST, POOL_HCLS, POOL_HFLAG,
                      POOL_HY, POOL_HZ, POOL_SENS, POOL_STATE, WEIGHTS_STEPS, WEIGHTS_W)
from .cells import D_NFIELDS
from .codes import (C_CACHE, C_DELAY, C_EMB, C_HIST, C_HLAST, C_HTOP, C_IN, C_K1, C_NEXT, C_NL,
                    C_OUT, C_P, C_RULE, C_S, C_SHARED, C_VOCAB, F_HASLOSS, F_RUNNING, FLAG_DONE,
                    FLAG_PENDING, K_HCOUNT, K_HPOS, K_NLOSS, K_NONFINITE, K_PENDING, K_STEPS,
                    R_STEPS, RTRL, SNAP1, TBPTT)
from .model import (add_embedding_grad, head_logits, loss_grad, predict_row, step_backward,
                    step_forward)
from .rtrl import rtrl_gradient, rtrl_propagate
from .snap import snap_gradient, snap_propagate
from .tbptt import WINDOW_STREAMS, _tbptt_phase, _whole_call_groups
from .updates import _contribute, _flush_shared, _skip

# the stages of one position t, in order: stage i of a chunk is position i // STAGES, stage
# i % STAGES (``shared_steps`` splits a chunk between them)
STAGE_NEXT, STAGE_EVICT, STAGE_STEP = range(3)
STAGES = 3


# what ``_finish`` is to do once ``_score`` knows a step's loss
DUE_NONE, DUE_GRADIENT, DUE_SKIP = range(3)


@njit(cache=True)
def _score(cfg, cnt, fst, hflag, hy, hcls, need_bwd, b, slot, learn, z, back, target, cls, dz):
    """Loss of stream b's step ``back`` steps before its latest one (logits z, as they were
    predicted) against its target (back > 0: a late label; never for RTRL), and the
    bookkeeping of its rule (TBPTT: need_bwd[b] once k1 losses are pending). Returns (loss,
    what ``_finish`` is to do: DUE_*, the step's ring position). dz [1, O] gets the loss's
    gradient w.r.t. z. Every stream's every step comes here, so it takes only the arrays it
    uses: a call takes, and gives back, a reference to each."""
    loss = loss_grad(cfg, z, target, cls, dz[0])
    finite = np.isfinite(loss)
    if finite:
        if fst[slot, F_HASLOSS] == 0.0:
            fst[slot, F_RUNNING] = loss
            fst[slot, F_HASLOSS] = 1.0
        else:
            fst[slot, F_RUNNING] = 0.99 * fst[slot, F_RUNNING] + 0.01 * loss
    cnt[slot, K_PENDING] = 0
    K = cfg[C_HIST]
    last = (cnt[slot, K_HPOS] - 1 - back + K) % K
    if learn != 1:
        return loss, DUE_NONE, last
    if cfg[C_RULE] == TBPTT:  # the window's backward runs once k1 losses are pending
        hy[slot, last] = target
        hcls[slot, last] = cls
        hflag[slot, last] = FLAG_PENDING
        if not finite:
            cnt[slot, K_NONFINITE] = 1
        cnt[slot, K_NLOSS] += 1
        if cnt[slot, K_NLOSS] >= cfg[C_K1]:
            need_bwd[b] = True
        return loss, DUE_NONE, last
    if cfg[C_DELAY] > 0:  # so that a second label for this step is refused
        hflag[slot, last] = FLAG_DONE
    return loss, DUE_GRADIENT if finite else DUE_SKIP, last


@njit(cache=True)
def _finish(model, weights, pool, batch, out, acc, st, b, back, due, last, dz):
    """Do what ``_score`` found due for stream b's step at ring position ``last`` (RTRL,
    SnAp-1): skip it (a loss not finite), or take the rule's gradient (dz: the loss's w.r.t.
    the logits) and hand it to the weights."""
    slot = batch[BATCH_SLOTS][b]
    if due == DUE_SKIP:
        _skip(model, pool, out, slot, False)
        return
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    theta = weights[WEIGHTS_W][batch[BATCH_WROW][b]]
    P = cfg[C_P]
    O = cfg[C_OUT]
    g = np.zeros(P, dtype=theta.dtype)
    if cfg[C_RULE] == RTRL:
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


@njit(cache=True)
def _layer0_inputs(cfg, W, wrow, inputs, tokens, t, x):
    if cfg[C_VOCAB] == 0:
        x[:, :] = inputs[:, t, :]
        return
    I = cfg[C_IN]
    for b in range(x.shape[0]):
        base = cfg[C_EMB] + tokens[b, t] * I
        x[b, :] = W[wrow[b], base:base + I]


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
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    learn = batch[BATCH_LEARN]
    count, back, ly, lcls, lloss = labels
    slots = batch[BATCH_SLOTS]
    B = slots.shape[0]
    K = cfg[C_HIST]
    dt = W.dtype
    acc = (np.zeros(cfg[C_P], dtype=dt), np.zeros(B, dtype=np.bool_))
    need_bwd = np.zeros(B, dtype=np.bool_)
    dz = np.empty((1, cfg[C_OUT]), dtype=dt)
    st = np.empty((B, cfg[C_S]), dtype=dt)  # RTRL's current state: RTRL takes no late labels
    groups = _whole_call_groups(W)
    window_streams = np.int64(WINDOW_STREAMS)
    for r in range(back.shape[1]):
        for b in range(B):
            if r < count[b]:
                slot = slots[b]
                z = hz[slot, (cnt[slot, K_HPOS] - 1 - back[b, r] + K) % K].copy()
                lloss[b, r], due, last = _score(cfg, cnt, fst, hflag, hy, hcls, need_bwd, b, slot,
                                                learn, z, back[b, r], ly[b, r], lcls[b, r], dz)
                if due != DUE_NONE:
                    _finish(model, weights, pool, batch, out, acc, st, b, back[b, r], due, last, dz)
        _tbptt_phase(model, weights, pool, batch, out, acc, groups, need_bwd, window_streams)
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
    W = weights[WEIGHTS_W]
    acc = (np.zeros(cfg[C_P], dtype=W.dtype), np.zeros(B, dtype=np.bool_))
    _tbptt_phase(model, weights, pool, batch, out, acc, _whole_call_groups(W), need_bwd,
                 np.int64(WINDOW_STREAMS))
    _flush_shared(model, weights, pool, batch, out, acc)


# nogil: the service runs engine calls on a worker thread while gRPC I/O goes on
@njit(cache=True, nogil=True)
def run_stages(model, weights, pool, batch, out, scratch, acc, groups, window_streams, i0, i1):
    """Stages [i0, i1) of the chunk (the module docstring), TBPTT windows in sub-batches of
    ``window_streams`` streams. In a whole call (``run_chunk``: groups empty) each stage's
    update is taken as it comes. On one part of a shared model's split batch
    (``kernels/shared_steps.py``, whose docstring names the buffers) the gradients stay in acc
    and groups, and the loop stops after the first stage that leaves one. Returns (the stage it
    stopped before, whether it left a gradient)."""
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    slots, wrow, inputs, tokens, targets, tclass, lengths, learn = batch
    preds, losses, res = out[OUT_PREDS], out[OUT_LOSSES], out[OUT_RES]
    st, st1, cache, Z, x, need_bwd, dz, Mtmp, empty_target = scratch
    contrib, gused = acc[1], groups[1]
    as_part = gused.shape[0] > 0
    B = slots.shape[0]
    O = cfg[C_OUT]
    P = cfg[C_P]
    K = cfg[C_HIST]
    rule = cfg[C_RULE]
    now = np.int64(0)  # 'the latest step' for _score and _finish
    nxt = cfg[C_NEXT] == 1
    shared = cfg[C_SHARED] == 1
    delayed = cfg[C_DELAY] > 0
    for i in range(i0, i1):
        t = i // STAGES
        stage = i % STAGES
        if stage == STAGE_NEXT:
            if not nxt:
                continue
            if t == 0:  # the pending steps' logits, as their forward computed them
                for b in range(B):
                    Z[b] = hz[slots[b], (cnt[slots[b], K_HPOS] - 1 + K) % K]
            for b in range(B):
                if t >= lengths[b]:
                    continue
                slot = slots[b]
                if cnt[slot, K_PENDING] == 1:
                    if cfg[C_VOCAB] > 0:
                        losses[b, t], due, last = _score(cfg, cnt, fst, hflag, hy, hcls, need_bwd,
                                                         b, slot, learn, Z[b], now, empty_target,
                                                         tokens[b, t], dz)
                    else:
                        losses[b, t], due, last = _score(cfg, cnt, fst, hflag, hy, hcls, need_bwd,
                                                         b, slot, learn, Z[b], now,
                                                         inputs[b, t, :O], now, dz)
                    if due != DUE_NONE:
                        _finish(model, weights, pool, batch, out, acc, st, b, now, due, last, dz)
                else:
                    losses[b, t] = np.nan
        elif stage == STAGE_EVICT:
            # Late labels (TBPTT): a step whose loss is still pending is learned before the ring
            # overwrites it, so a label once accepted is never dropped (k1 labels may take
            # longer than the ring holds, e.g. one segment label per many steps).
            if not (rule == TBPTT and delayed):
                continue
            for b in range(B):
                slot = slots[b]
                if (t < lengths[b] and cnt[slot, K_HCOUNT] >= K
                        and hflag[slot, cnt[slot, K_HPOS]] == FLAG_PENDING):
                    need_bwd[b] = True
        else:
            _layer0_inputs(cfg, W, wrow, inputs, tokens, t, x)
            if shared:
                step_forward(W[0], cfg, lay, x, st, st1, cache, Z)
            else:
                for b in range(B):
                    if t < lengths[b]:
                        step_forward(W[wrow[b]], cfg, lay, x[b:b + 1], st[b:b + 1],
                                     st1[b:b + 1], cache[b:b + 1], Z[b:b + 1])
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
            if nxt:  # the steps' losses come with the next input: nothing learned here
                for b in range(B):
                    if t < lengths[b]:
                        cnt[slots[b], K_PENDING] = 1
                continue
            for b in range(B):
                if t < lengths[b] and learn != 2:  # 2: predict only, no targets sent
                    losses[b, t], due, last = _score(cfg, cnt, fst, hflag, hy, hcls, need_bwd, b,
                                                     slots[b], learn, Z[b], now, targets[b, t],
                                                     tclass[b, t], dz)
                    if due != DUE_NONE:
                        _finish(model, weights, pool, batch, out, acc, st, b, now, due, last, dz)
        # tested here, not only inside: a call passes every bundle's arrays (reference counts
        # and all), which cost more than the test at each of the 3 stages of a step
        if need_bwd.any():
            _tbptt_phase(model, weights, pool, batch, out, acc, groups, need_bwd, window_streams)
        if not as_part:
            if shared and contrib.any():
                _flush_shared(model, weights, pool, batch, out, acc)
        elif contrib.any() or gused.any():
            return i + 1, True
    return i1, False


@njit(cache=True, nogil=True)
def run_chunk(model, weights, pool, batch, out):
    """Predict and learn T steps of B streams (see the module docstring): every stage of the
    chunk in one call, per-stream or shared weights."""
    cfg = model[MODEL_CFG]
    W = weights[WEIGHTS_W]
    state, sens = pool[POOL_STATE], pool[POOL_SENS]
    slots, lengths = batch[BATCH_SLOTS], batch[BATCH_LENGTHS]
    B = slots.shape[0]
    S = cfg[C_S]
    O = cfg[C_OUT]
    dt = W.dtype
    st = np.empty((B, S), dtype=dt)
    for b in range(B):
        st[b] = state[slots[b]]
    Mtmp = np.empty(sens.shape[1] if cfg[C_RULE] == RTRL else 0, dtype=dt)
    scratch = (st, np.empty((B, S), dtype=dt), np.empty((B, cfg[C_CACHE]), dtype=dt),
               np.empty((B, O), dtype=dt), np.empty((B, cfg[C_IN]), dtype=dt),
               np.zeros(B, dtype=np.bool_), np.empty((1, O), dtype=dt), Mtmp,
               np.zeros(O, dtype=dt))
    acc = (np.zeros(cfg[C_P], dtype=dt), np.zeros(B, dtype=np.bool_))
    T = lengths.max() if B > 0 else 0
    # run-time ints (not literals): run_stages compiles once, for the service's parts and this
    run_stages(model, weights, pool, batch, out, scratch, acc, _whole_call_groups(W),
               np.int64(WINDOW_STREAMS), np.int64(0), T * STAGES)
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
