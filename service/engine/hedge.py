"""Hedge, the exponentially weighted average forecaster, over K members' predictions per stream.

Cesa-Bianchi & Lugosi, *Prediction, Learning, and Games* (2006), sec. 2.1 and 3.3; Freund &
Schapire (1997). Member k's weight before step t is

    w_k = exp(-eta * L_k) / sum_j exp(-eta * L_j),   L_k <- DISCOUNT * L_k + l_k(t) after step t,

with l_k(t) member k's loss at step t (prequential: step t is combined with weights from the
steps before it). Regression combines the members' predictions by their weighted mean, and
classification mixes their class probabilities. When a loss is eta-exp-concave in the
prediction, the mix's total loss is at most the best member's plus ln(K) / eta (Prop. 3.1):
log loss of a probability mix is 1-exp-concave, so eta = 1 for classes; squared error in
standard deviations of the target is eta-exp-concave for errors up to 1/sqrt(2 eta), so eta =
1/8 covers errors up to 2 standard deviations. Regression losses are therefore divided by the
stream's running target variance (Welford), which makes one default fit every scale.
The discount (an effective window of 1000 scored steps) lets the weights follow a member that
starts slowly and overtakes later; a member's per-step loss is capped (a non-finite one counts
as the cap), so one bad step never silences it for good.
"""
from __future__ import annotations

import numpy as np

DISCOUNT = 0.999
LOSS_CAP = 16.0
DEFAULT_RATE_CLASSES = 1.0
DEFAULT_RATE_REGRESSION = 0.125
RUNNING_DECAY = 0.99  # the stream's running loss, as the kernels keep it
_TINY = float(np.finfo(np.float32).tiny)


def default_rate(classify: bool) -> float:
    return DEFAULT_RATE_CLASSES if classify else DEFAULT_RATE_REGRESSION


def state_shapes(K: int, O: int) -> dict:
    """One stream's Hedge state; all float64."""
    return {"loss": (K,),               # discounted cumulative (scaled, capped) loss per member
            "target_count": (),         # Welford over the regression targets seen
            "target_mean": (O,),
            "target_m2": (O,),
            "last_prediction": (O,),    # NEXT_INPUT: the combined prediction awaiting its target
            "has_last": (),
            "running": (2,)}            # running loss of the combined prediction, and "has one"


def fresh_state(K: int, O: int) -> dict:
    return {name: np.zeros(shape) for name, shape in state_shapes(K, O).items()}


def weights(loss: np.ndarray, eta: float) -> np.ndarray:
    """Normalised exp(-eta L) over the last axis, shifted by the minimum so nothing overflows."""
    z = np.exp(-eta * (loss - loss.min(axis=-1, keepdims=True)))
    return z / z.sum(axis=-1, keepdims=True)


def combine_chunk(state: dict, member_preds, member_losses, batch: dict, *, classify: bool,
                  next_input: bool, eta: float):
    """Combine T steps of B streams; ``state`` holds [B, ...] arrays and is updated in place.

    member_preds [K, B, T, O] and member_losses [K, B, T] as the members returned them (NaN
    where a step has no loss); ``batch`` is the engine's validated batch (targets, classes,
    inputs or tokens, lengths). Returns predictions [B, T, O] and losses [B, T] (NaN past a
    row's length and where no target is known).
    """
    K, B, T, O = member_preds.shape
    preds = np.full((B, T, O), np.nan)
    losses = np.full((B, T), np.nan)
    lengths = batch["lengths"]
    for t in range(T):
        active = t < lengths
        if next_input:
            _absorb(state, member_losses[:, :, t], active, batch, t, None, losses,
                    classify, next_input)
        w = weights(state["loss"], eta).T  # [K, B]
        p = member_preds[:, :, t].astype(np.float64)
        ok = np.isfinite(p).all(axis=2)
        w = np.where(ok, w, 0.0)
        total = w.sum(axis=0)
        mix = np.einsum("kb,kbo->bo", w, np.where(ok[:, :, None], p, 0.0))
        mix = np.where((total > 0)[:, None], mix / np.where(total > 0, total, 1.0)[:, None], np.nan)
        preds[active, t] = mix[active]
        if next_input:
            state["last_prediction"][active] = mix[active]
            state["has_last"][active] = 1.0
        else:
            _absorb(state, member_losses[:, :, t], active, batch, t, mix, losses,
                    classify, next_input)
    return preds, losses


def _absorb(state, member_loss, active, batch, t, mix, losses, classify, next_input):
    """Step t's losses are known: score the combined prediction, then move the members' L."""
    scored = active & np.isfinite(member_loss).any(axis=0)
    if not scored.any():
        return
    rows = np.flatnonzero(scored)
    if next_input:
        has = state["has_last"][rows] > 0
        prediction = np.where(has[:, None], state["last_prediction"][rows], np.nan)
    else:
        prediction = mix[rows]
    if classify:
        target = (batch["tokens"] if next_input else batch["tclass"])[rows, t]
        p = prediction[np.arange(rows.size), target]
        combined = -np.log(np.maximum(p, _TINY))
        scale = np.ones(rows.size)
        update = np.ones(rows.size, dtype=bool)
    else:
        y = (batch["inputs"] if next_input else batch["targets"])[rows, t].astype(np.float64)
        combined = np.mean((prediction - y) ** 2, axis=1)
        scale, update = _welford(state, rows, y)
    losses[rows, t] = combined
    run = state["running"][rows]
    seen = np.isfinite(combined)
    first = seen & (run[:, 1] == 0)
    run[:, 0] = np.where(first, combined, np.where(
        seen, RUNNING_DECAY * run[:, 0] + (1 - RUNNING_DECAY) * combined, run[:, 0]))
    run[:, 1] = np.where(seen, 1.0, run[:, 1])
    state["running"][rows] = run
    h = member_loss[:, rows].astype(np.float64) / scale
    h = np.where(np.isfinite(h), np.minimum(h, LOSS_CAP), LOSS_CAP)  # [K, n]
    L = state["loss"][rows]
    state["loss"][rows] = np.where(update[:, None], DISCOUNT * L + h.T, L)


def _welford(state, rows, y):
    """Add targets y [n, O]; return the loss scale (mean target variance) and whether it is
    known yet (two targets at least, not all equal)."""
    n = state["target_count"][rows] + 1.0
    mean = state["target_mean"][rows]
    delta = y - mean
    mean = mean + delta / n[:, None]
    m2 = state["target_m2"][rows] + delta * (y - mean)
    state["target_count"][rows] = n
    state["target_mean"][rows] = mean
    state["target_m2"][rows] = m2
    var = (m2 / np.maximum(n - 1.0, 1.0)[:, None]).mean(axis=1)
    update = (n >= 2) & (var > 0)
    return np.where(update, var, 1.0), update

