"""A SHARED model's chunk split across threads: ``run_chunk``'s time loop, run by each thread on
its own part of the batch up to the next point where the weights may change, and the one update
of that point, taken from the parts' gradients summed in part order.

``run_chunk`` (``chunk.py``) takes up to three stages at every position t: NEXT (NEXT_INPUT: the
pending steps are scored against this input), EVICT (TBPTT with late labels: steps about to
leave the ring are learned) and STEP (the forward, and in EXPLICIT mode the step's loss). Each
stage may end in one summed update, and the next stage must see its weights. Stage i of the
chunk is position i // 3, stage i % 3. ``run_stages`` runs the stages [i0, i1) of one part: the
forward, the losses, the rules' gradients and the TBPTT windows' backward, with the gradients
left in the part's buffers, not applied; the caller (``service/engine/shared_parts.py``) asks
for no more stages than can pass without an update. ``apply_parts`` then sums the parts in part
order and takes ``_flush_shared``'s one update, so the result depends on the parts (the worker
count), never on which thread finished first.

What comes out equals one call's, counters, skips, clipping and gradient norms included, but
for the order of the gradient sum: a stream's own gradient and its finiteness check are as in
one call; a TBPTT window group (the streams whose windows have the same length) is summed per
part and its parts added in order before the group's finiteness check, which one call makes
on the whole group (kernels/README.md, "Shared weights across threads").

Buffers of one part: acc = (gsum [P], contrib [Bp]) as ``chunk._contribute`` takes them;
groups = (gwin [K, P] a window group's sum per window length n (row n - 1), gused [K],
glead [K] the group's first stream (within the part), member [Bp] the n of a stream's group,
0 when none); scratch = (st, st1, cache, Z, x [Bp, *], need_bwd [Bp], dz [1, O], Mtmp,
empty_target [O]): the loop's arrays, kept between calls.
"""
import numpy as np
from numba import njit

from .bundles import BATCH_SLOTS, MODEL_CFG, MODEL_LAY, WEIGHTS_STEPS, WEIGHTS_W
from .chunk import (_all_finite, _due_windows, _finish, _flush_shared, _layer0_inputs, _skip,
                    _window_grad, _windows_learned)
from .codes import (C_DELAY, C_HIST, C_NEXT, C_OUT, C_P, C_RULE, C_VOCAB,
                    FLAG_PENDING, K_HCOUNT, K_HPOS, K_PENDING, K_STEPS,
                    R_STEPS, RTRL, SNAP1, TBPTT)
from .model import predict_row, step_forward
from .rtrl import rtrl_propagate
from .snap import snap_propagate

# the stages of one position, in run_chunk's order
STAGE_NEXT, STAGE_EVICT, STAGE_STEP = range(3)
STAGES = 3


@njit(cache=True)
def _part_phase(model, weights, pool, batch, out, groups, need_bwd, window_streams):
    """``chunk._tbptt_phase`` for shared weights on one part: each window group's gradient goes
    to gwin[n - 1], unchecked (the whole group's sum is checked after the parts are added).
    Windows run in sub-batches of ``window_streams`` streams (one call's ``WINDOW_STREAMS``
    unless the caller asks otherwise)."""
    if not need_bwd.any():
        return
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    gwin, gused, glead, member = groups
    slots = batch[BATCH_SLOTS]
    B = slots.shape[0]
    todo, ends, lens = _due_windows(model, pool, out, slots, need_bwd)
    while todo.any():
        lead = np.argmax(todo)
        n = lens[lead]
        group = np.zeros(B, dtype=np.bool_)
        for b in range(B):
            if todo[b] and lens[b] == n:
                group[b] = True
        members = np.nonzero(group)[0]
        g = gwin[n - 1]
        g[:] = 0.0
        gused[n - 1] = True
        glead[n - 1] = lead
        for lo in range(0, members.shape[0], window_streams):
            _window_grad(cfg, lay, weights, pool, 0, W[0], slots, members[lo:lo + window_streams],
                         ends[members[lo:lo + window_streams]], n, g)
        for i in range(members.shape[0]):
            member[members[i]] = n
            todo[members[i]] = False
    _windows_learned(cfg, pool, slots, need_bwd)


@njit(cache=True, nogil=True)
def run_stages(model, weights, pool, batch, out, scratch, acc, groups, window_streams, i0, i1):
    """Stages [i0, i1) of ``run_chunk``'s loop on one part of a shared model's batch (this
    module's docstring), TBPTT windows in sub-batches of ``window_streams`` streams. Stops after
    the first stage that leaves a gradient in acc or groups. Returns (the stage it stopped
    before, whether it left a gradient)."""
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    state, sens, hx, htok, hs, hy, hcls, hflag, cnt, fst, hc, hz, hs1, hver = pool
    slots, wrow, inputs, tokens, targets, tclass, lengths, learn = batch
    preds, losses, res = out[0], out[1], out[2]
    st, st1, cache, Z, x, need_bwd, dz, Mtmp, empty_target = scratch
    contrib = acc[1]
    gused = groups[1]
    B = slots.shape[0]
    P = cfg[C_P]
    K = cfg[C_HIST]
    rule = cfg[C_RULE]
    now = np.int64(0)  # 'the latest step' for _finish: a run-time 0, one compiled _finish
    nxt = cfg[C_NEXT] == 1
    delayed = cfg[C_DELAY] > 0
    O = cfg[C_OUT]
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
                if cnt[slots[b], K_PENDING] == 1:
                    if cfg[C_VOCAB] > 0:
                        losses[b, t] = _finish(model, weights, pool, batch, out, acc, st, Z[b], b,
                                               now, empty_target, tokens[b, t], need_bwd, dz)
                    else:
                        losses[b, t] = _finish(model, weights, pool, batch, out, acc, st, Z[b], b,
                                               now, inputs[b, t, :O], now, need_bwd, dz)
                else:
                    losses[b, t] = np.nan
            _part_phase(model, weights, pool, batch, out, groups, need_bwd, window_streams)
        elif stage == STAGE_EVICT:
            if not (rule == TBPTT and delayed):
                continue
            for b in range(B):  # chunk._learn_before_eviction
                slot = slots[b]
                if (t < lengths[b] and cnt[slot, K_HCOUNT] >= K
                        and hflag[slot, cnt[slot, K_HPOS]] == FLAG_PENDING):
                    need_bwd[b] = True
            _part_phase(model, weights, pool, batch, out, groups, need_bwd, window_streams)
        else:
            _layer0_inputs(cfg, W, wrow, inputs, tokens, t, x)
            step_forward(W[0], cfg, lay, x, st, st1, cache, Z)
            for b in range(B):
                if t >= lengths[b]:
                    continue
                slot = slots[b]
                theta = W[0]
                pos = cnt[slot, K_HPOS]
                hx[slot, pos] = x[b]
                htok[slot, pos] = tokens[b, t]
                hs[slot, pos] = st[b]
                hflag[slot, pos] = 0
                hz[slot, pos] = Z[b]
                if rule != RTRL:  # chunk.run_chunk: forward results a gradient may reuse
                    hc[slot, pos] = cache[b]
                    hs1[slot, pos] = st1[b]
                    hver[slot, pos] = weights[WEIGHTS_STEPS][0]
                cnt[slot, K_HPOS] = (pos + 1) % K
                cnt[slot, K_HCOUNT] = min(cnt[slot, K_HCOUNT] + 1, K)
                if rule == RTRL:
                    rtrl_propagate(theta, cfg, lay, tokens[b, t], x[b], st[b], st1[b], cache[b],
                                   sens[slot], Mtmp)
                    sens[slot, :] = Mtmp
                elif rule == SNAP1:
                    snap_propagate(theta, cfg, lay, x[b], st[b], st1[b], cache[b], sens[slot])
                    if delayed:
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
                    if t < lengths[b] and learn != 2:
                        losses[b, t] = _finish(model, weights, pool, batch, out, acc, st, Z[b], b,
                                               now, targets[b, t], tclass[b, t], need_bwd, dz)
                _part_phase(model, weights, pool, batch, out, groups, need_bwd, window_streams)
        if contrib.any() or gused.any():
            return i + 1, True
    return i1, False


@njit(cache=True, nogil=True)
def apply_parts(model, weights, pool, batch, out, acc, groups, starts):
    """The one update of a stage from every part's gradients: the streams' own gradients
    summed part by part, then each TBPTT window group (in the order one call takes them: by
    its first stream in the batch) summed over the parts, checked whole (a non-finite group
    is skipped, as one call skips it) and added; then ``chunk._flush_shared``. Clears the
    parts' buffers. acc = (gsum [parts, P], contrib [B]); groups = (gwin [parts, K, P],
    gused [parts, K], glead [parts, K], member [B]); starts [parts + 1]: the parts' rows."""
    gsum, contrib = acc
    gwin, gused, glead, member = groups
    slots = batch[BATCH_SLOTS]
    parts, P = gsum.shape[0], gsum.shape[1]
    K = gwin.shape[1]
    total = np.zeros(P, dtype=gsum.dtype)
    for p in range(parts):
        if contrib[starts[p]:starts[p + 1]].any():
            total += gsum[p]
            gsum[p, :] = 0.0
    first = np.full(K, starts[parts], dtype=np.int64)  # a group's first stream in the batch
    for n in range(K):
        for p in range(parts):
            if gused[p, n]:
                first[n] = starts[p] + glead[p, n]
                break
    for j in np.argsort(first, kind="mergesort"):
        if first[j] == starts[parts]:
            break
        g = np.zeros(P, dtype=gsum.dtype)
        for p in range(parts):
            if gused[p, j]:
                g += gwin[p, j]
                gused[p, j] = False
        finite = _all_finite(g)
        if finite:
            total += g
        for b in range(slots.shape[0]):
            if member[b] == j + 1:
                member[b] = 0
                if finite:
                    contrib[b] = True
                else:
                    _skip(model, pool, out, slots[b], True)
    _flush_shared(model, weights, pool, batch, out, (total, contrib))
