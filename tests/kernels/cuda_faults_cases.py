"""The CUDA optimizer's overflow guard against the CPU's (issue #10 item 2): finite targets of
1e19 overflow float32 inside a step (Adam's squared gradient, a sum of streams' gradients);
both twins must skip that step, count it alike and leave weights and moments finite and equal.

Run under NUMBA_ENABLE_CUDASIM=1 (see cuda_chunk_cases.py), or on a GPU with
``python -m pytest tests/kernels/cuda_faults_cases.py``. SGD is left to the CPU
test (tests/service/test_faults_kernels.py): its 2e16-sized steps make the next forward's
exp() overflow, which the simulator's Python math raises instead of returning inf.
"""

import numpy as np
import pytest

from rnnstream.service.engine import Engine, Spec
from rnnstream.service.engine.pool import OPTIONAL_FIELDS
from tests.kernels.cuda_support import small_launches  # noqa: F401 (autouse: launches span blocks)

pytestmark = pytest.mark.slow  # minutes of simulation: CI's second step


def _run(device, **kw):
    engine = Engine(Spec(cell="lstm", hidden_sizes=(2,), input_size=1, output_size=1, seed=3, device=device,
                         linear_skip=False, output_taps=(), normalize="off", **kw))
    x = np.full((2, 4, 1), 0.5, np.float32)
    y = np.concatenate([np.full((1, 4, 1), 1e19, np.float32), np.full((1, 4, 1), 0.25, np.float32)])
    for _ in range(3):
        engine.step(["bad", "calm"], inputs=x, targets=y)
    return engine


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
@pytest.mark.parametrize("opt", [dict(optimizer="adagrad"), dict(optimizer="adam"),
                                 dict(optimizer="rmsprop", momentum=0.5)],
                         ids=lambda d: d["optimizer"])
@pytest.mark.parametrize("rule", [dict(algorithm="rtrl"), dict(algorithm="tbptt", tbptt_k1=2, tbptt_k2=2)],
                         ids=lambda d: d["algorithm"])
def test_overflowing_steps_are_skipped_alike(sharing, opt, rule):
    cpu, gpu = _run("cpu", sharing=sharing, **opt, **rule), _run("cuda", sharing=sharing, **opt, **rule)
    for sid in ("bad", "calm"):
        assert gpu.stream_stats(sid)["skipped_updates"] == cpu.stream_stats(sid)["skipped_updates"]
        assert gpu.stream_stats(sid)["updates"] == cpu.stream_stats(sid)["updates"]
    if opt["optimizer"] == "adagrad":  # g * g = 4e38 overflows: the skip path runs on both
        assert cpu.stream_stats("bad")["skipped_updates"] > 0
    for snap_cpu, snap_gpu in [(cpu.snapshot_model(), gpu.snapshot_model()),
                               (cpu.snapshot_stream("bad"), gpu.snapshot_stream("bad"))]:
        for name, a in snap_cpu.items():
            if np.asarray(a).dtype.kind == "f" and name not in OPTIONAL_FIELDS:  # those are CPU-only caches
                assert np.isfinite(snap_gpu[name]).all(), name
                np.testing.assert_allclose(snap_gpu[name], a, rtol=1e-4, atol=1e-5, err_msg=name)
