"""Truncated back-propagation through time over a window of stored steps (NNDL 6.4.1,
eq. 6.29-6.39, truncated to the window).

The window holds, per step and stream, the layer-0 input, the token, the state before the
step, the target and whether the step's loss counts, plus what the step's forward produced
(cache, logits, new state). A step whose forward ran with the current weights reuses those;
an older one (k2 > k1: run before the last update) is recomputed from its stored input and
previous state with the current weights. Then the gradient flows back from the newest step
to the oldest. The weight matrices' gradients, sums over the window of outer products, are
taken at the end as one matrix product per matrix over all n * nb stream-steps (the factors
are kept per step), not as n small ones.

The chunk loop's side (``kernels/chunk.py``): which streams' windows are due, each window
gathered from the stream's history ring, one batched pass per group of streams that share the
weights and the window length, and where the group's gradient goes (``kernels/updates.py``).
"""
import numpy as np
from numba import njit

from .bundles import (BATCH_SLOTS, BATCH_WROW, MODEL_CFG, MODEL_LAY, POOL_CNT, POOL_HFLAG,
                      WEIGHTS_STEPS, WEIGHTS_W)
from .cells import D_NFIELDS, deferred_sizes, flush_outer
from .codes import (C_CACHE, C_DELAY, C_HIST, C_NL, C_OUT, C_P, C_S, C_SHARED, C_VARIANT,
                    C_VOCAB, FLAG_DONE, FLAG_NONE, FLAG_PENDING, K_HCOUNT, K_HPOS, K_NLOSS,
                    K_NONFINITE)
from .model import add_embedding_grad, embed_rows, loss_grad, step_backward, step_forward
from .updates import _contribute, _contribute_group, _skip

# Streams per batched TBPTT backward pass: a [k2, 128, cache] window stays a few MiB.
WINDOW_STREAMS = 128


@njit(inline="always")  # numba re-optimises a callee in every caller: no compile level of its own
def tbptt_window_grad(theta, cfg, lay, window, forward, grad):
    """Add to grad the gradient of the counted losses of the window, back-propagated through
    all its n steps. window = (x, tokens, state before, target, class, counts) and
    forward = (cache, logits, state after, fresh [n]) are [n, nb, ...] arrays, oldest first."""
    wx, wtok, ws, wy, wcls, wflag = window
    wc, wz, ws1, fresh = forward
    n = wx.shape[0]
    nb = wx.shape[1]
    S = cfg[C_S]
    O = cfg[C_OUT]
    dS = np.zeros((nb, S), dtype=theta.dtype)
    dS0 = np.zeros((nb, S), dtype=theta.dtype)
    dHs = np.empty((nb, S), dtype=theta.dtype)
    S1 = np.empty((nb, S), dtype=theta.dtype)
    cache = np.empty((nb, cfg[C_CACHE]), dtype=theta.dtype)
    Z = np.empty((nb, O), dtype=theta.dtype)
    dZ = np.empty((nb, O), dtype=theta.dtype)
    dx = np.empty((nb, wx.shape[2]), dtype=theta.dtype)
    NL = cfg[C_NL]
    dofs = np.zeros((NL, D_NFIELDS), dtype=np.int64)
    total = 0
    for k in range(NL):
        sizes = deferred_sizes(lay[k], cfg[C_VARIANT], n * nb)
        for f in range(D_NFIELDS):
            dofs[k, f] = total
            total += sizes[f]
    dbuf = np.empty(total, dtype=theta.dtype)
    for tau in range(n - 1, -1, -1):
        if fresh[tau]:
            S1[:, :] = ws1[tau]
            cache[:, :] = wc[tau]
            Z[:, :] = wz[tau]
        else:
            if cfg[C_VOCAB] > 0:  # the current embedding rows, not the ones of back then
                embed_rows(theta, cfg, wtok[tau], wx[tau])
            step_forward(theta, cfg, lay, wx[tau], ws[tau], S1, cache, Z)
        dZ[:, :] = 0.0
        for b in range(nb):
            if wflag[tau, b] == FLAG_PENDING:
                loss_grad(cfg, Z[b], wy[tau, b], wcls[tau, b], dZ[b])
        step_backward(theta, cfg, lay, wx[tau], ws[tau], S1, cache, dZ, dS, grad, dx, dS0,
                      dHs, np.int64(1), dbuf, dofs, tau * nb)
        add_embedding_grad(cfg, wtok[tau], dx, grad)
        dS[:, :] = dS0
    for k in range(NL):
        flush_outer(grad, lay[k], cfg[C_VARIANT], dbuf, dofs[k], n * nb, nb)


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
def _whole_call_groups(W):
    """``_tbptt_phase``'s groups for a whole call, which hands each group's gradient on at once."""
    return (np.empty((0, 0), dtype=W.dtype), np.zeros(0, dtype=np.bool_),
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


@njit(cache=True)
def _tbptt_phase(model, weights, pool, batch, out, acc, groups, need_bwd, window_streams):
    """Run the due TBPTT backward passes: one batched pass per group of streams that share
    the weights and the window length, one pass per stream otherwise, in sub-batches of
    ``window_streams`` streams. A whole call (groups empty, ``_whole_call_groups``) hands each
    group's gradient to acc (``updates``). One part of a shared batch
    (``kernels/shared_steps.py``) leaves it in groups = (gwin [K, P], gused [K], glead [K],
    member [Bp]) at row n - 1 for window length n, unchecked: the group's sum over the parts is
    checked whole."""
    if not need_bwd.any():
        return
    cfg, lay = model[MODEL_CFG], model[MODEL_LAY]
    W = weights[WEIGHTS_W]
    slots, wrow = batch[BATCH_SLOTS], batch[BATCH_WROW]
    gwin, gused, glead, member = groups
    as_part = gused.shape[0] > 0
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
        row = wrow[lead]
        if as_part:
            g = gwin[n - 1]
            g[:] = 0.0
            gused[n - 1] = True
            glead[n - 1] = lead
        else:
            g = np.zeros(P, dtype=W.dtype)
        # Sub-batches keep the window's arrays small enough to stay in cache and in the
        # heap (kernels/README.md: the shared gradient is summed per sub-batch, then added).
        for lo in range(0, nb, window_streams):
            _window_grad(cfg, lay, weights, pool, row, W[row], slots,
                         members[lo:lo + window_streams], ends[members[lo:lo + window_streams]],
                         n, g)
        if as_part:
            for i in range(nb):
                member[members[i]] = n
        elif cfg[C_SHARED] == 1:
            _contribute_group(model, pool, batch, out, acc, members, g)
        else:
            _contribute(model, weights, pool, batch, out, acc, lead, g)
        for i in range(nb):
            todo[members[i]] = False
    _windows_learned(cfg, pool, slots, need_bwd)
