"""The engine against hand-written PyTorch loops started from the same weights: every
prediction, every loss and the final weights, for every cell and every torch.optim optimizer,
with RTRL (update every step) and TBPTT(k, k); shared weights, streams' losses summed."""

import itertools

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.kernels.engine_support import (ATOL, CELL_VARIANTS, RTOL, Engine,  # noqa: E402
                                          assert_weights_close, cell_id, make_spec,
                                          random_chunks)
from tests.kernels.torch_loops import run_torch  # noqa: E402

OPTIMIZERS = {
    "sgd": dict(optimizer="sgd", lr=0.05),
    "sgd_momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
    "sgd_nesterov": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    "adam": dict(optimizer="adam", lr=0.01, betas=(0.8, 0.99)),
    "rmsprop": dict(optimizer="rmsprop", lr=0.01, alpha=0.9),
    "rmsprop_momentum": dict(optimizer="rmsprop", lr=0.01, alpha=0.9, momentum=0.5),
    "adagrad": dict(optimizer="adagrad", lr=0.05),
}
ALGOS = {"rtrl": dict(algorithm="rtrl"), "tbptt3": dict(algorithm="tbptt", k1=3, k2=3)}
# PyTorch has no online standardiser: these tables compare the kernels alone (the NumPy
# reference checks normalisation, tests/kernels/test_features.py)
NO_NORM = dict(normalize="off")


def run_and_compare(spec, B=3, lengths=(2, 4, 3)):
    eng = Engine(spec)
    start = eng.state_dict()
    chunks = random_chunks(spec, B, lengths, seed=7)
    sids = [f"s{b}" for b in range(B)]
    got = [eng.step(sids, **c) for c in chunks]
    preds = np.concatenate([np.asarray(p, np.float64) for p, _ in got], axis=1)
    losses = np.concatenate([np.asarray(l, np.float64) for _, l in got], axis=1)
    t_preds, t_losses, t_weights = run_torch(spec, start, chunks)
    np.testing.assert_allclose(preds, t_preds, rtol=RTOL, atol=ATOL, err_msg="predictions")
    np.testing.assert_allclose(losses, t_losses, rtol=RTOL, atol=ATOL, err_msg="losses")
    assert_weights_close(eng.state_dict(), t_weights, what="final weights")


CASES = list(itertools.product(CELL_VARIANTS, OPTIMIZERS, ALGOS))


@pytest.mark.parametrize("cell,variant,opt,algo", [(c, v, o, a) for (c, v), o, a in CASES],
                         ids=[f"{cell_id(c, v)}-{o}-{a}" for (c, v), o, a in CASES])
def test_matches_torch(cell, variant, opt, algo):
    spec = make_spec(cell, variant, layers=(4,), **OPTIMIZERS[opt], **ALGOS[algo], **NO_NORM)
    run_and_compare(spec)


EXTRAS = list(itertools.product(CELL_VARIANTS, ALGOS))


@pytest.mark.parametrize("cell,variant,algo", [(c, v, a) for (c, v), a in EXTRAS],
                         ids=[f"{cell_id(c, v)}-{a}" for (c, v), a in EXTRAS])
def test_clip_and_weight_decay_match_torch(cell, variant, algo):
    spec = make_spec(cell, variant, layers=(4,), optimizer="sgd", lr=0.05, momentum=0.5,
                     clip_norm=0.1, weight_decay=0.05, **ALGOS[algo], **NO_NORM)
    run_and_compare(spec)


@pytest.mark.parametrize("inp", ["token", "dense_classes"])
@pytest.mark.parametrize("cell,variant,algo", [(c, v, a) for (c, v), a in EXTRAS],
                         ids=[f"{cell_id(c, v)}-{a}" for (c, v), a in EXTRAS])
def test_two_layers_and_classes_match_torch(cell, variant, algo, inp):
    kind = {"token": dict(inp="token"), "dense_classes": dict(inp="dense", head="classes")}[inp]
    spec = make_spec(cell, variant, layers=(3, 3), optimizer="adam", lr=0.01, clip_norm=0.5,
                     **kind, **ALGOS[algo], **NO_NORM)
    run_and_compare(spec)


@pytest.mark.parametrize("algo", ALGOS)
def test_single_stream_matches_torch(algo):
    spec = make_spec("lstm", {}, layers=(4,), optimizer="rmsprop", lr=0.01, momentum=0.3,
                     **ALGOS[algo], **NO_NORM)
    run_and_compare(spec, B=1)


@pytest.mark.parametrize("inp", ["dense", "token"])
@pytest.mark.parametrize("cell,variant,algo", [(c, v, a) for (c, v), a in EXTRAS],
                         ids=[f"{cell_id(c, v)}-{a}" for (c, v), a in EXTRAS])
def test_linear_skip_matches_torch(cell, variant, algo, inp):
    """y = head(h) + nn.Linear(bias=False)(x): the skip's weights (zero at the start, so the
    load also moves them off zero) and, for tokens, the embedding through both paths."""
    spec = make_spec(cell, variant, layers=(4,), optimizer="adam", lr=0.02, inp=inp,
                     linear_skip=True, **ALGOS[algo], **NO_NORM)
    run_and_compare(spec)
