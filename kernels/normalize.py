"""Online standardisation of a chunk's rows, and the way back to the caller's units.

Statistics are float64 rows ``[n, mean[D], m2[D]]``: a weighted Welford recursion (West 1979)
with optional exponential forgetting ``decay`` in (0, 1] (1: plain Welford):

    n' = decay n + 1,  delta = x - mean,  mean' = mean + delta / n',
    m2' = decay m2 + delta (x - mean'),    var = m2 / n.

Prequential, position by position like the chunk loop: at position t every stream's row is
standardised with the statistics as they were before position t, then the statistics take
the rows of position t (in the batch's order; with shared statistics all streams of the batch
feed one row). z = (x - mean) / sqrt(var); while the variance is not yet known (fewer than two
rows) or is below a floor (a constant feature), the scale is 0 and z = 0, so the model's
output maps back to the running mean. A row with |z| >= Z_ERROR is not absorbed (below).
"""
import numpy as np
from numba import njit

# a variance at most this fraction of mean^2 is rounding noise of a constant feature
VAR_FLOOR_REL = 1e-20
# a value this many standard deviations away is an error value (a sensor's 1e30), not data:
# its square overflows float32, so its step's loss is not finite and the kernel skips it; the
# statistics skip its row too (else one such value would set the scale for good), and the
# kernel sees it clipped to this, finite
Z_ERROR = 1e20


@njit(cache=True)
def _scale(n, mean, m2):
    if n <= 0.0:
        return 0.0
    var = m2 / n
    if var <= 0.0 or var <= VAR_FLOOR_REL * mean * mean:
        return 0.0
    return np.sqrt(var)


@njit(cache=True)
def standardize(stats, sets, x, lengths, decay, absorb, z, mu, sc, mu_next, sc_next):
    """z[b, t] = (x[b, t] - mean) / scale with stream b's statistics ``stats[sets[b]]`` before
    position t; mu/sc [B, T, D] receive those (mean, scale), mu_next/sc_next the ones after
    position t. absorb = False: the statistics stay as they are (z is then still written)."""
    B = x.shape[0]
    D = x.shape[2]
    T = x.shape[1]
    error = np.zeros(B, dtype=np.bool_)
    for t in range(T):
        for b in range(B):
            if t >= lengths[b]:
                continue
            row = stats[sets[b]]
            n = row[0]
            error[b] = False
            for d in range(D):
                m = row[1 + d]
                s = _scale(n, m, row[1 + D + d])
                mu[b, t, d] = m
                sc[b, t, d] = s
                v = (x[b, t, d] - m) / s if s > 0.0 else 0.0
                if abs(v) >= Z_ERROR:
                    error[b] = True
                    v = Z_ERROR if v > 0 else -Z_ERROR
                z[b, t, d] = v
        if absorb:
            for b in range(B):
                if t >= lengths[b] or error[b]:
                    continue
                row = stats[sets[b]]
                n1 = decay * row[0] + 1.0
                row[0] = n1
                for d in range(D):
                    v = np.float64(x[b, t, d])
                    delta = v - row[1 + d]
                    row[1 + d] += delta / n1
                    row[1 + D + d] = decay * row[1 + D + d] + delta * (v - row[1 + d])
        for b in range(B):
            if t >= lengths[b]:
                continue
            row = stats[sets[b]]
            for d in range(D):
                mu_next[b, t, d] = row[1 + d]
                sc_next[b, t, d] = _scale(row[0], row[1 + d], row[1 + D + d])


@njit(cache=True)
def to_caller_units(preds, losses, lengths, mu, sc, targets, nxt, inputs, slots, pending, run,
                    scored):
    """Predictions back to the caller's units (preds = mu + sc * preds, in place) and each
    scored loss recomputed from them: the mean over outputs of the squared error against the
    caller's target (NEXT_INPUT: against the next input; the first step of a chunk against
    ``pending[slots[b]]``, the stream's last prediction, which is then replaced). A loss the
    kernel left NaN (nothing to score) stays NaN. scored: the stream's running loss
    ``run[slots[b]] = (value, has)`` (decay 0.99, kernels/README.md) takes the chunk's finite
    losses."""
    B = preds.shape[0]
    O = preds.shape[2]
    prev = np.empty(O, dtype=np.float64)
    for b in range(B):
        slot = slots[b]
        for o in range(O):
            prev[o] = pending[slot, o]
        for t in range(lengths[b]):
            if nxt and not np.isnan(losses[b, t]):
                acc = 0.0
                for o in range(O):
                    d = prev[o] - inputs[b, t, o]
                    acc += d * d
                losses[b, t] = acc / O
            acc = 0.0
            for o in range(O):
                p = mu[b, t, o] + sc[b, t, o] * np.float64(preds[b, t, o])
                preds[b, t, o] = p
                prev[o] = p
                if not nxt:
                    d = p - targets[b, t, o]
                    acc += d * d
            if not nxt and not np.isnan(losses[b, t]):
                losses[b, t] = acc / O
            loss = np.float64(losses[b, t])
            if scored and np.isfinite(loss):
                if run[slot, 1] == 0.0:
                    run[slot, 0] = loss
                    run[slot, 1] = 1.0
                else:
                    run[slot, 0] = 0.99 * run[slot, 0] + 0.01 * loss
        for o in range(O):
            pending[slot, o] = prev[o]
