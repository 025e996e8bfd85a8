"""Hedge, the exponentially weighted average forecaster, over K members' predictions per stream.

Cesa-Bianchi & Lugosi, *Prediction, Learning, and Games* (2006), sec. 2.1 and 3.3; Freund &
Schapire (1997). Member k's weight before step t is

    w_k = exp(-eta * L_k) / sum_j exp(-eta * L_j),   L_k <- DISCOUNT * L_k + l_k(t) after step t,

with l_k(t) member k's loss at step t (prequential: step t is combined with weights from the
steps before it). Regression combines the members' predictions by their weighted mean, and
classification mixes their class probabilities. When a loss is eta-exp-concave in the
prediction, the mix's total loss is at most the best member's plus ln(K) / eta (Prop. 3.1):
log loss of a probability mix is 1-exp-concave, so eta = 1 for classes.

Regression weighs members by their absolute error (for several outputs, the root of the
step's mean squared error over them), in standard deviations of the target: the errors are
divided by the stream's running target standard deviation (Welford), which makes one default
fit every scale. The absolute error is what the benchmark scores (MAE), and the loss a median
minimises: a member that predicts the median (service/engine/median.py) wins where the target
is skewed (mostly-zero counts), where squared error keeps the weight on the members that
predict the mean (bench/results/quality_defaults.md: held-out SolarFlare 0.414 -> 0.355 MAE
with the median member and absolute error, 0.414 with it and squared error). It is convex, not
exp-concave: the weighted mean then stays within ln(K) / eta + eta T B^2 / 8 of the best
member over T steps (Theorem 2.2, losses in [0, B]). The regression default, eta = 1.0, was
measured on bench/quality.py's regression streams and the held-out ones (offline replays of
the members' recorded predictions, networks' seeds 0-2): against 0.7 it moved AirlinePassengers
(131 steps, where the mix lags its best member most) by -0.5% and no other stream by more than
0.3%; 1.4 gained airline another 0.5% for up to +0.2% elsewhere; 0.35 cost WaterFlow 2.4%.
(Before: 0.7; before that, the loss was the squared error in variances at eta 0.35.)
The discount (an effective window of 1000 scored steps) lets the weights follow a member that
starts slowly and overtakes later; a member's per-step loss is capped (a non-finite one counts
as the cap: 4 standard deviations for regression), so one bad step never silences it for good.
A member whose prediction is NaN but whose loss is a number is scored and left out of the mix
(the median member until its estimate stands on five targets).
"""
from __future__ import annotations

import numpy as np

DISCOUNT = 0.999
LOSS_CAP = 16.0  # classes: nats; regression: variances (4 standard deviations)
DEFAULT_RATE_CLASSES = 1.0
DEFAULT_RATE_REGRESSION = 1.0
RUNNING_DECAY = 0.99  # the stream's running loss, as the kernels keep it
VAR_FLOOR = 1e-10  # a target variance below this share of the mean square is rounding noise
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

    Whole chunks at once, no loop over steps: the loss scale and L are linear recurrences,
    summed in closed form. In EXPLICIT mode step t is combined with L after step t - 1; in
    NEXT_INPUT mode step t's losses score step t - 1, so step t is combined after them.
    """
    K, B, T, O = member_preds.shape
    active = np.arange(T)[None, :] < batch["lengths"][:, None]           # [B, T]
    loss = np.moveaxis(member_losses, 0, -1).astype(np.float64)         # [B, T, K]
    scored = active & np.isfinite(loss).any(axis=2)
    if classify:
        target = (batch["tokens"] if next_input else batch["tclass"])
        scale, update = np.ones((B, T)), scored
    else:
        target = (batch["inputs"] if next_input else batch["targets"]).astype(np.float64)
        scale, update = _target_scale(state, target, scored)
    h = loss / scale[:, :, None]
    h = np.where(np.isfinite(h), np.minimum(h, LOSS_CAP), LOSS_CAP)
    if not classify:  # squared errors in variances -> absolute errors in standard deviations
        h = np.sqrt(h)
    L_after = _discounted_sums(state["loss"], np.where(update[:, :, None], h, 0.0), update)
    if next_input:
        L_used = L_after
    else:
        L_used = np.concatenate([state["loss"][:, None], L_after[:, :-1]], axis=1)
    state["loss"][:] = L_after[:, -1]
    p = np.moveaxis(member_preds, 0, 2).astype(np.float64)              # [B, T, K, O]
    ok = np.isfinite(p).all(axis=3)
    w = np.where(ok, weights(L_used, eta), 0.0)
    total = w.sum(axis=2)
    mix = np.einsum("btk,btko->bto", w, np.where(ok[..., None], p, 0.0))
    mix = np.where((active & (total > 0))[..., None], mix / np.where(total > 0, total, 1.0)[..., None],
                   np.nan)
    if next_input:
        last = np.where(state["has_last"][:, None] > 0, state["last_prediction"], np.nan)
        scored_prediction = np.concatenate([last[:, None], mix[:, :-1]], axis=1)
        rows = np.arange(B)
        state["last_prediction"][:] = mix[rows, batch["lengths"] - 1]
        state["has_last"][:] = 1.0
    else:
        scored_prediction = mix
    if classify:
        chosen = np.take_along_axis(scored_prediction, target[:, :, None].astype(np.int64), 2)[..., 0]
        combined = -np.log(np.maximum(chosen, _TINY))
    else:
        combined = np.mean((scored_prediction - target) ** 2, axis=2)
    losses = np.where(scored, combined, np.nan)
    _running(state["running"], losses)
    return mix, losses


def _target_scale(state, y, scored):
    """The mean target variance after each step and whether it is known yet (two targets at
    least, not all the same up to rounding). Welford's statistics carried in the state, a
    chunk added in closed form: with d = y - mean0 over the scored steps, S1 = sum d and
    S2 = sum d^2, n = n0 + m gives mean = mean0 + S1 / n and M2 = M2_0 + S2 - S1^2 / n
    (Chan, Golub & LeVeque's pairwise update, simplified)."""
    n0, mean0, m20 = state["target_count"], state["target_mean"], state["target_m2"]
    d = (y - mean0[:, None]) * scored[..., None]
    s1, s2 = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    n = (n0[:, None] + np.cumsum(scored, axis=1))[..., None]
    inv_n = 1.0 / np.maximum(n, 1.0)
    m2 = m20[:, None] + s2 - s1 * s1 * inv_n
    mean = mean0[:, None] + s1 * inv_n
    state["target_count"][:] = n[:, -1, 0]
    state["target_mean"][:] = mean[:, -1]
    state["target_m2"][:] = m2[:, -1]
    var = (m2 / np.maximum(n - 1.0, 1.0)).mean(axis=2)
    update = scored & (n[..., 0] >= 2) & (var > 0) & (var > VAR_FLOOR * (mean * mean).mean(axis=2))
    return np.where(update, var, 1.0), update


def _discounted_sums(L0, h, update, block=256):
    """L after each step of L <- DISCOUNT * L + h on the steps that update, from L0 [B, K]:
    L_t = DISCOUNT^c_t (L0 + sum_{s<=t} DISCOUNT^-c_s h_s), c_t the updates so far; in
    blocks, so DISCOUNT^-c stays near 1."""
    out = np.empty_like(h)
    start = L0
    for t0 in range(0, h.shape[1], block):
        c = np.cumsum(update[:, t0:t0 + block], axis=1)[..., None]
        out[:, t0:t0 + block] = DISCOUNT ** c * (
            start[:, None] + np.cumsum(h[:, t0:t0 + block] * DISCOUNT ** -c, axis=1))
        start = out[:, min(t0 + block, h.shape[1]) - 1]
    return out


def _running(running, losses):
    """The kernels' running loss (r <- 0.99 r + 0.01 x over finite x; the first x sets r)."""
    fin = np.isfinite(losses)
    x = np.where(fin, losses, 0.0)
    e = np.cumsum(fin, axis=1)
    E = e[:, -1]
    first = x[np.arange(x.shape[0]), np.argmax(fin, axis=1)]
    r0 = np.where(running[:, 1] > 0, running[:, 0], first)
    decay = RUNNING_DECAY ** (E[:, None] - e)
    r = RUNNING_DECAY ** E * r0 + (1 - RUNNING_DECAY) * np.sum(np.where(fin, decay * x, 0.0), axis=1)
    running[:, 0] = np.where(E > 0, r, running[:, 0])
    running[:, 1] = np.where(E > 0, 1.0, running[:, 1])


class HedgeStates:
    """Every stream's Hedge state, one row per stream in growable arrays, so a batch gathers
    and scatters with one index per field (no loop over streams)."""

    def __init__(self, K: int, O: int, capacity: int = 4):
        self.shapes = state_shapes(K, O)
        self.rows: dict = {}
        self._free: list = []
        self.arrays = {name: np.zeros((0,) + shape) for name, shape in self.shapes.items()}
        self._grow(capacity)

    def _grow(self, capacity: int):
        old = len(self.arrays["loss"])
        for name, a in self.arrays.items():
            new = np.zeros((capacity,) + a.shape[1:])
            new[:old] = a
            self.arrays[name] = new
        self._free.extend(range(capacity - 1, old - 1, -1))

    def row(self, sid, create: bool = False):
        row = self.rows.get(sid)
        if row is None and create:
            if not self._free:
                self._grow(2 * len(self.arrays["loss"]))
            row = self.rows[sid] = self._free.pop()
            self.clear(sid)
        return row

    def gather(self, sids):
        rows = np.fromiter((self.row(s, create=True) for s in sids), dtype=np.int64, count=len(sids))
        return rows, {name: a[rows] for name, a in self.arrays.items()}

    def scatter(self, rows, stacked: dict):
        for name, a in self.arrays.items():
            a[rows] = stacked[name]

    def get(self, sid) -> dict:
        row = self.rows[sid]
        return {name: np.array(a[row]) for name, a in self.arrays.items()}

    def set(self, sid, d: dict):
        row = self.row(sid, create=True)
        for name, a in self.arrays.items():
            a[row] = d[name]

    def clear(self, sid):
        for a in self.arrays.values():
            a[self.rows[sid]] = 0.0

    def drop(self, sid):
        self._free.append(self.rows.pop(sid))
