"""Usage: python -m bench.persistence_check [WaterFlow] [TrumpApproval]

Prequential MAE (predict, then learn; one step per call) of the shape-only default on River's
level series, with and without the persistence member, against persistence itself."""
import math, sys, time
import numpy as np
from river import datasets
from rnnstream.service.engine import Spec, make_engine
from rnnstream.service.engine.spec import AUTO_MEMBERS


def load(name):
    X, Y = [], []
    for x, y in getattr(datasets, name)():
        if name == "WaterFlow":
            h = x["Time"].hour + x["Time"].minute / 60
            X.append([math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24)])
        else:
            X.append([float(v) for v in x.values()])
        Y.append([float(y)])
    return np.array(X, np.float32), np.array(Y, np.float32)


def run(spec, X, Y):
    eng = make_engine(spec)
    P = np.empty_like(Y)
    for t in range(len(X)):
        p, _ = eng.step(["s"], inputs=X[None, t:t + 1], targets=Y[None, t:t + 1])
        P[t] = p[0, 0]
    w = [m["weight"] for m in eng.stream_stats("s").get("members", [])]
    return (float(np.mean(np.abs(P[1:] - Y[1:]))), float(np.mean(np.abs(P - Y)))), w


for name in sys.argv[1:] or ["WaterFlow", "TrumpApproval"]:
    X, Y = load(name)
    I = X.shape[1]
    persist = float(np.mean(np.abs(Y[1:] - Y[:-1])))
    persist0 = float(np.mean(np.abs(np.concatenate([Y[:1], Y[1:] - Y[:-1]]))))  # step 0 predicts 0
    t0 = time.time()
    default, w5 = run(Spec(input_size=I, output_size=1), X, Y)
    four, _ = run(Spec(input_size=I, output_size=1, members=AUTO_MEMBERS), X, Y)
    (default, d0), (four, f0) = default, four
    print(f"{name} all steps (persistence predicts 0 at step 0): persistence {persist0:.4f} | "
          f"default {d0:.4f} ({d0 / persist0:.3f}x) | 4 network members {f0:.4f} ({f0 / persist0:.3f}x)")
    print(f"{name}: n={len(Y)} persistence MAE {persist:.4f} | default (5 members, with "
          f"persistence) {default:.4f} ({default / persist:.3f}x) | 4 network members "
          f"{four:.4f} ({four / persist:.3f}x) | final weights {np.round(w5, 3).tolist()} "
          f"| {time.time() - t0:.0f}s", flush=True)
