"""Probes behind bench/results/quality_heldout.md: why the default loses where it loses.

    python -m bench.quality_probes members agrawal,sea     # each member's mean loss and weights
    python -m bench.quality_probes knn                     # the kNN member alone, K x smoothing
    python -m bench.quality_probes wide 20,50              # the default with knn_wide's K changed
    python -m bench.quality_probes rates 0.1,1.0           # the default with other Hedge rates
    python -m bench.quality_probes knn-regression          # a kNN regressor prototype, alone
    python -m bench.quality_probes tree                    # the Hoeffding tree member alone
    python -m bench.quality_probes with-tree               # the default with and without it
    python -m bench.quality_probes tree-settings           # the tree alone, grace x delta

Streams as bench.quality frames them: whole for the suite's, the first 3000 samples for the
held-out ones. Scores are the benchmark's (bench.quality.score).
"""
from __future__ import annotations

import sys

import numpy as np

from . import quality as q
from . import quality_data as qd
from . import quality_rnn as qr

HELDOUT_N = 3000
CLASSIFICATION_STREAMS = ("bananas", "phishing", "imagesegments", "shuttle", "hyperplane", "sea",
                          "agrawal", "randomrbf")
REGRESSION_STREAMS = ("airline", "waterflow", "trump", "chickweights", "sp500", "solarflare",
                      "friedman", "friedmandrift", "mv")


def load(name: str) -> qd.Stream:
    return qd.ALL_LOADERS[name]().prefix(HELDOUT_N if name in qd.HELDOUT else 0)


def members(names):
    """The default ensemble on one-entity streams: each member's mean step loss (log loss, or
    squared error in target standard deviations) and its Hedge weight after each chunk."""
    for name in names:
        s = load(name)
        eng = qr.make_engine(qr.build_spec(s))
        K = len(eng.spec.members)
        sums, weights = np.zeros(K), []
        classify = s.task == qd.CLASSIFICATION
        out = np.empty((s.n, s.num_classes if classify else 1))
        for a in range(0, s.n, qr.CHUNK):
            b = min(a + qr.CHUNK, s.n)
            out[a:b] = qr.step_rows(eng, s, a, b, classify)
            sums += [np.nansum(np.asarray(l)[0]) for l in eng.last_call.member_losses]
            weights.append([float(np.asarray(w)[0]) for w in eng.last_call.member_weights])
        print(f"{name}: score {q.score(s, out if classify else out[:, 0]):.4f}, eta {eng.eta}")
        for k in range(K):
            print(f"  {eng.spec.members[k]}: mean loss {sums[k] / s.n:.4f}, weights "
                  + " ".join(f"{w[k]:.2f}" for w in weights))


def knn(ks=(5, 10, 20, 30, 50), alphas=(0.1, 0.5)):
    """The nearest-neighbour member alone (service.engine.neighbours), log loss per stream."""
    from rnnstream.service.engine import neighbours as nb
    streams = [load(n) for n in CLASSIFICATION_STREAMS]
    print("K alpha " + " ".join(CLASSIFICATION_STREAMS))
    alpha0 = nb.ALPHA
    try:
        for k in ks:
            for alpha in alphas:
                nb.ALPHA = alpha
                row = []
                for s in streams:
                    m = nb._fresh(nb.model_shapes(s.X.shape[1]))
                    P = np.concatenate([nb.predict_and_learn(m, s.X[a:a + qr.CHUNK],
                                                             s.y[a:a + qr.CHUNK].astype(float),
                                                             s.num_classes, k)
                                        for a in range(0, s.n, qr.CHUNK)])
                    row.append(q.score(s, np.where(np.isfinite(P), P, 1.0 / s.num_classes)))
                print(k, alpha, " ".join(f"{r:.4f}" for r in row), flush=True)
    finally:
        nb.ALPHA = alpha0


def wide(ks):
    """The default on the classification streams with knn_wide's K set to each of ``ks``."""
    from rnnstream.service.engine import neighbours as nb
    streams = [load(n) for n in CLASSIFICATION_STREAMS]
    print("knn_wide K " + " ".join(CLASSIFICATION_STREAMS))
    k0 = nb.K_WIDE
    try:
        for k in ks:
            nb.K_WIDE = k
            print(k, " ".join(f"{q.score(s, qr.run(s)):.4f}" for s in streams), flush=True)
    finally:
        nb.K_WIDE = k0


def rates(values):
    """The default on the regression streams with Hedge rates other than its own (0: default)."""
    streams = [load(n) for n in REGRESSION_STREAMS]
    print("rate " + " ".join(REGRESSION_STREAMS))
    for r in (0.0, *values):
        print(r or "default", " ".join(f"{q.score(s, qr.run(s, {'hedge_rate': r} if r else None)):.4f}"
                                       for s in streams), flush=True)


def knn_regression(ks=(10, 30), window=1000):
    """Distance-weighted kNN regression on inputs scaled by the statistics so far, alone: the
    prototype of a regression member, MAE per stream (the previous target for the first two)."""
    for name in REGRESSION_STREAMS:
        s = load(name)
        X, y, res = s.X, s.y, []
        for K in ks:
            pred = np.zeros(s.n)
            for t in range(s.n):
                if t < 2:
                    pred[t] = y[t - 1] if t else 0.0
                    continue
                lo = max(0, t - window)
                sd = X[:t].std(0)
                sd[sd == 0] = 1.0
                d = (((X[lo:t] - X[t]) / sd) ** 2).sum(1)
                k = min(K, t - lo)
                idx = np.argpartition(d, k - 1)[:k]
                w = 1.0 / (np.sqrt(d[idx]) + 1e-3)
                pred[t] = (w * y[lo:t][idx]).sum() / w.sum()
            res.append(f"K={K} {q.score(s, pred):.4f}")
        print(name, " ".join(res), flush=True)


def tree(leaves=("nba", "mc"), budgets=(63, 127, 255)):
    """The Hoeffding tree member alone (service.engine.hoeffding), log loss per stream, with
    naive-Bayes-adaptive or majority-class leaves and node budgets; CPU microseconds per sample
    (process time: the box is shared)."""
    import time
    from rnnstream.service.engine import hoeffding as ht
    streams = [load(n) for n in CLASSIFICATION_STREAMS]
    print("leaves nodes " + " ".join(CLASSIFICATION_STREAMS) + " us/sample")
    nb0 = ht._naive_bayes
    try:
        for leaf in leaves:
            ht._naive_bayes = nb0 if leaf == "nba" else (lambda m, s, x: None)
            for nodes in budgets:
                row, spent, n = [], 0.0, 0
                for s in streams:
                    m = ht.fresh_tree(ht.model_shapes(s.X.shape[1], s.num_classes, nodes))
                    t0 = time.process_time()
                    P = np.concatenate([ht.predict_and_learn(m, s.X[a:a + qr.CHUNK],
                                                             s.y[a:a + qr.CHUNK], s.num_classes)
                                        for a in range(0, s.n, qr.CHUNK)])
                    spent, n = spent + time.process_time() - t0, n + s.n
                    row.append(q.score(s, np.where(np.isfinite(P), P, 1.0 / s.num_classes)))
                print(leaf, nodes, " ".join(f"{r:.4f}" for r in row), f"{1e6 * spent / n:.0f}",
                      flush=True)
    finally:
        ht._naive_bayes = nb0


def tree_settings(settings=((200, 1e-7), (100, 1e-7), (50, 1e-7), (200, 1e-5), (100, 1e-5))):
    """The Hoeffding tree member alone with other grace periods and deltas, log loss."""
    from rnnstream.service.engine import hoeffding as ht
    streams = [load(n) for n in CLASSIFICATION_STREAMS]
    print("grace delta " + " ".join(CLASSIFICATION_STREAMS))
    grace0, delta0 = ht.GRACE, ht.DELTA
    try:
        for grace, delta in settings:
            ht.GRACE, ht.DELTA = grace, delta
            row = []
            for s in streams:
                m = ht.fresh_tree(ht.model_shapes(s.X.shape[1], s.num_classes))
                P = ht.predict_and_learn(m, s.X, s.y, s.num_classes)
                row.append(q.score(s, np.where(np.isfinite(P), P, 1.0 / s.num_classes)))
            print(grace, delta, " ".join(f"{r:.4f}" for r in row), flush=True)
    finally:
        ht.GRACE, ht.DELTA = grace0, delta0


def with_tree(names=CLASSIFICATION_STREAMS):
    """The default on the classification streams without and with the tree member: log loss,
    CPU microseconds per sample (process time: the box is shared), the ratio with / without."""
    import time
    tree = {"baseline": "tree"}
    print("stream without(us) with(us) with/without")
    for name in names:
        s = load(name)
        without = tuple(m for m in qr.build_spec(s).members if m != tree)
        row = []
        for members in (without, without + (tree,)):
            t0 = time.process_time()
            row.append((q.score(s, qr.run(s, {"members": members})),
                        1e6 * (time.process_time() - t0) / s.n))
        print(name, f"{row[0][0]:.4f}({row[0][1]:.0f})", f"{row[1][0]:.4f}({row[1][1]:.0f})",
              f"{row[1][0] / row[0][0]:.4f}", flush=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("members", "knn", "wide", "rates", "knn-regression",
                                        "tree", "with-tree", "tree-settings"):
        print(__doc__)
        return 2
    what, rest = argv[0], argv[1:]
    if what in ("members", "wide", "rates", "with-tree"):
        from rnnstream.service.engine import warm_up
        warm_up()
    if what == "members":
        members((rest[0] if rest else "agrawal,sea,sp500,solarflare").split(","))
    elif what == "knn":
        knn()
    elif what == "wide":
        wide([int(k) for k in (rest[0] if rest else "20,30,50").split(",")])
    elif what == "rates":
        rates([float(r) for r in (rest[0] if rest else "0.1,1.0").split(",")])
    elif what == "tree":
        tree()
    elif what == "tree-settings":
        tree_settings()
    elif what == "with-tree":
        with_tree(rest[0].split(",") if rest else CLASSIFICATION_STREAMS)
    else:
        knn_regression()
    return 0


if __name__ == "__main__":
    sys.exit(main())
