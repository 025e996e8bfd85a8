"""The interpreted build of the kernels (kernels/interpreted.py), which a server started on a
cold numba cache answers with while the compiled build is made, against the compiled build.

Both run the same source, so predictions, losses and weights agree to float32 rounding. The
network cases learn with SGD: Adam divides by the root of its second moment, which turns a
gradient of exactly zero in one build and 1e-12 in the other into a step of a whole learning
rate (measured: 1e-3 relative after one chunk), so it would test Adam, not the builds.
"""
import numpy as np
import pytest

from rnnstream.service.engine import Spec, kernel_tier, make_engine, warm_up
from tests.kernels.engine_support import (CELL_VARIANTS, RULES, cell_id, make_spec, random_chunks,
                                          rule_id)

CLOSE = dict(rtol=1e-4, atol=1e-5)


def _run(spec, chunks, interpreted, ids=("a", "b")):
    """Each chunk's step results and the final weights, on one build."""
    (kernel_tier.use_interpreted if interpreted else kernel_tier.use_compiled)()
    try:
        engine = make_engine(spec)
        steps = [[np.array(r, dtype=np.float64) for r in engine.step(list(ids), **kw)[:2]]
                 for kw in chunks]
        weights = {k: np.array(v, dtype=np.float64) for k, v in engine.state_dict().items()}
        return steps, weights, engine
    finally:
        kernel_tier.use_compiled()


def _assert_same(spec, chunks, ids=("a", "b"), **close):
    close = close or CLOSE
    got_steps, got_w, _ = _run(spec, chunks, True, ids)
    want_steps, want_w, _ = _run(spec, chunks, False, ids)
    for c, (got, want) in enumerate(zip(got_steps, want_steps)):
        for what, g, w in zip(("predictions", "losses"), got, want):
            np.testing.assert_allclose(g, w, err_msg=f"chunk {c} {what}", **close)
    assert set(got_w) == set(want_w)
    for name in want_w:
        np.testing.assert_allclose(got_w[name], want_w[name], err_msg=name, **close)


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
@pytest.mark.parametrize("cell,variant", CELL_VARIANTS, ids=[cell_id(c, v) for c, v in CELL_VARIANTS])
@pytest.mark.parametrize("inp", ["dense", "token"])
def test_every_cell_and_rule_agrees_with_the_compiled_build(cell, variant, rule, inp):
    alg, k1, k2 = rule
    spec = make_spec(cell, variant, alg, k1, k2, inp=inp, layers=(4, 3))
    _assert_same(spec, random_chunks(spec, 2, [5, 3, 6]))


def test_the_feature_path_and_its_forecast_agree():
    spec = make_spec("lstm", algorithm="tbptt", k1=1, k2=4, normalize="shared", linear_skip=True,
                     input_taps=(1, 2), target_mode="next_input")
    chunks = random_chunks(spec, 2, [6, 4])
    _assert_same(spec, chunks)
    forecasts = [_run(spec, chunks, interpreted)[2].forecast("a", 5) for interpreted in (True, False)]
    np.testing.assert_allclose(*forecasts, **CLOSE)


def test_late_labels_agree():
    spec = make_spec("gru", algorithm="tbptt", k1=2, k2=3, max_label_delay=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 3)).astype(np.float32)
    y = rng.standard_normal((1, 2)).astype(np.float32)
    results = []
    for interpreted in (True, False):
        (kernel_tier.use_interpreted if interpreted else kernel_tier.use_compiled)()
        try:
            engine = make_engine(spec)
            engine.step(["a"], inputs=x)
            engine.step(["a"], labels=[([1, 3], np.stack([y[0], y[0]]))])
            results.append(engine.state_dict())
        finally:
            kernel_tier.use_compiled()
    for name in results[1]:
        np.testing.assert_allclose(results[0][name], results[1][name], err_msg=name, **CLOSE)


def test_the_byte_context_member_agrees():
    spec = Spec(vocab_size=256, num_classes=256, hidden_sizes=(2,), tbptt_k1=1, tbptt_k2=1,
                target_mode="next_input", context_table_bits=12, optimizer="sgd", lr=0.05,
                members=({}, {"baseline": "context"}))
    text = np.frombuffer(b"the cat sat on the mat; the cat sat on the hat. " * 2, np.uint8)
    chunks = [{"tokens": text[None, i:i + 16].astype(np.int64)} for i in range(0, text.size, 16)]
    _assert_same(spec, chunks, ids=("a",), rtol=1e-5, atol=1e-7)


def test_warm_up_loads_the_compiled_build_while_the_server_answers_interpreted():
    from rnnstream.kernels import chunk
    kernel_tier.use_interpreted()
    try:
        warm_up()
        assert kernel_tier.interpreting()  # the switch is the caller's, not warm_up's
        assert chunk.run_chunk.signatures  # but the compiled build is loaded
    finally:
        kernel_tier.use_compiled()
    assert not kernel_tier.interpreting()
