"""Issue #10 item 2: finite but huge targets must never write NaN/Inf into weights or
optimizer state, for every optimizer x learning rule, with shared and per-stream weights.

The engine is driven directly (the door's float32-square bound is tested over gRPC in
test_faults.py): targets of 1e19 pass that bound, yet a squared gradient (Adagrad's g * g =
4e38), the steps that follow huge updates, or a sum of streams' gradients overflow float32.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnstream.service.engine import Engine, Spec

OPTIMIZERS = [dict(optimizer="sgd"), dict(optimizer="sgd", momentum=0.9, nesterov=True),
              dict(optimizer="adam"), dict(optimizer="rmsprop", momentum=0.5), dict(optimizer="adagrad")]
RULES = [dict(algorithm="rtrl"), dict(algorithm="tbptt", tbptt_k1=2, tbptt_k2=3), dict(algorithm="snap1")]


def _all_finite(d: dict) -> bool:
    return all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in d.values()
               if np.issubdtype(np.asarray(a).dtype, np.number))


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
@pytest.mark.parametrize("opt,rule", list(itertools.product(OPTIMIZERS, RULES)),
                         ids=lambda d: "-".join(f"{v}" for v in d.values()))
def test_huge_finite_targets_never_poison_weights(opt, rule, sharing):
    engine = Engine(Spec(name="m", cell="lstm", hidden_sizes=(4,), input_size=1, output_size=1,
                         normalize="off", output_taps=(),  # the kernels' guard itself, not standardisation
                         sharing=sharing, seed=3, **opt, **rule))
    x = np.full((1, 8, 1), 0.5, np.float32)
    calm = np.full((1, 8, 1), 0.25, np.float32)
    control_before, _ = engine.step(["control"], inputs=x, learn=False)
    for _ in range(6):
        # the culprit and two more streams in one batch: their summed gradient overflows too
        engine.step(["bad", "bad2", "control"], inputs=np.concatenate([x, x, x]),
                    targets=np.concatenate([np.full((2, 8, 1), 1e19, np.float32), calm]))
    assert engine.last_call is not None
    assert _all_finite(engine.snapshot_model()), "weights or optimizer state went non-finite"
    for sid in ("bad", "bad2", "control"):
        assert _all_finite(engine.snapshot_stream(sid)), f"stream {sid} state went non-finite"
        assert _all_finite(engine.state_dict(sid if sharing == "per_stream" else None))
    if opt["optimizer"] == "adagrad":  # its g * g = 4e38 overflows float32 for sure: skipped
        assert engine.stream_stats("bad")["skipped_updates"] > 0
    engine.reset_stream("control")
    control_after, _ = engine.step(["control"], inputs=x, learn=False)
    assert np.isfinite(control_after).all()
    if sharing == "per_stream":  # the control stream's own weights never saw the huge targets
        assert np.isfinite(control_before).all()
