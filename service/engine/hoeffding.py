"""The Hoeffding tree member ``{"baseline": "tree"}`` of a dense classification model.

An incremental decision tree (Domingos & Hulten 2000, "Mining high-speed data streams"), as
River's HoeffdingTreeClassifier describes it: each leaf keeps its class counts and, per class
and feature, a Gaussian estimator (count, mean, M2 by Welford; min, max). Every GRACE steps a
leaf scores N_SPLITS thresholds per feature, evenly between the smallest and largest value any
class showed there, by information gain (base 2) of the split that the class Gaussians imply
(P(x <= threshold | class) times the class's count goes left); a branch with less than
MIN_BRANCH of the weight voids the candidate. The leaf splits on the best feature when its merit
beats the second best's (or no split's, 0) by more than the Hoeffding bound
sqrt(R^2 ln(1/DELTA) / 2n), R = log2(classes seen), n = the leaf's weight, or when the bound is
below TAU (a tie); not when it is pure or MAX_SHARE of it is one class. The children start
from the split's class counts with empty estimators. Leaves predict naive-Bayes-adaptively: the
class counts (majority class) or naive Bayes over the Gaussians, whichever has been right more
often at that leaf, smoothed toward uniform by ALPHA: p(c) = (n p'(c) + ALPHA) / (n + ALPHA C).

A class that is a threshold on one raw feature (River's Agrawal) is what a tree finds at once
and a small network and kNN (scaled distances over all features) find slowly; Hedge weighs the
tree against the others per stream by log loss.

State is fixed-size: at most MAX_NODES nodes (MAX_NODES // 2 splits, so at most
MAX_NODES // 2 + 1 leaves); node arrays (feature, threshold, left child, leaf slot) and leaf
slot arrays (class weights, estimators, NBA tallies). A leaf that splits hands its slot to its
left child; the right child takes the next free one. At the budget leaves keep learning but no
longer split. Per model when the model shares its weights (streams learn in batch order), per
stream otherwise, in the model or stream snapshot, as the kNN member keeps its window.
Steps join the tree when their class comes with them and learn is on.
"""
from __future__ import annotations

import math

import numpy as np

from .baseline import PooledMember, state_bytes
from .engine import CallStats

MAX_NODES = 127
_SQRT_HALF = math.sqrt(0.5)
GRACE = 200          # River's grace_period
DELTA = 1e-7         # River's delta
TAU = 0.05           # River's tau (tie threshold)
N_SPLITS = 10        # thresholds tried per feature (River's GaussianSplitter n_splits)
MIN_BRANCH = 0.01    # River's min_branch_fraction
MAX_SHARE = 0.99     # River's max_share_to_split
ALPHA = 0.1          # smoothing toward uniform, as the kNN member's
VAR_EPS = 1e-9       # naive Bayes' variance floor: VAR_EPS * (1 + mean^2)
_LOG_2PI = math.log(2.0 * math.pi)


def max_leaves(nodes: int) -> int:
    return nodes // 2 + 1


def model_shapes(I: int, C: int, nodes: int | None = None) -> dict:
    """The tree (float64 throughout, as the other members keep theirs)."""
    N = MAX_NODES if nodes is None else nodes
    L = max_leaves(N)
    return {"feature": ((N,), np.float64),    # split feature of an inner node; -1: a leaf
            "threshold": ((N,), np.float64),  # x[feature] <= threshold goes left
            "left": ((N,), np.float64),       # left child (the right one is left + 1); -1
            "slot": ((N,), np.float64),       # a leaf's slot in the arrays below; -1
            "nodes": ((), np.float64), "leaves": ((), np.float64),  # in use
            "class_weight": ((L, C), np.float64),
            "seen": ((L, C), np.float64),     # steps in the estimators (not the split's counts)
            "mean": ((L, C, I), np.float64), "m2": ((L, C, I), np.float64),
            "lo": ((L, C, I), np.float64), "hi": ((L, C, I), np.float64),
            "last_attempt": ((L,), np.float64),  # the leaf's weight at its last split attempt
            "mc_correct": ((L,), np.float64), "nb_correct": ((L,), np.float64)}


def stream_shapes() -> dict:
    return {"running": ((2,), np.float64), "steps": ((), np.float64)}


def fresh_tree(shapes: dict) -> dict:
    """A tree of one empty leaf (the root, slot 0)."""
    m = {name: np.zeros(shape, dtype) for name, (shape, dtype) in shapes.items()}
    for name in ("feature", "left", "slot"):
        m[name][:] = -1.0
    m["slot"][0] = 0.0
    m["nodes"], m["leaves"] = np.float64(1.0), np.float64(1.0)
    return m


def _leaf(m: dict, x: np.ndarray) -> int:
    n = 0
    feature, threshold, left = m["feature"], m["threshold"], m["left"]
    while feature[n] >= 0:
        n = int(left[n]) + (0 if x[int(feature[n])] <= threshold[n] else 1)
    return n


def _naive_bayes(m: dict, s: int, x: np.ndarray) -> np.ndarray | None:
    """log p(c) + sum_i log N(x_i; mean, var) per class seen at slot s, -inf for the others;
    None when no class has an estimator yet."""
    seen, w = m["seen"][s], m["class_weight"][s]
    have = (seen > 0) & (w > 0)
    if not have.any():
        return None
    mean = m["mean"][s]
    var = m["m2"][s] / np.maximum(seen - 1.0, 1.0)[:, None]
    np.maximum(var, VAR_EPS * (1.0 + mean * mean), out=var)
    d = x - mean
    ll = np.sum(d * d / var + np.log(var), axis=1)
    ll = np.log(np.where(have, w, 1.0) / w.sum()) - 0.5 * (ll + x.shape[0] * _LOG_2PI)
    ll[~have] = -np.inf
    return ll


def _probabilities(m: dict, s: int, nb: np.ndarray | None, total: float) -> np.ndarray:
    w = m["class_weight"][s]
    if nb is not None and m["nb_correct"][s] >= m["mc_correct"][s]:
        p = np.exp(nb - nb.max())
        p /= p.sum()
    else:
        p = w / total
    C = w.shape[0]
    return (total * p + ALPHA) / (total + ALPHA * C)


def _entropy(d: np.ndarray) -> float:
    total = d.sum()
    if total <= 0:
        return 0.0
    p = d[d > 0] / total
    return float(-np.sum(p * np.log2(p)))


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF of each value, as 0.5 erfc(-z / sqrt 2) (accurate in both tails).
    By hand with math.erfc: importing scipy.special took a quarter of a second of every server
    start, and these arrays hold one value per class."""
    return np.array([0.5 * math.erfc(-v * _SQRT_HALF) for v in z.ravel().tolist()]).reshape(z.shape)


def _best_splits(m: dict, s: int):
    """[(merit, feature, threshold, left class weights, right class weights)] per feature whose
    best threshold is valid, best first."""
    seen, w = m["seen"][s], m["class_weight"][s]
    have = seen > 0
    pre = _entropy(w)
    out = []
    for i in range(m["mean"].shape[2]):
        lo, hi = m["lo"][s][have, i], m["hi"][s][have, i]
        lo_all, hi_all = lo.min(), hi.max()
        if not lo_all < hi_all:
            continue
        step = (hi_all - lo_all) / (N_SPLITS + 1)
        n, mean = seen[have], m["mean"][s][have, i]
        sd = np.sqrt(m["m2"][s][have, i] / np.maximum(n - 1.0, 1.0))
        best = None
        for j in range(N_SPLITS):
            t = lo_all + step * (j + 1)
            inside = n * _normal_cdf((t - mean) / np.where(sd > 0, sd, 1.0))
            left = np.where(t < lo, 0.0, np.where(t >= hi, n, inside))
            right = n - left
            lw, rw = np.zeros_like(w), np.zeros_like(w)
            lw[have], rw[have] = left, right
            merit = _merit(pre, lw, rw)
            if best is None or merit > best[0]:
                best = (merit, i, t, lw, rw)
        if best is not None and best[0] > -np.inf:
            out.append(best)
    out.sort(key=lambda b: -b[0])
    return out


def _merit(pre: float, lw: np.ndarray, rw: np.ndarray) -> float:
    a, b = lw.sum(), rw.sum()
    total = a + b
    if total <= 0 or not (a > MIN_BRANCH * total and b > MIN_BRANCH * total):
        return -np.inf
    return pre - (a * _entropy(lw) + b * _entropy(rw)) / total


def _attempt_split(m: dict, n: int, s: int):
    w = m["class_weight"][s]
    total = w.sum()
    if (w > 0).sum() < 2 or w.max() >= MAX_SHARE * total:
        return
    if m["nodes"] + 2 > m["feature"].shape[0]:
        return  # the node budget is spent
    splits = _best_splits(m, s)
    if not splits:
        return
    second = splits[1][0] if len(splits) > 1 else 0.0
    second = max(second, 0.0)  # no split at all has merit 0
    R = math.log2(max((w > 0).sum(), 2))
    bound = math.sqrt(R * R * math.log(1.0 / DELTA) / (2.0 * total))
    merit, feature, threshold, lw, rw = splits[0]
    if merit <= 0 or not (merit - second > bound or bound < TAU):
        return
    a, r = int(m["nodes"]), int(m["leaves"])
    m["feature"][n], m["threshold"][n], m["left"][n], m["slot"][n] = feature, threshold, a, -1.0
    m["slot"][a], m["slot"][a + 1] = s, r
    for slot, dist in ((s, lw), (r, rw)):
        for name in ("seen", "mean", "m2", "lo", "hi"):
            m[name][slot] = 0.0
        m["class_weight"][slot] = dist
        m["last_attempt"][slot] = dist.sum()
        m["mc_correct"][slot] = m["nb_correct"][slot] = 0.0
    m["nodes"], m["leaves"] = np.float64(a + 2), np.float64(r + 1)


def _learn(m: dict, n: int, s: int, x: np.ndarray, c: int, nb: np.ndarray | None, total: float):
    w = m["class_weight"][s]
    if total > 0:  # naive-Bayes-adaptive tallies, from the prediction made for this step
        m["mc_correct"][s] += float(w.argmax() == c)
        if nb is not None:
            m["nb_correct"][s] += float(nb.argmax() == c)
    w[c] += 1.0
    total += 1.0
    k = m["seen"][s, c] + 1.0
    m["seen"][s, c] = k
    mean, lo, hi = m["mean"][s, c], m["lo"][s, c], m["hi"][s, c]
    d = x - mean
    mean += d / k
    m["m2"][s, c] += d * (x - mean)
    if k == 1.0:
        lo[:] = x
        hi[:] = x
    else:
        np.minimum(lo, x, out=lo)
        np.maximum(hi, x, out=hi)
    if total - m["last_attempt"][s] >= GRACE:
        m["last_attempt"][s] = total  # before the attempt: a split hands slot s to a child
        _attempt_split(m, n, s)


def predict_and_learn(m: dict, x: np.ndarray, y: np.ndarray | None, C: int) -> np.ndarray:
    """Probabilities [T, C] for T steps (NaN rows while the leaf reached is empty); with classes
    ``y`` each step is predicted, then learned. Updates ``m`` in place."""
    T = x.shape[0]
    probs = np.full((T, C), np.nan)
    for t in range(T):
        n = _leaf(m, x[t])
        s = int(m["slot"][n])
        nb = _naive_bayes(m, s, x[t])
        total = float(m["class_weight"][s].sum())
        if total > 0:
            probs[t] = _probabilities(m, s, nb, total)
        if y is not None:
            _learn(m, n, s, x[t], int(y[t]), nb, total)
    return probs


class HoeffdingTree(PooledMember):
    """A Hoeffding tree for every stream of a dense classification model."""

    kind = "tree"
    pooled = "tree"

    def __init__(self, input_size: int, num_classes: int, shared: bool, dtype=np.float32):
        self.I, self.C, self.shared = input_size, num_classes, shared
        self.dtype = np.dtype(dtype)
        self._model = fresh_tree(self._model_shapes()) if shared else None
        self._streams: dict = {}
        self.last_call = CallStats()

    def _model_shapes(self) -> dict:
        return model_shapes(self.I, self.C)

    def _stream_shapes(self) -> dict:
        return stream_shapes()

    def _new(self, shapes: dict) -> dict:
        return fresh_tree(shapes) if "feature" in shapes else super()._new(shapes)

    def step(self, stream_ids, batch: dict, fallback_preds, fallback_losses):
        return self._classify(stream_ids, batch, fallback_preds, fallback_losses,
                              lambda state, x, y: predict_and_learn(state, x, y, self.C))

    # snapshots --------------------------------------------------------------------------
    def _check_values(self, out: dict, what: str):
        """A restored tree must be one this member could have grown: node links in range,
        every node in use a leaf with a slot or an inner node with a feature, counts >= 0."""
        if "feature" not in out:
            return
        N, L = out["feature"].shape[0], out["last_attempt"].shape[0]
        nodes, leaves = out["nodes"], out["leaves"]

        def whole(a, lo, hi):
            return bool(np.all((a == np.round(a)) & (a >= lo) & (a <= hi)))

        ok = whole(nodes, 1, N) and whole(leaves, 1, L) and nodes == 2 * leaves - 1
        ok = ok and whole(out["feature"], -1, self.I - 1) and whole(out["left"], -1, N - 2)
        ok = ok and whole(out["slot"], -1, L - 1)
        if ok:
            used = np.arange(N) < nodes
            inner = out["feature"] >= 0
            left, slot = out["left"], out["slot"]
            # inner nodes in use point forward, leaves have no child, and every node but the
            # root is the child of exactly one inner node; the leaves hold the slots in use once
            ok = bool(np.all(~inner | used & (left > np.arange(N)) & (slot == -1))
                      and np.all(inner | (left == -1))
                      and np.all(used | (slot == -1)))
            children = np.sort(np.concatenate([left[inner], left[inner] + 1]))
            ok = ok and np.array_equal(children, np.arange(1, nodes))
            ok = ok and np.array_equal(np.sort(slot[used & ~inner]), np.arange(leaves))
        for name in ("class_weight", "seen", "last_attempt", "mc_correct", "nb_correct", "m2"):
            ok = ok and bool(np.all(out[name] >= 0))
        if not ok:
            raise ValueError(f"{what} of the baseline {self.kind} is not a tree it could have "
                             "grown (node links, leaf slots or counts out of range)")


def memory_per_model(input_size: int, num_classes: int, shared: bool) -> int:
    """Bytes the model keeps once: the tree, when streams share it."""
    return state_bytes(model_shapes(input_size, num_classes)) if shared else 0


def memory_per_stream(input_size: int, num_classes: int, shared: bool) -> int:
    own = stream_shapes()
    return state_bytes(own if shared else {**own, **model_shapes(input_size, num_classes)})
