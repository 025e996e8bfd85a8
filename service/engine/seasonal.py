"""The seasonal-naive member ``{"baseline": "seasonal"}``: y_t predicted as y_{t-P}, with the
period P found online.

Candidate periods are a fixed list (PERIODS: 4, 7, 12, 24, 52, 168 steps, the seasons of
quarterly, daily, monthly, hourly and weekly data). Each stream scores every candidate
prequentially on its own targets: candidate P's error at step t is (y_{t-P} - y_t)^2, summed
with a discount (DISCOUNT; an effective window of 200 steps) beside persistence's error
(y_{t-1} - y_t)^2 on the same steps. Step t uses the candidate whose errors are the smallest
share of persistence's over the steps before t, among those with at least MIN_SCORED errors,
and only when that share is below 1: a series with no season better than "same as last
step" gets nothing from this member. That
choice is the autocorrelation test done in the loss that matters: E(y_t - y_{t-P})^2 =
2 var (1 - rho_P) for a stationary series. Where no period qualifies (or y_{t-P} is unknown),
the member predicts what the ensemble's first network member predicts, with that member's
loss, as persistence does before its first target (neither gains weight on the step).

No weights; per stream a ring of the last max(PERIODS) steps' targets (NaN where a step had
none), the candidates' discounted errors, the running loss and the step count: all in the
stream snapshot. Forecasts repeat the season forward.
"""
from __future__ import annotations

import numpy as np
from .baseline import LastTarget, float64_bytes
from .recurrence import discounted

PERIODS = (4, 7, 12, 24, 52, 168)
HISTORY = max(PERIODS)
DISCOUNT = 0.995
MIN_SCORED = 8


def state_shapes(O: int) -> dict:
    """One stream's state; all float64."""
    C = len(PERIODS)
    return {"history": (HISTORY, O),  # targets of the last HISTORY steps, oldest first
            "error": (C,),            # discounted sum of squared errors per period
            "reference": (C,),        # persistence's on the same steps
            "scored": (C,),           # how many errors each lag has had (undiscounted)
            "running": (2,), "steps": ()}


def fresh_state(O: int) -> dict:
    s = {name: np.zeros(shape) for name, shape in state_shapes(O).items()}
    s["history"][:] = np.nan
    return s


def choose(error, reference, scored, first=MIN_SCORED):
    """The index into PERIODS of the period to use per row ([..., C] arrays), -1 for none: the
    candidate whose errors are the smallest share of persistence's on the same steps.

    ``first`` (<= MIN_SCORED): the fewest errors a candidate is chosen on. With n errors,
    first <= n < MIN_SCORED, its share must also fall under n / MIN_SCORED (fewer errors,
    stronger evidence), and candidates are ranked by share / that bound; from MIN_SCORED on the
    bound is 1, and with first = MIN_SCORED this is the plain rule."""
    bound = np.clip(scored / MIN_SCORED, 1.0 / MIN_SCORED, 1.0)
    ratio = np.where(scored >= first, error / np.maximum(reference, 1e-300) / bound, np.inf)
    best = np.argmin(ratio, axis=-1)
    ok = np.take_along_axis(ratio, best[..., None], -1)[..., 0] < 1.0
    return np.where(ok, best, -1)


def run_stream(state: dict, y: np.ndarray, has_targets: bool):
    """Predictions [T, O] (NaN where the member has none) for T steps with targets y [T, O]
    (ignored unless ``has_targets``); updates ``state`` in place."""
    T, O = y.shape
    if T == 0:
        return np.zeros((0, O))
    y = y if has_targets else np.full((T, O), np.nan)
    full = np.concatenate([state["history"], y])                         # [H + T, O]
    lagged = np.stack([full[HISTORY - lag:HISTORY - lag + T] for lag in PERIODS])  # [C, T, O]
    err = np.mean((lagged - y) ** 2, axis=2)                             # [C, T]
    ref = np.mean((full[HISTORY - 1:HISTORY - 1 + T] - y) ** 2, axis=1)   # [T]
    fin = np.isfinite(err) & np.isfinite(ref)
    e_after = discounted(np.where(fin, err, 0.0), 1.0, DISCOUNT, state["error"], axis=1)
    r_after = discounted(np.where(fin, ref, 0.0), 1.0, DISCOUNT, state["reference"], axis=1)
    n_after = state["scored"][:, None] + np.cumsum(fin, axis=1)
    # step t chooses with the errors of the steps before it
    before = lambda a0, a: np.concatenate([a0[:, None], a[:, :-1]], axis=1)  # noqa: E731
    pick = choose(before(state["error"], e_after).T, before(state["reference"], r_after).T,
                  before(state["scored"], n_after).T)                     # [T]
    preds = np.where((pick >= 0)[:, None],
                     lagged[np.maximum(pick, 0), np.arange(T)], np.nan)
    state["error"], state["reference"] = e_after[:, -1], r_after[:, -1]
    state["scored"] = n_after[:, -1]
    state["history"] = full[-HISTORY:].copy()
    return preds


def forecast_stream(state: dict, horizon: int):
    """[horizon, O] by repeating the chosen season forward (NaN when none is chosen)."""
    O = state["history"].shape[1]
    pick = int(choose(state["error"], state["reference"], state["scored"]))
    if pick < 0:
        return np.full((horizon, O), np.nan)
    P = PERIODS[pick]
    full = np.concatenate([state["history"], np.empty((horizon, O))])
    for h in range(horizon):
        full[HISTORY + h] = full[HISTORY + h - P]
    return full[HISTORY:]


class Seasonal(LastTarget):
    """Seasonal naive for every stream of a regression model with explicit targets."""

    kind = "seasonal"

    state_shapes = staticmethod(state_shapes)
    fresh_state = staticmethod(fresh_state)

    def step(self, stream_ids, batch: dict, fallback_preds, fallback_losses):
        y, lengths = batch["targets"].astype(np.float64), batch["lengths"]
        has_targets = batch["learn"] != 2
        B, T, O = y.shape
        preds = np.full((B, T, O), np.nan)
        for b, sid in enumerate(stream_ids):
            s = self._streams.get(sid) or self._fresh()
            n = int(lengths[b])
            x = batch.get("inputs")
            preds[b, :n] = self._run(s, y[b, :n], has_targets, None if x is None else x[b, :n])
            self._streams[sid] = s
        known = np.isfinite(preds).all(axis=2)
        losses = np.mean((preds - y) ** 2, axis=2) if has_targets else np.full((B, T), np.nan)
        preds = np.where(known[..., None], preds, fallback_preds)
        losses = np.where(known, losses, fallback_losses)
        active = np.arange(T)[None, :] < lengths[:, None]
        preds = np.where(active[..., None], preds, np.nan)
        losses = np.where(active, losses, np.nan)
        self._scored(stream_ids, lengths, losses)
        return preds.astype(self.dtype), losses.astype(self.dtype)

    def forecast(self, stream_id, horizon: int, fallback) -> np.ndarray:
        s = self._streams.get(stream_id)
        if s is None:
            return fallback
        f = self._forecast(s, horizon)
        return np.where(np.isfinite(f), f, fallback).astype(self.dtype)

    def _run(self, state: dict, y: np.ndarray, has_targets: bool, x=None) -> np.ndarray:
        """The member's predictions for one stream's steps (``x``: its inputs, unused here)."""
        return run_stream(state, y, has_targets)

    def _forecast(self, state: dict, horizon: int) -> np.ndarray:
        return forecast_stream(state, horizon)

    def _check_restored(self, state: dict):
        finite_or_nan = ~np.isinf(state["history"])
        if not (finite_or_nan.all() and all(np.all(np.isfinite(state[k]))
                                            for k in state if k != "history")):
            raise ValueError("stream snapshot of the baseline seasonal holds Inf or NaN where a "
                             "number is needed")


def memory_per_stream(out_size: int) -> int:
    return float64_bytes(state_shapes(out_size))
