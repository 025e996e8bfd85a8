"""The CUDA kernels (kernels/cuda/) against the CPU kernels, through the engine: same
predictions, losses, gradient norms, counters and final weights, for every cell x rule x
sharing on tiny sizes, each optimizer once, and the copy-back paths (state_dict, snapshots,
reset, pool growth).

These run only where numba.cuda runs them, so pytest does not collect this file by itself.
NUMBA_ENABLE_CUDASIM must be set before numba is imported and changes numba.cuda for the whole
process, so the CPU tests' process stays clean of it: CI runs the case files in their own
invocation, case by case (``NUMBA_ENABLE_CUDASIM=1 python -m pytest -n 2 tests/kernels/cuda_*_cases.py``),
and a plain ``python -m pytest`` runs them through ``test_cuda_simulator.py`` in a subprocess.
On a GPU machine ``python -m pytest tests/kernels/cuda_chunk_cases.py`` runs them on the device.
Launch sizes are patched small so that every launch spans several blocks (cuda_support.py).
"""

import numpy as np
import pytest

from rnnstream.kernels import registry
from rnnstream.service.engine import Engine, Spec
from rnnstream.service.engine.pool import OPTIONAL_FIELDS
from tests.kernels.cuda_support import small_launches  # noqa: F401 (autouse: launches span blocks)
from tests.reference.cases import cell_cases

pytestmark = pytest.mark.slow  # minutes of simulation: CI's second step

RTOL = 1e-4
ATOL = 1e-5


CELLS = {
    **cell_cases(),  # every cell x variant of the registry
    "jordan-classes": dict(cell="jordan", output_size=0, num_classes=3),
    "lstm-stacked": dict(cell="lstm", hidden_sizes=(2, 3)),
    "gru-tokens": dict(cell="gru", vocab_size=4, output_size=0, num_classes=3),
    # a cell whose layer 0 feeds back the output: its SnAp-1 loop runs through the layers above
    **{f"{name}-stacked": dict(cell=name, hidden_sizes=(2, 3, 2))
       for name, c in registry.CELLS.items() if c.feeds_back_output},
    **{f"{name}-stacked-classes": dict(cell=name, hidden_sizes=(2, 3), output_size=0,
                                       num_classes=3)
       for name, c in registry.CELLS.items() if c.feeds_back_output},
    # a diagonal recurrence: one layer's RTRL runs on the unit-local sensitivity (SnAp-1's
    # kernels), a stack's on the full one, through the diagonal products
    **{f"{name}-stacked": dict(cell=name, hidden_sizes=(2, 3))
       for name, c in registry.CELLS.items() if c.diagonal},
}
STREAMS = ["a", "b", "c"]


def _spec(device, **kw):
    base = dict(hidden_sizes=(2,), input_size=2, output_size=2, optimizer="sgd", lr=0.05,
                algorithm="tbptt", tbptt_k1=2, tbptt_k2=3, seed=5,
                linear_skip=False, output_taps=())  # the CPU's defaults; the CUDA kernels lack them
    base.update(kw)
    return Spec(device=device, **base)


def _chunk(spec, rng, T, B=3):
    d = {}
    if spec.vocab_size:
        d["tokens"] = rng.integers(0, spec.vocab_size, (B, T))
    else:
        d["inputs"] = rng.standard_normal((B, T, spec.input_size))
    if spec.target_mode == "next_input":
        return d
    if spec.classify:
        d["target_classes"] = rng.integers(0, spec.num_classes, (B, T))
    else:
        d["targets"] = rng.standard_normal((B, T, spec.output_size))
    return d


def _run(device, chunks=((3, None), (2, [2, 1, 2])), **kw):
    """Two chunks (the second ragged) on both engines; returns the engine and its record."""
    spec = _spec(device, **kw)
    eng = Engine(spec)
    rng = np.random.default_rng(11)
    record = []
    for T, lengths in chunks:
        data = _chunk(spec, rng, T)
        preds, losses = eng.step(STREAMS, lengths=lengths, **data)
        c = eng.last_call
        record.append((preds, losses, c.gradient_norms, c.updates, c.clipped, c.skipped,
                       c.steps))
    return eng, record


def _assert_same(cpu, gpu):
    (e0, r0), (e1, r1) = cpu, gpu
    for a, b in zip(r0, r1):
        np.testing.assert_allclose(b[0], a[0], rtol=RTOL, atol=ATOL)   # predictions
        np.testing.assert_allclose(b[1], a[1], rtol=RTOL, atol=ATOL)   # losses
        np.testing.assert_allclose(b[2], a[2], rtol=RTOL, atol=ATOL)   # gradient norms
        assert b[3:] == a[3:]                                          # counters
    ids = STREAMS if e0.pool.per_stream else [None]
    for sid in ids:
        w0, w1 = e0.state_dict(sid), e1.state_dict(sid)
        for name in w0:
            np.testing.assert_allclose(w1[name], w0[name], rtol=RTOL, atol=ATOL, err_msg=name)
    for sid in STREAMS:
        s0, s1 = e0.snapshot_stream(sid), e1.snapshot_stream(sid)
        for name in set(s0) - set(OPTIONAL_FIELDS):  # CPU-only forward results: not kept
            np.testing.assert_allclose(s1[name], s0[name], rtol=RTOL, atol=ATOL, err_msg=name)
        assert e0.stream_stats(sid) == pytest.approx(e1.stream_stats(sid), rel=RTOL,
                                                     nan_ok=True)


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
@pytest.mark.parametrize("rule", list(registry.RULES))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cell_rule_sharing_matches_cpu(cell, rule, sharing):
    kw = dict(CELLS[cell], algorithm=rule, sharing=sharing)
    _assert_same(_run("cpu", **kw), _run("cuda", **kw))


@pytest.mark.parametrize("opt", [
    dict(optimizer="adam", lr=0.01, weight_decay=0.01),
    dict(optimizer="rmsprop", momentum=0.5, clip_norm=0.1),
    dict(optimizer="adagrad", clip_norm=0.05),
    dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=0.1, clip_norm=0.2),
])
@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_optimizers_and_clipping_match_cpu(opt, sharing):
    kw = dict(cell="gru", algorithm="rtrl", sharing=sharing, **opt)
    _assert_same(_run("cpu", **kw), _run("cuda", **kw))


@pytest.mark.parametrize("kw", [
    dict(cell="lstm", target_mode="next_input", algorithm="tbptt"),
    dict(cell="elman", target_mode="next_input", algorithm="rtrl", sharing="per_stream"),
    dict(cell="gru", vocab_size=3, input_size=2, output_size=0, num_classes=3,
         target_mode="next_input", algorithm="snap1"),
], ids=["lstm-tbptt", "elman-rtrl-per-stream", "gru-tokens-snap1"])
def test_next_input_mode_matches_cpu(kw):
    _assert_same(_run("cpu", **kw), _run("cuda", **kw))


def test_predict_only_and_learn_false_match_cpu():
    out = {}
    for device in ("cpu", "cuda"):
        spec = _spec(device, cell="lstm", algorithm="tbptt", tbptt_k1=1)
        eng = Engine(spec)
        rng = np.random.default_rng(3)
        d = _chunk(spec, rng, 2)
        eng.step(STREAMS, **d)
        p1, l1 = eng.step(STREAMS, inputs=d["inputs"], learn=False, targets=d["targets"])
        p2, l2 = eng.step(STREAMS, inputs=d["inputs"], learn=False)  # no targets
        out[device] = (p1, l1, p2, eng.state_dict(), eng.snapshot_stream("b"))
        assert np.isnan(l2).all()
    for a, b in zip(out["cpu"][:3], out["cuda"][:3]):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
    for name, a in out["cpu"][3].items():
        np.testing.assert_allclose(out["cuda"][3][name], a, rtol=RTOL, atol=ATOL)


def test_checkpoint_round_trip_and_edits_continue_exactly():
    """state_dict/load_state_dict, stream and model snapshots, reset and pool growth on a
    CUDA model: each copied back on demand and pushed again, then training continues as on
    the CPU."""
    engines = {}
    for device in ("cpu", "cuda"):
        spec = _spec(device, cell="lstm", algorithm="snap1", sharing="per_stream")
        eng = Engine(spec)
        rng = np.random.default_rng(4)
        eng.step(STREAMS, **_chunk(spec, rng, 2))
        sd = eng.state_dict("a")
        sd["head.bias"] = sd["head.bias"] + 0.5
        eng.load_state_dict(sd, stream_id="b")
        snap = eng.snapshot_stream("a")
        eng.reset_stream("c")
        eng.step(["a", "b", "c", "d", "e"], **_chunk(spec, rng, 2, B=5))  # grows the pool
        eng.restore_stream("a", snap)
        eng.step(STREAMS, **_chunk(spec, rng, 2))
        engines[device] = eng
    for sid in ["a", "b", "c", "d", "e"]:
        for name, a in engines["cpu"].state_dict(sid).items():
            np.testing.assert_allclose(engines["cuda"].state_dict(sid)[name], a, rtol=RTOL,
                                       atol=ATOL)
        s0, s1 = engines["cpu"].snapshot_stream(sid), engines["cuda"].snapshot_stream(sid)
        for name in set(s0) - set(OPTIONAL_FIELDS):
            np.testing.assert_allclose(s1[name], s0[name], rtol=RTOL, atol=ATOL)


def test_shared_model_snapshot_restores_on_the_device():
    engines = []
    for device in ("cpu", "cuda"):
        spec = _spec(device, cell="elman", algorithm="tbptt", optimizer="adam", lr=0.01)
        eng = Engine(spec)
        rng = np.random.default_rng(8)
        eng.step(STREAMS, **_chunk(spec, rng, 2))
        snap = eng.snapshot_model()
        eng.step(STREAMS, **_chunk(spec, rng, 2))
        eng.restore_model(snap)
        eng.step(STREAMS, **_chunk(spec, rng, 2))
        engines.append(eng)
    for name, a in engines[0].state_dict().items():
        np.testing.assert_allclose(engines[1].state_dict()[name], a, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(engines[1].forecast("a", 0), engines[0].forecast("a", 0))
