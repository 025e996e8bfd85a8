"""A SHARED model's chunk split across threads (``kernels/shared_steps.py``): every part runs
``run_chunk``'s loop on its own streams up to the next point where the weights may change, the
threads meet there, and the parts' gradients, summed in part order, make the one update. Then
the next stretch. The result depends on the parts (``shards.parts``), never on thread timing.

The meeting points are planned before the chunk runs, from what decides them: with RTRL and
SnAp-1 every learned step updates; TBPTT updates when a stream has k1 pending losses, which its
count of pending losses and the chunk's lengths tell in advance (with late labels, which can
also update before a step leaves the ring, at every stage). Between two meeting points no part
can change the weights, so a part runs that stretch in one kernel call: for TBPTT(k, k) with
k-step chunks, one call per part per chunk.
"""
from __future__ import annotations

import functools

import numpy as np

from rnnstream.kernels import codes as kc
from rnnstream.kernels import shared_steps
from rnnstream.kernels.bundles import (BATCH_LEARN, BATCH_LENGTHS, BATCH_SLOTS, MODEL_CFG,
                                       POOL_CNT, POOL_SENS, POOL_STATE, WEIGHTS_W)
from rnnstream.kernels.chunk import WINDOW_STREAMS
from rnnstream.kernels.shared_steps import STAGE_EVICT, STAGE_NEXT, STAGE_STEP, STAGES

from . import shards

# streams per TBPTT window sub-batch in each part (None: one call's WINDOW_STREAMS). Smaller
# sub-batches, for the cache the parts share, measured slower: 1024 streams, LSTM(128),
# TBPTT(16,16) on 2 workers ran 1.85x one call with 128, 1.64x with 64, 1.69x with 32
WINDOW_STREAMS_PER_PART: int | None = None


def update_stages(cfg, kbatch, cnt, T: int) -> list[int]:
    """The stages (``t * STAGES + stage``) of a T-step chunk that may end in an update of the
    shared weights, in order: a superset of those where one call would update."""
    rule = cfg[kc.C_RULE]
    nxt = cfg[kc.C_NEXT] == 1
    finishing = STAGE_NEXT if nxt else STAGE_STEP  # the stage that scores a step
    evicting = rule == kc.TBPTT and cfg[kc.C_DELAY] > 0  # learns a pending step before it leaves
    stages = {t * STAGES + STAGE_EVICT for t in range(T)} if evicting else set()
    if kbatch[BATCH_LEARN] != 1:  # the steps' losses are not learned (late labels may still be)
        return sorted(stages)
    k1 = int(cfg[kc.C_K1])
    slots = kbatch[BATCH_SLOTS]
    pending = cnt[slots, kc.K_NLOSS][:, None]
    if rule != kc.TBPTT or evicting or (pending >= k1).any():
        # every learned step updates (RTRL, SnAp-1), or an eviction may have reset the count
        return sorted(stages | {t * STAGES + finishing for t in range(T)})
    t = np.arange(T)[None, :]
    active = t < kbatch[BATCH_LENGTHS][:, None]
    if nxt:  # position t scores the step before it: position 0 only if one is pending
        scored = active & ((t > 0) | (cnt[slots, kc.K_PENDING][:, None] == 1))
    else:
        scored = active
    # a stream's losses since its last update, this position's included: due at k1
    due = scored & ((pending + np.cumsum(scored, axis=1)) % k1 == 0)
    return [int(t) * STAGES + finishing for t in np.nonzero(due.any(axis=0))[0]]


def _part_arrays(cfg, weights, pool, kbatch, out, start, stop):
    """One part's batch, outputs and loop arrays (``shared_steps``' scratch)."""
    dt = weights[WEIGHTS_W].dtype
    n = stop - start
    S, O = cfg[kc.C_S], cfg[kc.C_OUT]
    preds, losses, res = out[0], out[1], out[2]
    batch = tuple(a[start:stop] for a in kbatch[:BATCH_LEARN]) + (kbatch[BATCH_LEARN],)
    part_out = (preds[start:stop], losses[start:stop], np.zeros_like(res),
                np.empty(0, dtype=np.float64))  # gnorms: only apply_parts writes them
    sens_width = pool[POOL_SENS].shape[1] if cfg[kc.C_RULE] == kc.RTRL else 0
    scratch = (pool[POOL_STATE][batch[BATCH_SLOTS]],  # a copy: written back at the end
               np.empty((n, S), dt), np.empty((n, cfg[kc.C_CACHE]), dt), np.empty((n, O), dt),
               np.empty((n, cfg[kc.C_IN]), dt), np.zeros(n, dtype=np.bool_),
               np.empty((1, O), dt), np.empty(sens_width, dt), np.zeros(O, dt))
    return batch, part_out, scratch


def run_chunk(model, weights, pool, kbatch, out, runs) -> None:
    """``chunk.run_chunk`` of a SHARED model on the runs [start, stop) of its batch, side by
    side; ``out`` as one call fills it."""
    cfg = model[MODEL_CFG]
    dt = weights[WEIGHTS_W].dtype
    slots = kbatch[BATCH_SLOTS]
    B = slots.shape[0]
    T = int(kbatch[BATCH_LENGTHS].max())
    P, K = int(cfg[kc.C_P]), int(cfg[kc.C_HIST])
    n = len(runs)
    starts = np.array([r[0] for r in runs] + [B], dtype=np.int64)
    acc = (np.zeros((n, P), dt), np.zeros(B, dtype=np.bool_))
    groups = (np.empty((n, K, P), dt), np.zeros((n, K), dtype=np.bool_),
              np.zeros((n, K), dtype=np.int64), np.zeros(B, dtype=np.int64))
    parts = []
    for p, (start, stop) in enumerate(runs):
        batch, part_out, scratch = _part_arrays(cfg, weights, pool, kbatch, out, start, stop)
        part_acc = (acc[0][p], acc[1][start:stop])
        part_groups = (groups[0][p], groups[1][p], groups[2][p], groups[3][start:stop])
        parts.append((batch, part_out, scratch, part_acc, part_groups))
    window = WINDOW_STREAMS_PER_PART or WINDOW_STREAMS
    i0 = 0
    for i1 in [s + 1 for s in update_stages(cfg, kbatch, pool[POOL_CNT], T)] + [T * STAGES]:
        if i1 == i0:  # the chunk's last stage was an update stage
            continue
        ran = shards.run([functools.partial(shared_steps.run_stages, model, weights, pool, *part,
                                            window, i0, i1) for part in parts])
        if any(stop != i1 for stop, _ in ran):  # the plan missed an update: a bug, say so
            raise RuntimeError(f"a part of a shared batch updated before stage {i1} "
                               f"(stopped at {[stop for stop, _ in ran]})")
        if any(learned for _, learned in ran):
            shared_steps.apply_parts(model, weights, pool, kbatch, out, acc, groups, starts)
        i0 = i1
    state, res = pool[POOL_STATE], out[2]
    for (start, stop), (batch, part_out, scratch, _, _) in zip(runs, parts):
        state[batch[BATCH_SLOTS]] = scratch[0]
        res += part_out[2]
