"""Scaled seasonal naive with the period found online, one stream, one step at a time, in
plain Python floats: the oracle for ``service.engine.seasonal_scaled``. Written from its
docstring: per candidate period P a pattern of ratios (target / amplitude) per phase, each
phase smoothed with rate GAMMA; the amplitude is the exponentially weighted mean of |target|
(rate ALPHA); candidate P predicts pattern[t mod P] * amplitude; step t uses the candidate whose
discounted squared errors are the smallest share of persistence's on the same steps (as the
seasonal member chooses), or has no prediction (None). At the stream's second step, when
its inputs hold a window of at least min_window of its own earlier targets (column j_1 equals
the first target, column j_{m+1} equals the first step's column j_m), the state restarts from
the history the first inputs hold, oldest first, and the first target again."""
import math


class SeasonalScaledReference:
    def __init__(self, periods, alpha, gamma, discount, min_scored, min_window=2):
        self.periods, self.alpha, self.gamma = periods, alpha, gamma
        self.discount, self.min_scored, self.min_window = discount, min_scored, min_window
        self.t = 0             # the step's index (seeded history included): its phase
        self.stream_steps = 0  # the stream's own steps
        self.first_inputs = None
        self.amplitude = None  # list of O floats once a target was seen
        self.last = None       # the previous step's target, None if it had none
        self.pattern = [[None] * P for P in periods]
        self.error = [0.0] * len(periods)
        self.reference = [0.0] * len(periods)
        self.scored = [0] * len(periods)

    def _candidate(self, c):
        ratio = self.pattern[c][self.t % self.periods[c]]
        if ratio is None or self.amplitude is None:
            return None
        return [r * a for r, a in zip(ratio, self.amplitude)]

    def choose(self):
        best, best_ratio = None, 1.0
        for c in range(len(self.periods)):
            if self.scored[c] < self.min_scored:
                continue
            ratio = self.error[c] / max(self.reference[c], 1e-300)
            if ratio < best_ratio:
                best, best_ratio = c, ratio
        return best

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
        fresh = SeasonalScaledReference(self.periods, self.alpha, self.gamma, self.discount,
                                        self.min_scored, self.min_window)
        for j in reversed(chain):
            fresh._learn([self.first_inputs[j]])
        fresh._learn(self.last)
        for name in ("t", "amplitude", "last", "pattern", "error", "reference", "scored"):
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

    def _learn(self, target):
        c = self.choose()
        pred = None if c is None else self._candidate(c)
        self.error = [e * self.discount for e in self.error]
        self.reference = [r * self.discount for r in self.reference]
        if target is not None:
            O = len(target)
            for k in range(len(self.periods)):
                guess = self._candidate(k)
                if guess is None or self.last is None:
                    continue
                self.error[k] += sum((g - y) ** 2 for g, y in zip(guess, target)) / O
                self.reference[k] += sum((p - y) ** 2 for p, y in zip(self.last, target)) / O
                self.scored[k] += 1
            if self.amplitude is None:
                self.amplitude = [abs(y) for y in target]
            else:
                self.amplitude = [(1 - self.alpha) * a + self.alpha * abs(y)
                                  for a, y in zip(self.amplitude, target)]
            ratio = [y / a if a > 0 else 0.0 for y, a in zip(target, self.amplitude)]
            for k, P in enumerate(self.periods):
                old = self.pattern[k][self.t % P]
                self.pattern[k][self.t % P] = ratio if old is None else [
                    (1 - self.gamma) * o + self.gamma * r for o, r in zip(old, ratio)]
        self.last = None if target is None else list(target)
        self.t += 1
        return pred if pred is None or all(math.isfinite(v) for v in pred) else None
