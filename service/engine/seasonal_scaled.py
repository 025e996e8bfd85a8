"""The scaled seasonal member ``{"baseline": "seasonal_scaled"}``: a season whose swing grows
and shrinks with the series' recent magnitude (multiplicative seasonality), period found online.

Seasonal naive (service/engine/seasonal.py) repeats y_{t-P}: when the swing of the season grows
from one year to the next (monthly changes of a growing quantity: a busier year has larger
month-to-month changes), every repeat is a season behind. This member splits the series into an
amplitude and a pattern, as multiplicative Holt-Winters splits a level (Winters 1960), but on
the target itself, so it needs no level:

    a_t = (1 - ALPHA) a_{t-1} + ALPHA |y_t|                   (the first target: a = |y|)
    c_P[t mod P] <- (1 - GAMMA) c_P[t mod P] + GAMMA y_t / a_t  (the first visit: y_t / a_t)
    candidate P predicts  c_P[t mod P] * a_{t-1}

ALPHA (an effective window of about 3 years of monthly data) and GAMMA (half the weight on the
last season) were measured on bench/quality.py (bench/results/quality_defaults.md); the MAE
there moved by under 3% across ALPHA 0.02-0.05, GAMMA 0.4-0.6. Each candidate period
(seasonal.PERIODS) is scored prequentially beside persistence with seasonal's discount, and
step t uses the candidate whose errors are the smallest share of persistence's, as the seasonal
member chooses (seasonal.choose). Where none qualifies it predicts what the first network
member predicts, with its loss (neither gains weight on the step).

No weights; per stream the amplitude, the previous target, one pattern per candidate (NaN
where a phase is unseen), the candidates' discounted errors, the running loss and the step
count: all in the stream snapshot. Forecasts carry the pattern forward at the last amplitude.
"""
from __future__ import annotations

import numpy as np

from .seasonal import DISCOUNT, MIN_SCORED, PERIODS, Seasonal, choose

ALPHA = 0.03
GAMMA = 0.5
_P = np.array(PERIODS)
MIN_WINDOW = 2  # lag columns an input row must carry before it seeds the history


def state_shapes(O: int, I: int = 0) -> dict:
    """One stream's state; all float64. ``I``: the dense input width (0: token inputs)."""
    C = len(PERIODS)
    return {"amplitude": (O,),              # EW mean of |target|; NaN before the first
            "last": (O,),                   # the previous step's target; NaN if it had none
            "pattern": (C, max(PERIODS), O),  # ratio target / amplitude per phase; NaN unseen
            "error": (C,), "reference": (C,), "scored": (C,),
            "first_inputs": (I,),           # the stream's first input row (lag detection)
            "origin": (),                   # steps of history read from the inputs
            "running": (2,), "steps": ()}


def fresh_state(O: int, I: int = 0) -> dict:
    s = {name: np.zeros(shape) for name, shape in state_shapes(O, I).items()}
    for name in ("amplitude", "last", "pattern", "first_inputs"):
        s[name][:] = np.nan
    return s


def lag_columns(first: np.ndarray, second: np.ndarray, first_target: float) -> list:
    """The input columns that hold the stream's own earlier targets as a window of lags,
    read off its first two steps: j_1 with second[j_1] == the first step's target (lag 1), then
    j_{m+1} with second[j_{m+1}] == first[j_m] (each column is the one before it, a step
    later), lowest column first. Exact equality: a lag column repeats the value the caller
    sent as a target. [] unless the window holds MIN_WINDOW lags and not one value only."""
    chain, want = [], first_target
    while True:
        hits = [j for j in np.flatnonzero(second == want) if j not in chain]
        if not hits:
            break
        chain.append(int(hits[0]))
        want = first[hits[0]]
    if len(chain) < MIN_WINDOW or np.all(first[chain] == first[chain[0]]):
        return []
    return chain


def _advance(state: dict, target, index: int):
    """Step ``index`` (counted from the stream's first step, seeded history included): the
    member's prediction [O] (NaN where none), then the update with ``target`` [O] (None: a
    step without one). Updates ``state`` in place."""
    rows = np.arange(len(PERIODS))
    phase = index % _P
    amp, pattern = state["amplitude"], state["pattern"]
    error, reference, scored = state["error"], state["reference"], state["scored"]
    guess = pattern[rows, phase] * amp                                     # [C, O]
    pick = int(choose(error, reference, scored))
    pred = guess[pick] if pick >= 0 else np.full(amp.shape, np.nan)
    error *= DISCOUNT
    reference *= DISCOUNT
    if target is None:
        state["last"] = np.full(amp.shape, np.nan)
        return pred
    last = state["last"]
    fin = np.isfinite(guess).all(axis=1) & bool(np.isfinite(last).all())
    error += np.where(fin, np.mean((guess - target) ** 2, axis=1), 0.0)
    reference += np.where(fin, np.mean((last - target) ** 2), 0.0)
    scored += fin
    amp = np.where(np.isnan(amp), np.abs(target), (1 - ALPHA) * amp + ALPHA * np.abs(target))
    ratio = np.where(amp > 0, target / np.where(amp > 0, amp, 1.0), 0.0)
    old = pattern[rows, phase]
    pattern[rows, phase] = np.where(np.isnan(old), ratio, (1 - GAMMA) * old + GAMMA * ratio)
    state["amplitude"], state["last"] = amp, np.array(target, dtype=np.float64)
    return pred


def _seed(state: dict, x: np.ndarray):
    """At the stream's second step: when its inputs carry a window of its earlier targets,
    restart the state from the history they hold (oldest first), then the first step again."""
    first, y0 = state["first_inputs"], state["last"]
    if y0.shape != (1,) or not np.isfinite(y0).all() or not np.isfinite(first).all():
        return
    chain = lag_columns(first, x, y0[0])
    if not chain:
        return
    history = first[chain][::-1]
    fresh = fresh_state(1, first.shape[0])
    fresh["first_inputs"], fresh["origin"] = first, np.float64(len(history))
    for i, v in enumerate(history):
        _advance(fresh, np.array([v]), i)
    _advance(fresh, y0.copy(), len(history))
    for name in ("amplitude", "last", "pattern", "error", "reference", "scored",
                 "first_inputs", "origin"):
        state[name] = fresh[name]


def run_stream(state: dict, y: np.ndarray, has_targets: bool, x: np.ndarray | None = None):
    """Predictions [T, O] (NaN where the member has none) for T steps with targets y [T, O]
    (ignored unless ``has_targets``) and dense inputs x [T, I] (None: token inputs); updates
    ``state`` in place. ``state["steps"]`` is the step count before these T steps (the
    caller advances it)."""
    T, O = y.shape
    preds = np.full((T, O), np.nan)
    start = int(state["steps"])
    for t in range(T):
        if x is not None and x.shape[1] and start + t == 0:
            state["first_inputs"] = x[t].astype(np.float64)
        elif x is not None and x.shape[1] and start + t == 1:
            _seed(state, x[t].astype(np.float64))
        index = int(state["origin"]) + start + t
        preds[t] = _advance(state, y[t] if has_targets else None, index)
    return preds


def forecast_stream(state: dict, horizon: int):
    """[horizon, O]: the chosen pattern carried forward at the last amplitude (NaN when none is
    chosen or a phase is unseen)."""
    O = state["amplitude"].shape[0]
    pick = int(choose(state["error"], state["reference"], state["scored"]))
    if pick < 0:
        return np.full((horizon, O), np.nan)
    phase = (int(state["origin"]) + int(state["steps"]) + np.arange(horizon)) % PERIODS[pick]
    return state["pattern"][pick, phase] * state["amplitude"]


class SeasonalScaled(Seasonal):
    """Scaled seasonal naive for every stream of a regression model with explicit targets;
    ``input_size`` is the dense input width (0 for token inputs: no history is read)."""

    kind = "seasonal_scaled"

    def __init__(self, out_size: int, input_size: int = 0, dtype=np.float32):
        super().__init__(out_size, dtype)
        self.input_size = input_size

    def _shapes(self) -> dict:
        return state_shapes(self.out_size, self.input_size)

    def _fresh(self) -> dict:
        return fresh_state(self.out_size, self.input_size)

    def _run(self, state: dict, y: np.ndarray, has_targets: bool, x=None) -> np.ndarray:
        return run_stream(state, y, has_targets, x if self.input_size else None)

    def _forecast(self, state: dict, horizon: int) -> np.ndarray:
        return forecast_stream(state, horizon)

    def _check_restored(self, state: dict):
        nan_allowed = ("amplitude", "last", "pattern", "first_inputs")
        if not (all(not np.isinf(state[k]).any() for k in nan_allowed)
                and all(np.all(np.isfinite(state[k])) for k in state if k not in nan_allowed)
                and np.all(state["scored"] >= 0) and state["steps"] >= 0 and state["origin"] >= 0
                and not (state["amplitude"] < 0).any()):
            raise ValueError("stream snapshot of the baseline seasonal_scaled holds Inf, or NaN "
                             "or a negative number where a count or an amplitude is needed")


def memory_per_stream(out_size: int, input_size: int = 0) -> int:
    return 8 * sum(int(np.prod(s, dtype=np.int64))
                   for s in state_shapes(out_size, input_size).values())
