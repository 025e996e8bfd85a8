"""Whole trajectories of the engine against the NumPy reference, started from the same weights:
every prediction, every loss and the final weights, for every cell x variant x rule x sharing
x target mode x input kind x depth, with SGD."""

import itertools

import numpy as np
import pytest

from tests.kernels.engine_support import (ATOL, CELL_VARIANTS, RTOL, RULES, Engine,
                                          assert_weights_close, cell_id, make_spec,
                                          random_chunks, reference_for, rule_id)

CASES = list(itertools.product(CELL_VARIANTS, RULES, ("shared", "per_stream"),
                               ("explicit", "next_input"), ("dense", "token"), ((4,), (4, 3))))


def case_id(case):
    (cell, variant), rule, sharing, mode, inp, layers = case
    return f"{cell_id(cell, variant)}-{rule_id(rule)}-{sharing}-{mode}-{inp}-L{len(layers)}"


def run_both(spec, lengths=(3, 2, 3), B=2, learn=None):
    eng = Engine(spec)
    ref = reference_for(eng, spec)
    sids = [f"s{b}" for b in range(B)]
    learn = learn or [True] * len(lengths)
    results = []
    for kw, lrn in zip(random_chunks(spec, B, lengths), learn):
        got = eng.step(sids, learn=lrn, **kw)
        want = ref.step(sids, learn=lrn, **kw)
        results.append((got, want))
    return eng, ref, sids, results


def compare(spec, eng, ref, sids, results):
    for c, ((gp, gl), (wp, wl)) in enumerate(results):
        np.testing.assert_allclose(np.asarray(gp, np.float64), wp, rtol=RTOL, atol=ATOL,
                                   err_msg=f"predictions of chunk {c}")
        np.testing.assert_allclose(np.asarray(gl, np.float64), wl, rtol=RTOL, atol=ATOL,
                                   equal_nan=True, err_msg=f"losses of chunk {c}")
    if spec.sharing == "shared":
        assert_weights_close(eng.state_dict(), ref.params(), what="final weights")
    else:
        for sid in sids:
            assert_weights_close(eng.state_dict(stream_id=sid), ref.params(sid),
                                 what=f"final weights of {sid}")


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_trajectory_matches_reference(case):
    (cell, variant), (alg, k1, k2), sharing, mode, inp, layers = case
    spec = make_spec(cell, variant, alg, k1, k2, inp=inp, layers=layers, target_mode=mode,
                     sharing=sharing)
    compare(spec, *run_both(spec))


PREDICT_ONLY = list(itertools.product(CELL_VARIANTS, RULES))


@pytest.mark.parametrize("cell,variant,rule", [(c, v, r) for (c, v), r in PREDICT_ONLY],
                         ids=[f"{cell_id(c, v)}-{rule_id(r)}" for (c, v), r in PREDICT_ONLY])
def test_predict_only_chunk_keeps_learning_exact(cell, variant, rule):
    """learn=False in the middle: state and sensitivities advance, nothing is updated."""
    alg, k1, k2 = rule
    spec = make_spec(cell, variant, alg, k1, k2)
    compare(spec, *run_both(spec, lengths=(3, 2, 3), learn=[True, False, True]))


OPTIONS = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True), dict(clip_norm=0.05),
           dict(weight_decay=0.1), dict(momentum=0.5, clip_norm=0.05, weight_decay=0.1)]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_sgd_options_match_reference(rule, opts):
    alg, k1, k2 = rule
    spec = make_spec("lstm", {}, alg, k1, k2, sharing="shared", **opts)
    compare(spec, *run_both(spec, B=3))
