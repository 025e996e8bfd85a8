"""The scaled seasonal member ``{"baseline": "seasonal_scaled"}``: a season whose swing grows
and shrinks with the series' recent magnitude (multiplicative seasonality), period and smoothing
found online.

Seasonal naive (service/engine/seasonal.py) repeats y_{t-P}: when the swing of the season grows
from one year to the next (monthly changes of a growing quantity: a busier year has larger
month-to-month changes), every repeat is a season behind. This member splits the series into an
amplitude and a pattern, as multiplicative Holt-Winters splits a level (Winters 1960), but on
the target itself, so it needs no level. Per smoothing pair (alpha, gamma) in SMOOTHING:

    a_t = (1 - alpha) a_{t-1} + alpha |y_t|                   (the first target: a = |y|)
    c_P[t mod P] <- (1 - gamma) c_P[t mod P] + gamma y_t / a_t  (the first visit: y_t / a_t)
    candidate (alpha, gamma, P) predicts  c_P[t mod P] * a_{t-1}

Every candidate, one per smoothing pair and period (seasonal.PERIODS), is scored prequentially
beside persistence with seasonal's discount, and step t uses the candidate whose errors are the
smallest share of persistence's, as the seasonal member chooses its period (seasonal.choose):
with several pairs, the smoothing would be chosen online as the period is. Unlike the seasonal
member it may choose from FIRST_CHOSEN errors on, when the share is under n / MIN_SCORED (n
errors): a season that beats persistence by that much on two or three steps is used at once.
On a short stream those first steps weigh: on AirlinePassengers (131 steps) the member had
no season for its first 4 steps and period 4 for the next 3 (squared errors 0.75-0.84 of
persistence's), while period 12's share was under 0.1 from its second error on; choosing that
at once takes the member alone from 8.89 to 8.44 MAE and moved no other regression stream
(bench/results/quality_defaults.md). Where none
qualifies it predicts what the first network member predicts, with its loss (neither gains
weight on the step). SMOOTHING holds the one pair measured best alone on AirlinePassengers'
changes (alpha 0.03, an effective window of about 3 years of monthly data; gamma 0.5, half the
weight on the last season; the MAE moved by under 3% over alpha 0.02-0.05, gamma 0.4-0.6). A
grid of six pairs (alpha 0.02, 0.05 x gamma 0.3, 0.5, 0.7) chosen online lost in the ensemble
(airline 9.48 against 9.36): with six times the candidates one looks good by chance on the
first few scored steps, and Hedge, whose loss scale is still a two-target variance then,
punishes that member for many steps (bench/results/quality_defaults.md).

History from the inputs: a stream framed as "the next value from the last k values" carries
its own earlier targets in its inputs. At a stream's second step the member looks for a window
of lag columns (lag_columns: one column equals the first target, another equals the first
step's value of that column, and so on); when there is one, the state restarts from the history
the first inputs hold, oldest first, then the first target again, so the season is scored and
used k steps sooner. One-output models only; exact equality, as a lag column repeats the value
the caller sent as a target.

Residual correction: the prediction adds phi * r_{t-1}, r the target minus the chosen
candidate's guess and phi = sum r_t r_{t-1} / sum r_{t-1}^2 (discounted sums, in [-1, 1], 0
until MIN_SCORED pairs), per output: regression with autocorrelated errors (Box & Jenkins
1970), lag 1 only. A change series of a noisy level has residuals that undo each other (phi
near -0.5 for white noise on the level; AirlinePassengers ends at -0.40, MAE 9.36 -> 9.19).

No weights; per stream the amplitudes, the previous target, the patterns (NaN where a phase is
unseen), the candidates' discounted errors, the last residual and the residual sums, the first
input row, the steps of history read, the running loss and the step count: all in the stream
snapshot. Forecasts carry the chosen pattern forward at the last amplitude, plus
phi^h * the last residual.
"""
from __future__ import annotations

import numpy as np

from .baseline import float64_bytes
from .recurrence import discounted
from .seasonal import DISCOUNT, MIN_SCORED, PERIODS, Seasonal, choose

# (alpha, gamma) pairs, each a candidate beside the periods; one measured best (see above)
SMOOTHING = ((0.03, 0.5),)
FIRST_CHOSEN = 2  # errors a candidate is chosen on, under a share of n / MIN_SCORED (above)
MIN_WINDOW = 2  # lag columns an input row must carry before it seeds the history
CHUNK_FROM = 8  # chunks of fewer steps go step by step (the same numbers, less overhead)
_ALPHA = np.array([a for a, _ in SMOOTHING])[:, None]    # [M, 1]
_GAMMA = np.array([g for _, g in SMOOTHING])[:, None, None]
_P = np.array(PERIODS)
_START = np.concatenate([[0], np.cumsum(PERIODS)[:-1]])  # each period's slots in a pattern


def state_shapes(O: int, I: int = 0) -> dict:
    """One stream's state; all float64. ``I``: the dense input width (0: token inputs).
    Candidates are laid out smoothing pair major: [M, C] with C = len(PERIODS)."""
    M, C = len(SMOOTHING), len(PERIODS)
    return {"amplitude": (M, O),            # EW mean of |target| per alpha; NaN before the first
            "last": (O,),                   # the previous step's target; NaN if it had none
            "pattern": (M, sum(PERIODS), O),  # target / amplitude per phase, the periods' slots
                                              # one after another; NaN unseen
            "error": (M, C), "reference": (M, C), "scored": (M, C),
            "residual": (O,),               # the last step's target minus the season's guess
            "residual_sums": (2, O),        # discounted sums of r_t r_{t-1} and r_{t-1}^2
            "pairs": (),                    # how many residual pairs those sums hold
            "first_inputs": (I,),           # the stream's first input row (lag detection)
            "origin": (),                   # steps of history read from the inputs
            "running": (2,), "steps": ()}


def fresh_state(O: int, I: int = 0) -> dict:
    s = {name: np.zeros(shape) for name, shape in state_shapes(O, I).items()}
    for name in ("amplitude", "last", "pattern", "residual", "first_inputs"):
        s[name][:] = np.nan
    return s


def _phi(sums: np.ndarray, pairs) -> np.ndarray:
    """The residuals' lag-1 regression coefficient per output, in [-1, 1]; 0 until MIN_SCORED
    pairs (``sums`` [..., 2, O], ``pairs`` [...])."""
    xy, xx = sums[..., 0, :], sums[..., 1, :]
    phi = np.clip(xy / np.where(xx > 0, xx, 1.0), -1.0, 1.0)
    return np.where((np.asarray(pairs)[..., None] >= MIN_SCORED) & (xx > 0), phi, 0.0)


def pick(state: dict) -> int:
    """The chosen candidate, an index into the flattened [M, C] candidates; -1 for none."""
    return int(choose(state["error"].ravel(), state["reference"].ravel(),
                      state["scored"].ravel(), first=FIRST_CHOSEN))


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
    slot = _START + index % _P                                              # [C]
    amp, pattern = state["amplitude"], state["pattern"]
    error, reference, scored = state["error"], state["reference"], state["scored"]
    guess = pattern[:, slot] * amp[:, None]                                  # [M, C, O]
    k = pick(state)
    base = guess.reshape(-1, guess.shape[2])[k] if k >= 0 else np.full(amp.shape[1], np.nan)
    residual = state["residual"]
    pred = base + np.where(np.isfinite(residual),
                           _phi(state["residual_sums"], state["pairs"]) * residual, 0.0)
    error *= DISCOUNT
    reference *= DISCOUNT
    state["residual_sums"] *= DISCOUNT
    if target is None:
        state["last"], state["residual"] = (np.full(amp.shape[1], np.nan) for _ in range(2))
        return pred
    r = target - base
    if np.isfinite(r).all() and np.isfinite(residual).all():
        state["residual_sums"] += np.stack([r * residual, residual * residual])
        state["pairs"] += 1
    state["residual"] = r
    last = state["last"]
    fin = np.isfinite(guess).all(axis=2) & bool(np.isfinite(last).all())   # [M, C]
    error += np.where(fin, np.mean((guess - target) ** 2, axis=2), 0.0)
    reference += np.where(fin, np.mean((last - target) ** 2), 0.0)
    scored += fin
    size = np.abs(target)[None]
    amp = np.where(np.isnan(amp), size, (1 - _ALPHA) * amp + _ALPHA * size)  # [M, O]
    ratio = np.where(amp > 0, target / np.where(amp > 0, amp, 1.0), 0.0)[:, None]  # [M, 1, O]
    old = pattern[:, slot]
    pattern[:, slot] = np.where(np.isnan(old), ratio, (1 - _GAMMA) * old + _GAMMA * ratio)
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
    for name in ("amplitude", "last", "pattern", "error", "reference", "scored", "residual",
                 "residual_sums", "pairs", "first_inputs", "origin"):
        state[name] = fresh[name]


def _ew_before_after(x, rate, first, axis=0):
    """v <- (1 - rate) v + rate x along ``axis`` from ``first`` (NaN: the first x): the
    values before and after each step."""
    start = np.where(np.isnan(first), np.take(x, 0, axis=axis), first)
    after = discounted(x, rate, 1.0 - rate, start, axis=axis)
    before = np.concatenate([np.expand_dims(first, axis),
                             np.delete(after, -1, axis=axis)], axis=axis)
    return before, after


def _pattern_chunk(state: dict, m: int, ratio: np.ndarray, index0: int) -> list:
    """Pair m's pattern values before each of T steps, one [T, O] array per period, given the
    steps' ratios [T, O]; writes the pattern after them back. Steps t and t + P visit the
    same slot: laid out as rows of P columns, each column is one slot's recurrence, filtered
    down the rows."""
    T, O = ratio.shape
    pattern = state["pattern"][m]
    out = []
    for c, P in enumerate(PERIODS):
        slots = _START[c] + (index0 + np.arange(P)) % P  # column q's slot
        rows = -(-T // P)
        grid = np.zeros((rows * P, O))
        grid[:T] = ratio
        grid = grid.reshape(rows, P, O)
        before, after = _ew_before_after(grid, SMOOTHING[m][1], pattern[slots])
        out.append(before.reshape(rows * P, O)[:T])
        visited = min(T, P)
        last_row = (T - 1 - np.arange(visited)) // P
        pattern[slots[:visited]] = after[last_row, np.arange(visited)]
    return out


def _advance_chunk(state: dict, y: np.ndarray, has_targets: bool, index0: int):
    """``_advance`` for T steps at once (step indices index0 ...): the same numbers, as
    linear recurrences filtered along the chunk. Returns the predictions [T, O]."""
    T, O = y.shape
    M, C = len(SMOOTHING), len(PERIODS)
    index = index0 + np.arange(T)
    decay = DISCOUNT ** np.arange(1, T + 1)[:, None, None]                   # [T, 1, 1]
    E0, R0, N0 = state["error"], state["reference"], state["scored"]
    if not has_targets:
        slots = _START + index[:, None] % _P                                 # [T, C]
        guess = state["pattern"][:, slots] * state["amplitude"][:, None, None]  # [M, T, C, O]
        E_before = np.concatenate([E0[None], E0[None] * decay[:-1]])         # [T, M, C]
        R_before = np.concatenate([R0[None], R0[None] * decay[:-1]])
        N_before = np.broadcast_to(N0, (T, M, C))
        state["error"], state["reference"] = E0 * decay[-1], R0 * decay[-1]
        state["last"] = np.full(O, np.nan)
        residual_before = np.concatenate([state["residual"][None], np.full((T - 1, O), np.nan)])
        sums_before = state["residual_sums"][None] * np.concatenate([[1.0], decay[:-1, 0, 0]])[
            :, None, None]                                                    # [T, 2, O]
        pairs_before = np.full(T, state["pairs"])
        state["residual_sums"] = state["residual_sums"] * decay[-1, 0, 0]
        state["residual"] = np.full(O, np.nan)
    else:
        size = np.abs(y)
        guess = np.empty((M, T, C, O))
        amp_after = np.empty((M, O))
        for m, (alpha, gamma) in enumerate(SMOOTHING):
            a_before, a_after = _ew_before_after(size, alpha, state["amplitude"][m])
            ratio = np.where(a_after > 0, y / np.where(a_after > 0, a_after, 1.0), 0.0)
            values = _pattern_chunk(state, m, ratio, index0)
            guess[m] = np.stack(values, axis=1) * a_before[:, None, :]
            amp_after[m] = a_after[-1]
        last = np.concatenate([state["last"][None], y[:-1]])                  # [T, O]
        fin = (np.isfinite(guess).all(axis=3)
               & np.isfinite(last).all(axis=1)[None, :, None])                # [M, T, C]
        err = np.where(fin, np.mean((guess - y[None, :, None]) ** 2, axis=3), 0.0)
        ref = np.where(fin, np.mean((last - y) ** 2, axis=1)[None, :, None], 0.0)
        E_after = discounted(err, 1.0, DISCOUNT, E0, axis=1)
        R_after = discounted(ref, 1.0, DISCOUNT, R0, axis=1)
        N_after = N0[:, None] + np.cumsum(fin, axis=1)
        E_before = np.concatenate([E0[:, None], E_after[:, :-1]], axis=1).transpose(1, 0, 2)
        R_before = np.concatenate([R0[:, None], R_after[:, :-1]], axis=1).transpose(1, 0, 2)
        N_before = np.concatenate([N0[:, None], N_after[:, :-1]], axis=1).transpose(1, 0, 2)
        state["error"], state["reference"] = E_after[:, -1], R_after[:, -1]
        state["scored"] = N_after[:, -1]
        state["amplitude"], state["last"] = amp_after, y[-1].astype(np.float64)
    k = choose(E_before.reshape(T, M * C), R_before.reshape(T, M * C),
               N_before.reshape(T, M * C), first=FIRST_CHOSEN)                # [T]
    flat = guess.transpose(1, 0, 2, 3).reshape(T, M * C, O)
    base = np.where((k >= 0)[:, None], flat[np.arange(T), np.maximum(k, 0)], np.nan)  # [T, O]
    if has_targets:
        r = y - base
        residual_before = np.concatenate([state["residual"][None], r[:-1]])   # [T, O]
        pair = np.isfinite(r).all(axis=1) & np.isfinite(residual_before).all(axis=1)  # [T]
        add = np.where(pair[:, None, None],
                       np.stack([r * residual_before, residual_before ** 2], axis=1), 0.0)
        sums_after = discounted(add, 1.0, DISCOUNT, state["residual_sums"], axis=0)  # [T, 2, O]
        sums_before = np.concatenate([state["residual_sums"][None], sums_after[:-1]])
        pairs_after = state["pairs"] + np.cumsum(pair)
        pairs_before = np.concatenate([[state["pairs"]], pairs_after[:-1]])
        state["residual_sums"], state["pairs"] = sums_after[-1], np.float64(pairs_after[-1])
        state["residual"] = r[-1]
    correction = np.where(np.isfinite(residual_before),
                          _phi(sums_before, pairs_before) * residual_before, 0.0)
    return base + correction


def run_stream(state: dict, y: np.ndarray, has_targets: bool, x: np.ndarray | None = None):
    """Predictions [T, O] (NaN where the member has none) for T steps with targets y [T, O]
    (ignored unless ``has_targets``) and dense inputs x [T, I] (None: token inputs); updates
    ``state`` in place. ``state["steps"]`` is the step count before these T steps (the
    caller advances it). A stream's first two steps go one at a time (the second may read
    the history from the inputs), and so do short chunks (a chunk's fixed cost is that of
    about CHUNK_FROM single steps); the rest as one chunk."""
    T, O = y.shape
    preds = np.full((T, O), np.nan)
    start = int(state["steps"])
    head = T if T < CHUNK_FROM else min(T, max(0, 2 - start))
    for t in range(head):
        if x is not None and x.shape[1] and start + t == 0:
            state["first_inputs"] = x[t].astype(np.float64)
        elif x is not None and x.shape[1] and start + t == 1:
            _seed(state, x[t].astype(np.float64))
        index = int(state["origin"]) + start + t
        preds[t] = _advance(state, y[t] if has_targets else None, index)
    if head < T:
        preds[head:] = _advance_chunk(state, y[head:], has_targets,
                                      int(state["origin"]) + start + head)
    return preds


def forecast_stream(state: dict, horizon: int):
    """[horizon, O]: the chosen pattern carried forward at its last amplitude (NaN when none
    is chosen)."""
    O = state["last"].shape[0]
    k = pick(state)
    if k < 0:
        return np.full((horizon, O), np.nan)
    m, c = divmod(k, len(PERIODS))
    index = int(state["origin"]) + int(state["steps"]) + np.arange(horizon)
    season = state["pattern"][m, _START[c] + index % PERIODS[c]] * state["amplitude"][m]
    residual = state["residual"]
    if not np.isfinite(residual).all():
        return season
    phi = _phi(state["residual_sums"], state["pairs"])
    return season + phi ** np.arange(1, horizon + 1)[:, None] * residual


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
        nan_allowed = ("amplitude", "last", "pattern", "residual", "first_inputs")
        if not (all(not np.isinf(state[k]).any() for k in nan_allowed)
                and all(np.all(np.isfinite(state[k])) for k in state if k not in nan_allowed)
                and np.all(state["scored"] >= 0) and state["steps"] >= 0 and state["origin"] >= 0
                and state["pairs"] >= 0 and np.all(state["residual_sums"][1] >= 0)
                and not (state["amplitude"] < 0).any()):
            raise ValueError("stream snapshot of the baseline seasonal_scaled holds Inf, or NaN "
                             "or a negative number where a count or an amplitude is needed")


def memory_per_stream(out_size: int, input_size: int = 0) -> int:
    return float64_bytes(state_shapes(out_size, input_size))
