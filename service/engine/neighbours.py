"""The nearest-neighbour members ``{"baseline": "knn"}`` (K = 10) and ``{"baseline":
"knn_wide"}`` (K = K_WIDE = 30) of a dense classification model; they differ only in K.

Step t's class probabilities come from the K nearest of the last WINDOW labelled steps (inputs
scaled by the standard deviations of the inputs seen so far, Euclidean distance), each voting
for its class with weight 1 / (distance + EPS), smoothed toward uniform by ALPHA:
p(c) = (K' * votes(c) / sum(votes) + ALPHA) / (K' + ALPHA * C), K' = the neighbours found.
A low-dimensional nonlinear boundary (River's Bananas) is what a small recurrent network
updated once per step learns slowly and neighbours answer at once; Hedge weighs this member
against the networks by log loss per stream, so where neighbours are poor (many or noisy
features) the networks keep the weight. Few neighbours follow a fine boundary, many average
out label noise (River's SEA with 10% noise: log loss 0.422 at K = 10, 0.403 at K = 30;
ImageSegments the other way, 0.323 against 0.385): a shape-only classifier runs both and Hedge
picks per stream. Before the first labelled step the member predicts
what the ensemble's first network member predicts, with that member's loss.

A step joins the window when its class comes with it and learn is on (the window is what this
member learns). The window and the input statistics are per model when the model shares its
weights (the default; streams join in batch order) and per stream otherwise; they are in the
model or stream snapshot, so checkpoints and replays continue exactly. No exportable weights.
"""
from __future__ import annotations

import numpy as np

from .baseline import PooledMember, state_bytes, zeros_of
from .engine import CallStats

WINDOW = 1000
K = 10
K_WIDE = 30  # the knn_wide member's K
ALPHA = 0.1
EPS = 1e-3


def model_shapes(I: int) -> dict:
    """The window and the input statistics (float64)."""
    return {"inputs": ((WINDOW, I), np.float64),
            "classes": ((WINDOW,), np.float64),  # oldest first; the last `count`
            "count": ((), np.float64),           # labelled steps seen (all time)
            "input_mean": ((I,), np.float64), "input_m2": ((I,), np.float64)}


def stream_shapes() -> dict:
    return {"running": ((2,), np.float64), "steps": ((), np.float64)}


def predict_and_learn(m: dict, x: np.ndarray, y: np.ndarray | None, C: int, neighbours: int = K):
    """Probabilities [T, C] for T steps (NaN rows where no neighbour exists yet); with classes
    ``y`` the steps join the window (and the statistics) one after the other, each predicted
    before it joins. Updates ``m`` in place."""
    T, I = x.shape
    if T == 0:
        return np.zeros((0, C))
    n_old = int(min(m["count"], WINDOW))
    pts = np.concatenate([m["inputs"][WINDOW - n_old:], x])            # [n_old + T, I]
    cls = np.concatenate([m["classes"][WINDOW - n_old:], y if y is not None else np.zeros(T)])
    # the input statistics before each step: Welford carried in closed form over the chunk
    n0, mean0, m20 = float(m["count"]), m["input_mean"], m["input_m2"]
    if y is not None:
        d = x - mean0
        s1, s2 = np.cumsum(d, 0), np.cumsum(d * d, 0)
        n = n0 + np.arange(1, T + 1)[:, None]
        m2_after = m20 + s2 - s1 * s1 / n
        mean_after = mean0 + s1 / n
        n_before = n0 + np.arange(T)[:, None]
        m2_before = np.concatenate([m20[None], m2_after[:-1]])
    else:
        n_before = np.full((T, 1), n0)
        m2_before = np.repeat(m20[None], T, 0)
    var = m2_before / np.maximum(n_before - 1, 1)
    inv = np.where((n_before >= 2) & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 1.0)
    # squared scaled distances [T, n_old + T], by expansion
    D = ((pts * pts) @ inv.T).T - 2 * (x * inv) @ pts.T + np.sum(x * x * inv, 1)[:, None]
    D = np.maximum(D, 0.0)
    pos = n_old + np.arange(T)[:, None]                                 # each query's position
    j = np.arange(n_old + T)[None, :]
    new = y is not None
    usable = (j < pos) & (j >= pos - WINDOW) if new else (j < n_old)
    D = np.where(usable, D, np.inf)
    k = min(neighbours, D.shape[1])
    probs = np.full((T, C), np.nan)
    if k:
        idx = np.argpartition(D, k - 1, axis=1)[:, :k] if k < D.shape[1] else \
            np.broadcast_to(np.arange(D.shape[1]), (T, D.shape[1]))
        dist = np.sqrt(np.take_along_axis(D, idx, 1))
        found = np.isfinite(dist)
        w = np.where(found, 1.0 / (dist + EPS), 0.0)
        votes = np.zeros((T, C))
        np.add.at(votes, (np.repeat(np.arange(T), k), cls[idx].astype(np.int64).ravel()),
                  w.ravel())
        kk = found.sum(1)[:, None].astype(np.float64)
        total = votes.sum(1, keepdims=True)
        p = (kk * votes / np.where(total > 0, total, 1.0) + ALPHA) / (kk + ALPHA * C)
        probs = np.where(kk > 0, p, np.nan)
    if new:
        keep = np.concatenate([m["inputs"], x])[-WINDOW:]
        m["inputs"][:] = keep
        m["classes"][:] = np.concatenate([m["classes"], y])[-WINDOW:]
        m["count"] = np.float64(n0 + T)
        m["input_mean"], m["input_m2"] = mean_after[-1].copy(), m2_after[-1].copy()
    return probs


class Neighbours(PooledMember):
    """k nearest neighbours for every stream of a dense classification model."""

    pooled = "window"

    def __init__(self, input_size: int, num_classes: int, shared: bool, dtype=np.float32,
                 neighbours: int = K):
        self.I, self.C, self.shared, self.K = input_size, num_classes, shared, neighbours
        self.kind = "knn" if neighbours == K else "knn_wide"  # the member's name in messages
        self.dtype = np.dtype(dtype)
        self._model = zeros_of(model_shapes(input_size)) if shared else None
        self._streams: dict = {}
        self.last_call = CallStats()

    def _model_shapes(self) -> dict:
        return model_shapes(self.I)

    def _stream_shapes(self) -> dict:
        return stream_shapes()

    def step(self, stream_ids, batch: dict, fallback_preds, fallback_losses):
        return self._classify(stream_ids, batch, fallback_preds, fallback_losses,
                              lambda state, x, y: predict_and_learn(
                                  state, x, None if y is None else y.astype(np.float64), self.C, self.K))

    # streams ----------------------------------------------------------------------------
    def _check_values(self, out: dict, what: str):
        if "classes" in out and not np.all((out["classes"] >= 0) & (out["classes"] < self.C)
                                           & (out["classes"] == np.round(out["classes"]))):
            raise ValueError(f"{what} of the baseline {self.kind} holds a class outside 0..{self.C - 1}")


def memory_per_model(input_size: int, shared: bool) -> int:
    """Bytes the model keeps once: the window and input statistics, when streams share them."""
    return state_bytes(model_shapes(input_size)) if shared else 0


def memory_per_stream(input_size: int, shared: bool) -> int:
    return state_bytes(stream_shapes() if shared else {**stream_shapes(), **model_shapes(input_size)})
