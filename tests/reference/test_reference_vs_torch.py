"""The two oracles agree before they judge the engine: the reference's online SGD loop
(RTRL with an update every step, TBPTT(k, k), shared weights over a batch of streams) against
the hand-written PyTorch loops of tests/kernels/torch_loops.py, float64 on both sides."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.kernels.torch_loops import run_torch  # noqa: E402
from tests.reference.cases import CELL_VARIANTS, cell_id, make_config, random_params  # noqa: E402
from tests.reference.learner import Learner  # noqa: E402

CASES = [(c, kw, alg, inp) for c, kw in CELL_VARIANTS for alg in ("rtrl", "tbptt")
         for inp in ("dense", "token")]


def torch_spec(cfg):
    return SimpleNamespace(**dataclasses.asdict(cfg), optimizer="sgd", betas=(0.9, 0.999),
                           eps=None, alpha=0.99)


@pytest.mark.parametrize("cell,kw,alg,inp", CASES,
                         ids=[f"{cell_id(c, k)}-{a}-{i}" for c, k, a, i in CASES])
def test_reference_learner_matches_torch_loop(cell, kw, alg, inp):
    layers = (3, 3) if inp == "token" else (3,)
    cfg = make_config(cell, layers, "classes" if inp == "token" else "regression", inp,
                      algorithm=alg, tbptt_k1=3, tbptt_k2=3, lr=0.1, momentum=0.5,
                      nesterov=True, clip_norm=0.3, weight_decay=0.01, **kw)
    params = random_params(cfg)
    rng = np.random.default_rng(3)
    B, lengths = 2, (2, 4, 1)
    chunks = []
    for T in lengths:
        c = {}
        if inp == "token":
            c["tokens"] = rng.integers(0, cfg.vocab_size, (B, T))
            c["target_classes"] = rng.integers(0, cfg.num_classes, (B, T))
        else:
            c["inputs"] = rng.standard_normal((B, T, cfg.input_size))
            c["targets"] = rng.standard_normal((B, T, cfg.output_size))
        chunks.append(c)
    learner = Learner(cfg, params)
    got = [learner.step(["a", "b"], **c) for c in chunks]
    t_preds, t_losses, t_weights = run_torch(torch_spec(cfg), params, chunks)
    np.testing.assert_allclose(np.concatenate([p for p, _ in got], 1), t_preds, rtol=1e-10)
    np.testing.assert_allclose(np.concatenate([l for _, l in got], 1), t_losses, rtol=1e-10)
    for k, v in learner.params().items():
        np.testing.assert_allclose(v, t_weights[k], rtol=1e-9, atol=1e-12, err_msg=k)
