"""Seasonal naive with the period found online, one stream, one step at a time, in plain
Python floats: the oracle for ``service.engine.seasonal``. Written from its docstring: step t
predicts y_{t-P} for the candidate P whose discounted squared errors are the smallest share of
persistence's (lag 1) on the same steps, among candidates with MIN_SCORED errors at least and
only when that share is below 1; otherwise it has no prediction (None)."""
import math


class SeasonalReference:
    def __init__(self, periods, discount, min_scored):
        self.periods, self.discount, self.min_scored = periods, discount, min_scored
        self.history = []  # every step's target (list of O floats) or None
        self.error = [0.0] * len(periods)
        self.reference = [0.0] * len(periods)
        self.scored = [0] * len(periods)

    def _lag(self, lag):
        return self.history[-lag] if len(self.history) >= lag else None

    def choose(self):
        best, best_ratio = None, 1.0
        for c, P in enumerate(self.periods):
            if self.scored[c] < self.min_scored:
                continue
            ratio = self.error[c] / max(self.reference[c], 1e-300)
            if ratio < best_ratio:
                best, best_ratio = P, ratio
        return best

    def step(self, target):
        """target: a list of O floats, or None for a step without one. Returns the
        prediction (a list of O floats) or None."""
        P = self.choose()
        pred = None if P is None else self._lag(P)
        if target is not None:
            last = self._lag(1)
            for c, P in enumerate(self.periods):
                old = self._lag(P)
                self.error[c] *= self.discount
                self.reference[c] *= self.discount
                if old is None or last is None:
                    continue
                self.error[c] += sum((a - b) ** 2 for a, b in zip(old, target)) / len(target)
                self.reference[c] += sum((a - b) ** 2 for a, b in zip(last, target)) / len(target)
                self.scored[c] += 1
        else:
            # no target: no errors, but the discount still applies (every step decays)
            self.error = [e * self.discount for e in self.error]
            self.reference = [r * self.discount for r in self.reference]
        self.history.append(None if target is None else list(target))
        return pred if pred is None or all(math.isfinite(v) for v in pred) else None
