"""The running-median member ``{"baseline": "running_median"}``: each output's median of the
stream's targets so far, estimated in constant memory with the P^2 algorithm (Jain & Chlamtac
1985).

The median is the constant that minimises absolute error, as the mean minimises squared error.
Where no learner beats a constant (a near random walk of changes, such as a stock index's
daily moves) it is as good as the running mean; where the target is skewed (counts that are
mostly zero) it is much better, and Hedge, which weighs regression members by their absolute
error (service/engine/hedge.py), moves its weight there (held-out SolarFlare: MAE 0.414 ->
0.355, SP500 0.581 -> 0.562; bench/results/quality_defaults.md). On series with a level or a
trend Hedge leaves it at a small weight.

P^2 keeps five markers per output: heights q_0..q_4 (the minimum, the p/2, p and (1+p)/2
quantiles and the maximum, p = 1/2), their positions n_i among the targets seen (0-based) and
the positions they should have, n'_i. A target x moves the extremes if it lies outside them,
increments the positions of the markers above it, moves every n'_i by (0, p/2, p, (1+p)/2, 1),
and a middle marker that is a whole position or more away from where it should be (with room
to move) steps one position that way, its height adjusted by the piecewise-parabolic formula,
or linearly where the parabola leaves the neighbours' heights. The first five targets seed the
markers, sorted.

The estimate stands from the fifth target on (the middle marker); before that the member
abstains: its prediction is NaN, so Hedge leaves it out of the mix, while its loss is that of
the exact median of the targets it has (the first network member's before any), so it is
scored as it would have done. A stream of a few steps (ChickWeights' chicks, twelve each) would
otherwise mix in a median of one or two targets: abstaining kept ChickWeights where it was,
mixing from the first target cost it 1.5%.

No weights; per stream the markers' heights (NaN until seeded), positions and desired
positions, the target count, the running loss and the step count: all in the stream snapshot.
Forecasts hold the median flat (NaN while it abstains, so the ensemble's forecast leaves it
out as its step does).
"""
from __future__ import annotations

import math

import numpy as np

from .baseline import LastTarget, float64_bytes

QUANTILE = 0.5
MARKERS = 5  # P^2's markers; also the targets the estimate needs before it stands
_STEP = (0.0, QUANTILE / 2, QUANTILE, (1 + QUANTILE) / 2, 1.0)  # n'_i moves per target


def state_shapes(O: int) -> dict:
    """One stream's state; all float64."""
    return {"heights": (MARKERS, O),    # q_i per output; the sorted first targets, NaN unseen
            "positions": (MARKERS, O),  # n_i, 0-based
            "desired": (MARKERS, O),    # n'_i
            "count": (),                # targets seen
            "running": (2,), "steps": ()}


def fresh_state(O: int) -> dict:
    s = {name: np.zeros(shape) for name, shape in state_shapes(O).items()}
    s["heights"][:] = np.nan
    s["positions"][:] = s["desired"][:] = np.arange(MARKERS, dtype=np.float64)[:, None]
    return s


def estimate(q: list, count: int) -> float:
    """The median of one output: the middle marker once seeded, the exact median of the
    first targets before (NaN with none)."""
    if count >= MARKERS:
        return q[2]
    if count == 0:
        return math.nan
    half = count // 2
    return q[half] if count % 2 else 0.5 * (q[half - 1] + q[half])


def observe(q: list, n: list, want: list, count: int, x: float):
    """P^2's update of one output's markers (lists, in place) with target ``x``, the
    ``count``-th (0-based) of the stream."""
    if count < MARKERS:
        q[count] = x
        q[:count + 1] = sorted(q[:count + 1])
        return
    if x < q[0]:
        q[0], k = x, 0
    elif x >= q[4]:
        q[4], k = x, 3
    else:
        k = 0
        while not q[k] <= x < q[k + 1]:
            k += 1
    for i in range(k + 1, MARKERS):
        n[i] += 1.0
    for i in range(MARKERS):
        want[i] += _STEP[i]
    for i in (1, 2, 3):
        d = want[i] - n[i]
        if (d >= 1.0 and n[i + 1] - n[i] > 1.0) or (d <= -1.0 and n[i - 1] - n[i] < -1.0):
            s = 1.0 if d > 0 else -1.0
            parabolic = q[i] + s / (n[i + 1] - n[i - 1]) * (
                (n[i] - n[i - 1] + s) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                + (n[i + 1] - n[i] - s) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]))
            if q[i - 1] < parabolic < q[i + 1]:
                q[i] = parabolic
            else:
                j = i + int(s)
                q[i] = q[i] + s * (q[j] - q[i]) / (n[j] - n[i])
            n[i] += s


def run_stream(state: dict, y: np.ndarray, has_targets: bool):
    """The estimate before each of T steps [T, O] (NaN before the first target) and whether it
    stands (its count of targets is MARKERS or more) [T]; observes y [T, O] when
    ``has_targets``. Updates ``state`` in place; plain floats, one step after the other (each
    step's update depends on the markers the one before left)."""
    T, O = y.shape
    q = state["heights"].T.tolist()
    n = state["positions"].T.tolist()
    want = state["desired"].T.tolist()
    count = int(state["count"])
    est, stands = [], []
    for t in range(T):
        est.append([estimate(q[o], count) for o in range(O)])
        stands.append(count >= MARKERS)
        if has_targets:
            for o in range(O):
                observe(q[o], n[o], want[o], count, float(y[t, o]))
            count += 1
    state["heights"] = np.array(q, dtype=np.float64).T.copy()
    state["positions"] = np.array(n, dtype=np.float64).T.copy()
    state["desired"] = np.array(want, dtype=np.float64).T.copy()
    state["count"] = np.float64(count)
    return np.array(est, dtype=np.float64).reshape(T, O), np.array(stands, dtype=bool)


class Median(LastTarget):
    """The running median for every stream of a regression model with explicit targets."""

    kind = "running_median"

    state_shapes = staticmethod(state_shapes)
    fresh_state = staticmethod(fresh_state)

    def step(self, stream_ids, batch: dict, fallback_preds, fallback_losses):
        """Predictions [B, T, O] (NaN where the estimate does not stand yet) and losses [B, T]
        (the estimate's; the fallback's before a stream's first target)."""
        y, lengths = batch["targets"].astype(np.float64), batch["lengths"]
        has_targets = batch["learn"] != 2
        B, T, O = y.shape
        est = np.full((B, T, O), np.nan)
        stands = np.zeros((B, T), dtype=bool)
        for b, sid in enumerate(stream_ids):
            s = self._streams.get(sid) or self._fresh()
            n = int(lengths[b])
            est[b, :n], stands[b, :n] = run_stream(s, y[b, :n], has_targets)
            self._streams[sid] = s
        known = np.isfinite(est).all(axis=2)
        losses = np.mean((est - y) ** 2, axis=2) if has_targets else np.full((B, T), np.nan)
        losses = np.where(known, losses, fallback_losses)
        active = np.arange(T)[None, :] < lengths[:, None]
        preds = np.where((stands & active)[..., None], est, np.nan)
        losses = np.where(active, losses, np.nan)
        self._scored(stream_ids, lengths, losses)
        return preds.astype(self.dtype), losses.astype(self.dtype)

    def forecast(self, stream_id, horizon: int, fallback) -> np.ndarray:
        """The median, flat over the horizon; NaN while it abstains (or the stream is new)."""
        s = self._streams.get(stream_id)
        if s is None or s["count"] < MARKERS:
            return np.full((horizon, self.out_size), np.nan, dtype=self.dtype)
        return np.tile(s["heights"][2], (horizon, 1)).astype(self.dtype)

    def _check_restored(self, state: dict):
        count = state["count"]
        seeded = int(min(count, MARKERS)) if np.isfinite(count) else 0
        finite = all(np.all(np.isfinite(state[k])) for k in state if k != "heights")
        if not (finite and count >= 0 and count == int(count) and state["steps"] >= 0
                and np.all(np.isfinite(state["heights"][:seeded]))
                and not np.isinf(state["heights"]).any()):
            raise ValueError("stream snapshot of the baseline running_median holds Inf, NaN "
                             "where a number is needed, or a count that is not a whole number "
                             ">= 0")


def memory_per_stream(out_size: int) -> int:
    return float64_bytes(state_shapes(out_size))
