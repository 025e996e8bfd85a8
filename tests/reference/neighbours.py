"""k nearest neighbours over a window of labelled steps, in plain Python, one step at a time:
the oracle for ``service.engine.neighbours`` (written from its docstring)."""
import math


class NeighboursReference:
    def __init__(self, num_classes, window, k, alpha, eps):
        self.C, self.window, self.k, self.alpha, self.eps = num_classes, window, k, alpha, eps
        self.points = []  # (inputs, class), oldest first, at most `window`
        self.n, self.mean, self.m2 = 0, None, None

    def predict(self, x):
        """Class probabilities, or None before the first labelled step."""
        if not self.points:
            return None
        scale = []
        for i in range(len(x)):
            var = self.m2[i] / max(self.n - 1, 1) if self.n >= 2 else 0.0
            scale.append(1.0 / var if var > 0 else 1.0)
        dist = sorted((math.sqrt(sum((p[i] - x[i]) ** 2 * scale[i] for i in range(len(x)))), c)
                      for p, c in self.points)[:self.k]
        votes = [0.0] * self.C
        for d, c in dist:
            votes[int(c)] += 1.0 / (d + self.eps)
        kk, total = len(dist), sum(votes)
        return [(kk * v / total + self.alpha) / (kk + self.alpha * self.C) for v in votes]

    def learn(self, x, c):
        self.points = (self.points + [(list(x), c)])[-self.window:]
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = [0.0] * len(x), [0.0] * len(x)
        for i, v in enumerate(x):
            d = v - self.mean[i]
            self.mean[i] += d / self.n
            self.m2[i] += d * (v - self.mean[i])
