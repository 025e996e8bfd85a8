"""Scaled seasonal naive with its period and smoothing found online, one stream, one step at a
time, in plain Python floats: the oracle for ``service.engine.seasonal_scaled``. Written from
its docstring: per smoothing pair (alpha, gamma) an amplitude, the exponentially weighted mean
of |target| (rate alpha), and per period P a pattern of ratios (target / amplitude) per phase,
each phase smoothed with rate gamma; candidate (pair, P) predicts pattern[t mod P] * amplitude;
step t uses the candidate whose discounted squared errors are the smallest share of
persistence's on the same steps (as the seasonal member chooses), or has no prediction (None);
a candidate with n errors, first_chosen <= n < min_scored, must bring its share under
n / min_scored and is ranked by share / (n / min_scored).
At the stream's second step, when its inputs hold a window of at least min_window of its own
earlier targets (column j_1 equals the first target, column j_{m+1} equals the first step's
column j_m), the state restarts from the history the first inputs hold, oldest first, and the
first target again. The prediction adds phi * the last residual (target minus the season's
guess), phi the lag-1 regression coefficient of the residuals (discounted sums of r_t r_{t-1}
over r_{t-1}^2, in [-1, 1], once min_scored pairs are in), per output."""
import math


class SeasonalScaledReference:
    def __init__(self, periods, smoothing, discount, min_scored, min_window=2, first_chosen=None):
        self.periods, self.smoothing = periods, smoothing
        self.discount, self.min_scored, self.min_window = discount, min_scored, min_window
        # chosen from first_chosen errors on, when the share is under n / min_scored
        self.first_chosen = min_scored if first_chosen is None else first_chosen
        self.t = 0             # the step's index (seeded history included): its phase
        self.stream_steps = 0  # the stream's own steps
        self.first_inputs = None
        self.last = None       # the previous step's target, None if it had none
        self.amplitude = [None] * len(smoothing)  # per pair: a list of O floats
        self.pattern = [[[None] * P for P in periods] for _ in smoothing]
        # per candidate, pair major: candidate (m, c) is number m * len(periods) + c
        n = len(smoothing) * len(periods)
        self.error, self.reference, self.scored = [0.0] * n, [0.0] * n, [0] * n
        self.residual = None    # a list of O floats: the last target minus the season's guess
        self.xy, self.xx, self.pairs = None, None, 0  # residual sums per output, pair count

    def _candidate(self, m, c):
        ratio = self.pattern[m][c][self.t % self.periods[c]]
        if ratio is None or self.amplitude[m] is None:
            return None
        return [r * a for r, a in zip(ratio, self.amplitude[m])]

    def choose(self):
        """(m, c) of the chosen candidate, or None."""
        best, best_ratio = None, 1.0
        for k in range(len(self.error)):
            if self.scored[k] < self.first_chosen:
                continue
            bound = min(self.scored[k] / self.min_scored, 1.0)  # the share it must fall under
            ratio = self.error[k] / max(self.reference[k], 1e-300) / bound
            if ratio < best_ratio:
                best, best_ratio = k, ratio
        return None if best is None else divmod(best, len(self.periods))

    def _window(self, second):
        """The lag columns j_1, j_2, ... read off the first two input rows, or []."""
        chain, want = [], self.last[0]
        while True:
            j = next((j for j, v in enumerate(second) if v == want and j not in chain), None)
            if j is None:
                break
            chain.append(j)
            want = self.first_inputs[j]
        values = [self.first_inputs[j] for j in chain]
        if len(chain) < self.min_window or all(v == values[0] for v in values):
            return []
        return chain

    def _seed(self, second):
        if (len(self.last or []) != 1 or any(not math.isfinite(v) for v in self.last)
                or any(not math.isfinite(v) for v in self.first_inputs)):
            return
        chain = self._window(second)
        if not chain:
            return
        fresh = SeasonalScaledReference(self.periods, self.smoothing, self.discount,
                                        self.min_scored, self.min_window, self.first_chosen)
        for j in reversed(chain):
            fresh._learn([self.first_inputs[j]])
        fresh._learn(self.last)
        for name in ("t", "amplitude", "last", "pattern", "error", "reference", "scored",
                     "residual", "xy", "xx", "pairs"):
            setattr(self, name, getattr(fresh, name))

    def step(self, target, inputs=None):
        """target: a list of O floats, or None for a step without one; inputs: the step's
        input row (a list of floats; None: no dense inputs). Returns the prediction (a list of
        O floats) or None."""
        if inputs is not None and self.stream_steps == 0:
            self.first_inputs = list(inputs)
        elif inputs is not None and self.stream_steps == 1:
            self._seed(list(inputs))
        self.stream_steps += 1
        return self._learn(target)

    def _phi(self, o):
        if self.pairs < self.min_scored or not self.xx[o] > 0:
            return 0.0
        return min(1.0, max(-1.0, self.xy[o] / self.xx[o]))

    def _learn(self, target):
        chosen = self.choose()
        base = None if chosen is None else self._candidate(*chosen)
        pred = base
        if base is not None and self.residual is not None:
            pred = [b + self._phi(o) * r for o, (b, r) in enumerate(zip(base, self.residual))]
        self.error = [e * self.discount for e in self.error]
        self.reference = [r * self.discount for r in self.reference]
        if self.xy is not None:
            self.xy = [v * self.discount for v in self.xy]
            self.xx = [v * self.discount for v in self.xx]
        if target is None or base is None:
            self.residual = None
        else:
            new = [y - b for y, b in zip(target, base)]
            if self.residual is not None:
                if self.xy is None:
                    self.xy, self.xx = [0.0] * len(new), [0.0] * len(new)
                self.xy = [v + a * b for v, a, b in zip(self.xy, new, self.residual)]
                self.xx = [v + b * b for v, b in zip(self.xx, self.residual)]
                self.pairs += 1
            self.residual = new
        if target is not None:
            O = len(target)
            for m, (alpha, gamma) in enumerate(self.smoothing):
                for c, P in enumerate(self.periods):
                    guess = self._candidate(m, c)
                    if guess is None or self.last is None:
                        continue
                    k = m * len(self.periods) + c
                    self.error[k] += sum((g - y) ** 2 for g, y in zip(guess, target)) / O
                    self.reference[k] += sum((p - y) ** 2 for p, y in zip(self.last, target)) / O
                    self.scored[k] += 1
            for m, (alpha, gamma) in enumerate(self.smoothing):
                if self.amplitude[m] is None:
                    self.amplitude[m] = [abs(y) for y in target]
                else:
                    self.amplitude[m] = [(1 - alpha) * a + alpha * abs(y)
                                         for a, y in zip(self.amplitude[m], target)]
                ratio = [y / a if a > 0 else 0.0 for y, a in zip(target, self.amplitude[m])]
                for c, P in enumerate(self.periods):
                    old = self.pattern[m][c][self.t % P]
                    self.pattern[m][c][self.t % P] = ratio if old is None else [
                        (1 - gamma) * o + gamma * r for o, r in zip(old, ratio)]
        self.last = None if target is None else list(target)
        self.t += 1
        return pred if pred is None or all(math.isfinite(v) for v in pred) else None
