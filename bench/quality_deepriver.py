"""deep-river's rolling LSTM as a peer, run in its own virtualenv (it pins torch < 2.6).

The parent side (imported by bench.quality) writes the framed stream to a file, runs this
same file as a script with the venv's python, and reads the outputs back. The child side
imports only numpy, torch and deep_river.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VENV_PYTHON = Path(os.environ.get("RNNSTREAM_DEEPRIVER_PYTHON",
                                  "/work/venvs/deepriver/bin/python"))
_reason_cache: list = []


def unavailable_reason() -> str:
    """Empty when deep-river can run; otherwise one line saying why not."""
    if _reason_cache:
        return _reason_cache[0]
    if not VENV_PYTHON.exists():
        reason = (f"no virtualenv python at {VENV_PYTHON} (create it with `python -m venv "
                  "/work/venvs/deepriver` and pip install deep-river there; it pins "
                  "torch < 2.6)")
    else:
        p = subprocess.run([str(VENV_PYTHON), "-c", "import deep_river, torch"],
                           capture_output=True, text=True, timeout=300)
        reason = "" if p.returncode == 0 else (
            f"`import deep_river` fails in {VENV_PYTHON}: "
            f"{(p.stderr.strip().splitlines() or ['?'])[-1]}")
    _reason_cache.append(reason)
    return reason


def run_many(streams) -> dict:
    """{stream name: Timed outputs} for the given non-text streams, all in one child process,
    so torch starts once (~10 s) for the whole suite."""
    with tempfile.TemporaryDirectory() as d:
        args, outs = [], {}
        for k, stream in enumerate(streams):
            src, dst = Path(d) / f"in{k}.npz", Path(d) / f"out{k}.npz"
            np.savez(src, X=stream.X, y=stream.y, task=stream.task,
                     num_classes=stream.num_classes)
            args += [str(src), str(dst)]
            outs[stream.name] = dst
        p = subprocess.run([str(VENV_PYTHON), __file__, *args], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"deep-river child failed: {p.stderr[-2000:]}")
        result = {}
        for name, dst in outs.items():
            got = np.load(dst)
            result[name] = Timed(got["out"], float(got["seconds"]))
        return result


def run(stream):
    """Outputs in the benchmark's common form, computed in the deep-river venv."""
    return run_many([stream])[stream.name]


class Timed:
    """Outputs with the seconds the method itself took (the subprocess's start-up is not
    counted in the time per sample)."""

    def __init__(self, outputs, seconds):
        self.outputs, self.seconds = outputs, seconds


# child side: runs inside the deep-river venv ----------------------------------------------
def _child(src: str, dst: str) -> None:
    import torch
    from river import preprocessing

    torch.set_num_threads(1)
    data = np.load(src)
    X, y, task = data["X"], data["y"], str(data["task"])
    num_classes = int(data["num_classes"])
    n_features = X.shape[1]
    # the zoo's rolling LSTMs with their own defaults (window 10), behind River's scaler
    if task == "regression":
        from deep_river.regression.zoo import LSTMRegressor
        # targets standardised too, as for River's linear regression: its head starts near
        # 0 and levels of 40..300 would take it thousands of Adam steps to reach
        model = preprocessing.TargetStandardScaler(
            preprocessing.StandardScaler() | LSTMRegressor(n_features=n_features))
        out = np.empty(len(y))
    else:
        from deep_river.classification.zoo import LSTMClassifier
        model = preprocessing.StandardScaler() | LSTMClassifier(
            n_features=n_features, n_init_classes=num_classes)
        out = np.empty((len(y), num_classes))
    t0 = time.perf_counter()
    for i in range(len(y)):
        x = {f"x{j}": float(v) for j, v in enumerate(X[i])}
        if task == "regression":
            out[i] = float(model.predict_one(x) or 0.0)
            model.learn_one(x, float(y[i]))
        else:
            proba = model.predict_proba_one(x) or {}
            row = np.zeros(num_classes)
            for c, p in proba.items():
                # the classifier also lists placeholder classes ("Unobserved0", ...)
                if isinstance(c, (int, np.integer)) and 0 <= int(c) < num_classes:
                    row[int(c)] = max(float(p), 0.0)
            s = row.sum()
            out[i] = row / s if np.isfinite(s) and s > 0 else 1.0 / num_classes
            model.learn_one(x, int(y[i]))
    # the loop's own time: torch's import and start-up are not the model's per-sample cost
    np.savez(dst, out=out, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    for i in range(1, len(sys.argv), 2):
        _child(sys.argv[i], sys.argv[i + 1])
