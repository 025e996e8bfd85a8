"""Hedge over K members, one stream, one step at a time, in plain Python floats: the oracle
for ``service.engine.hedge`` (Cesa-Bianchi & Lugosi 2006, the exponentially weighted average
forecaster, with discounted cumulative losses). Regression members are weighed by the root of
their squared error in target variances (their absolute error in standard deviations, for one
output), capped at the root of ``cap``."""
import math


class HedgeReference:
    """One stream. ``step`` takes the K members' prediction and loss of one step."""

    def __init__(self, K, eta, classify, next_input=False, discount=0.999, cap=16.0):
        self.K, self.eta, self.classify, self.next_input = K, eta, classify, next_input
        self.discount, self.cap = discount, cap
        self.L = [0.0] * K
        self.n, self.mean, self.m2 = 0, None, None  # Welford over regression targets
        self.last = None  # NEXT_INPUT: the combined prediction whose target comes next
        self.running = None

    def weights(self):
        low = min(self.L)
        z = [math.exp(-self.eta * (L - low)) for L in self.L]
        return [v / sum(z) for v in z]

    def combine(self, preds):
        """The weighted mean of the members whose prediction is finite."""
        ok = [k for k in range(self.K) if all(math.isfinite(v) for v in preds[k])]
        w = self.weights()
        total = sum(w[k] for k in ok)
        if total == 0:
            return [math.nan] * len(preds[0])
        return [sum(w[k] * preds[k][o] for k in ok) / total for o in range(len(preds[0]))]

    def step(self, preds, losses, target):
        """preds: K lists of O floats; losses: K floats (NaN: no target known); target: a
        class index or a list of O floats (for NEXT_INPUT: this step's input). Returns the
        combined prediction and its loss (NaN when none)."""
        loss = math.nan
        if self.next_input:
            loss = self._absorb(losses, target, self.last)
            mix = self.combine(preds)
            self.last = mix
        else:
            mix = self.combine(preds)
            loss = self._absorb(losses, target, mix)
        return mix, loss

    def _absorb(self, losses, target, prediction):
        if not any(math.isfinite(v) for v in losses):
            return math.nan
        if prediction is None:
            combined = math.nan
        elif self.classify:
            combined = -math.log(max(prediction[target], 1.1754943508222875e-38))
        else:
            combined = sum((p - y) ** 2 for p, y in zip(prediction, target)) / len(target)
        scale, update = 1.0, True
        if not self.classify:
            if self.n == 0:
                self.mean, self.m2 = [0.0] * len(target), [0.0] * len(target)
            self.n += 1
            for o, y in enumerate(target):
                delta = y - self.mean[o]
                self.mean[o] += delta / self.n
                self.m2[o] += delta * (y - self.mean[o])
            var = sum(m / max(self.n - 1, 1) for m in self.m2) / len(target)
            mean_square = sum(m * m for m in self.mean) / len(target)
            update = self.n >= 2 and var > 0 and var > 1e-10 * mean_square  # not rounding noise
            scale = var if update else 1.0
        if math.isfinite(combined):
            self.running = combined if self.running is None else 0.99 * self.running + 0.01 * combined
        if update:
            for k in range(self.K):
                h = losses[k] / scale
                h = min(h, self.cap) if math.isfinite(h) else self.cap
                if not self.classify:
                    h = math.sqrt(h)
                self.L[k] = self.discount * self.L[k] + h
        return combined
