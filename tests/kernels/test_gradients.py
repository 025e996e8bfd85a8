"""The kernels' gradients against central finite differences (float64 path), RTRL against
BPTT with frozen weights, and SnAp-1 against RTRL where the recurrent matrices are diagonal.

The gradient a rule applied is read back from one SGD step with a tiny learning rate:
g = (θ_before - θ_after) / lr (for RTRL the sum of its per-step gradients, the weights moving
by O(lr) meanwhile, which the tolerance allows for).
"""
import numpy as np
import pytest

from rnnstream.service.engine import Engine, Spec
from tests.reference.cases import cell_cases

CASES = {
    **cell_cases(),  # every cell x variant of the registry
    "jordan-classes": dict(cell="jordan", output_size=0, num_classes=3),
    "lstm-stacked": dict(cell="lstm", hidden_sizes=(3, 2)),
    "gru-cho-stacked": dict(cell="gru", gru_variant="cho", hidden_sizes=(2, 3)),
    "elman-stacked-classes": dict(cell="elman", hidden_sizes=(3, 2), output_size=0,
                                  num_classes=3),
    "jordan-stacked": dict(cell="jordan", hidden_sizes=(3, 2)),
    "gru-tokens": dict(cell="gru", vocab_size=4, input_size=2, output_size=0, num_classes=3),
    # the linear skip: its own gradient, and (tokens) the embedding's through it; Jordan's
    # state carries y_t, so its RTRL tangent gets the skip's immediate term
    "elman-skip": dict(cell="elman", linear_skip=True),
    "jordan-skip": dict(cell="jordan", linear_skip=True),
    "jordan-classes-skip": dict(cell="jordan", output_size=0, num_classes=3, linear_skip=True),
    "lstm-stacked-skip": dict(cell="lstm", hidden_sizes=(3, 2), linear_skip=True),
    "gru-tokens-skip": dict(cell="gru", vocab_size=4, input_size=2, output_size=0,
                            num_classes=3, linear_skip=True),
}
T = 5
LR = 1e-7


def _spec(algorithm, **kw):
    # normalize off: the kernels' gradient is that of the loss they see; with standardised
    # targets the reported loss is in other units (tests/kernels/test_features.py checks that)
    base = dict(hidden_sizes=(3,), input_size=2, output_size=2, optimizer="sgd", lr=LR,
                algorithm=algorithm, tbptt_k1=T, tbptt_k2=T, seed=3, normalize="off")
    base.update(kw)
    return Spec(**base)


def _data(spec, rng):
    x = tok = y = cls = None
    if spec.vocab_size:
        tok = rng.integers(0, spec.vocab_size, (1, T))
    else:
        x = rng.standard_normal((1, T, spec.input_size))
    if spec.classify:
        cls = rng.integers(0, spec.num_classes, (1, T))
    else:
        y = rng.standard_normal((1, T, spec.output_size))
    return dict(inputs=x, tokens=tok, targets=y, target_classes=cls)


def _flat(engine):
    return np.concatenate([a.ravel() for a in engine.state_dict().values()])


def _unflat(template, v):
    out, o = {}, 0
    for name, a in template.items():
        out[name] = v[o:o + a.size].reshape(a.shape)
        o += a.size
    return out


def _applied_gradient(spec, data):
    eng = Engine(spec, dtype=np.float64)
    before = _flat(eng)
    eng.step(["s"], **data)
    return (before - _flat(eng)) / LR


def _summed_loss(spec, weights, data):
    eng = Engine(spec, dtype=np.float64)
    eng.load_state_dict(weights)
    _, losses = eng.step(["s"], learn=False, **data)
    return float(losses.sum())


def _finite_differences(spec, data, h=1e-6):
    template = Engine(spec, dtype=np.float64).state_dict()
    theta = np.concatenate([a.ravel() for a in template.values()])
    grad = np.zeros_like(theta)
    for p in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[p] += h
        down[p] -= h
        grad[p] = (_summed_loss(spec, _unflat(template, up), data)
                   - _summed_loss(spec, _unflat(template, down), data)) / (2 * h)
    return grad


def _rel_err(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bptt_and_rtrl_equal_finite_differences(case):
    kw = CASES[case]
    data = _data(_spec("tbptt", **kw), np.random.default_rng(len(case)))
    fd = _finite_differences(_spec("tbptt", **kw), data)
    assert np.abs(fd).max() > 1e-3  # the check has something to compare
    bptt = _applied_gradient(_spec("tbptt", **kw), data)  # k1 = k2 = T: full BPTT
    rtrl = _applied_gradient(_spec("rtrl", **kw), data)   # frozen up to O(lr)
    assert _rel_err(bptt, fd) < 1e-6
    assert _rel_err(rtrl, fd) < 1e-5


def _diagonalise(engine):
    """Zero every off-diagonal entry of each gate block of the recurrent matrices."""
    sd = engine.state_dict()
    W = sd["weight_hh_l0"]
    H = W.shape[1]
    for g in range(W.shape[0] // H):
        sd["weight_hh_l0"][g * H:(g + 1) * H] *= np.eye(H)
    engine.load_state_dict(sd)
    return sd


@pytest.mark.parametrize("case", ["elman", "lstm", "lstm-peephole", "lstm-coupled", "gru",
                                  "gru-cho"])
def test_snap1_equals_rtrl_with_diagonal_recurrence(case):
    """With diagonal recurrent blocks (kept so: the weights are frozen up to O(lr)) each unit
    only sees itself, so SnAp-1 drops nothing and its gradients equal RTRL's."""
    rng = np.random.default_rng(7)
    kw = dict(CASES[case], hidden_sizes=(4,), input_size=3, output_size=2, seed=11)
    x, y = rng.standard_normal((1, 12, 3)), rng.standard_normal((1, 12, 2))
    grads = {}
    for algorithm in ("rtrl", "snap1"):
        eng = Engine(_spec(algorithm, **kw), dtype=np.float64)
        _diagonalise(eng)
        before = _flat(eng)
        eng.step(["s"], inputs=x, targets=y)
        grads[algorithm] = (before - _flat(eng)) / LR
    assert np.abs(grads["rtrl"]).max() > 1e-2
    assert _rel_err(grads["snap1"], grads["rtrl"]) < 1e-5


def test_snap1_differs_from_rtrl_with_full_recurrence():
    """The approximation is real: with a dense W_hh SnAp-1 drops cross-unit influence."""
    rng = np.random.default_rng(5)
    kw = dict(cell="elman", hidden_sizes=(4,), input_size=3, output_size=2, optimizer="sgd",
              lr=0.1, seed=2)
    x, y = rng.standard_normal((1, 8, 3)), rng.standard_normal((1, 8, 2))
    weights = []
    for algorithm in ("rtrl", "snap1"):
        eng = Engine(Spec(algorithm=algorithm, **kw), dtype=np.float64)
        eng.step(["s"], inputs=x, targets=y)
        weights.append(eng.state_dict()["weight_hh_l0"])
    assert np.abs(weights[0] - weights[1]).max() > 1e-6
