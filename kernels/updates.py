"""Where a stream's gradient goes: checked for finiteness, then summed into the shared weights'
one update per stage or applied at once to the stream's own weights, with the counters that
record updates and skips (kernels/README.md, "Optimizers, clipping, skipping").

acc = (gsum [P], contrib [B]): the shared gradient summed so far, and which streams are in it.
"""
from numba import njit

from .bundles import (BATCH_SLOTS, BATCH_WROW, MODEL_CFG, MODEL_HYP, OUT_GNORMS, OUT_RES,
                      POOL_CNT, POOL_FST, POOL_SENS)
from .codes import (C_RULE, C_SHARED, F_GNORM, K_SKIPPED, K_UPDATES, R_CLIPPED, R_SKIP_GRAD,
                    R_SKIP_LOSS, R_UPDATES, TBPTT)
from .optim import apply_update


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
def _contribute_group(model, pool, batch, out, acc, members, g):
    """Shared weights: the summed gradient g of the streams ``members`` (a TBPTT window group)
    joins the stage's sum, or, not finite, is skipped for every one of them."""
    slots = batch[BATCH_SLOTS]
    if _all_finite(g):
        gsum, contrib = acc
        gsum += g
        for i in range(members.shape[0]):
            contrib[members[i]] = True
    else:
        for i in range(members.shape[0]):
            _skip(model, pool, out, slots[members[i]], True)


@njit(cache=True)
def _flush_shared(model, weights, pool, batch, out, acc):
    """Shared weights: the stage's one update from the summed gradient, if any stream gave one."""
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
