"""Self-checks of the NumPy reference, before it judges anything else (as neon's
lstm_ref.py is itself checked with float64 central differences)."""

import dataclasses

import numpy as np
import pytest

from rnnstream.kernels import registry
from tests.reference.cases import (CELL_VARIANTS, all_configs, cell_id, make_config,
                                   random_params, random_sequence)
from tests.reference.cells import loss_and_grad, model_step, model_step_backward, zero_state
from tests.reference.learner import Learner, online_sgd
from tests.reference.params import flatten, layout, num_params, unflatten
from tests.reference.cells import state_size, state_slices
from tests.reference.rules import (SnAp1, accumulated_gradient, bptt_gradient, run_forward,
                                   sequence_loss, snap_units, step_jacobians)

T = 4
CONFIGS = all_configs()
IDS = [i for i, _ in CONFIGS]
CFGS = [c for _, c in CONFIGS]


def finite_difference(cfg, params, inps, targets, eps=1e-6):
    theta = flatten(cfg, params)
    g = np.zeros_like(theta)
    for i in range(theta.size):
        for sign in (1, -1):
            t = theta.copy()
            t[i] += sign * eps
            g[i] += sign * sequence_loss(cfg, unflatten(cfg, t), inps, targets)
    return g / (2 * eps)


def test_layout_roundtrip():
    cfg = make_config("lstm", (3, 4), lstm_variant="peephole", inp="token")
    p = random_params(cfg)
    assert [n for n, _ in layout(cfg)][0] == "embedding.weight"
    back = unflatten(cfg, flatten(cfg, p))
    assert all(np.array_equal(back[k], p[k]) for k in p)
    assert flatten(cfg, p).size == num_params(cfg)


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_bptt_equals_finite_differences(cfg):
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, T)
    _, grads = bptt_gradient(cfg, params, inps, targets)
    np.testing.assert_allclose(flatten(cfg, grads), finite_difference(cfg, params, inps, targets),
                               rtol=1e-6, atol=1e-8)


def test_unused_forget_rows_get_no_gradient():
    for variant in ("coupled", "no_forget"):
        cfg = make_config("lstm", (3,), lstm_variant=variant)
        params = random_params(cfg)
        _, g = bptt_gradient(cfg, params, *random_sequence(cfg, T))
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            assert not np.any(g[name][3:6])


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_rtrl_frozen_equals_bptt(cfg):
    cfg = dataclasses.replace(cfg, algorithm="rtrl")
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, T)
    _, grads = bptt_gradient(cfg, params, inps, targets)
    np.testing.assert_allclose(accumulated_gradient(cfg, params, inps, targets),
                               flatten(cfg, grads), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("recompute", ["per_step", "chain"])
@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_tbptt_full_window_equals_bptt(cfg, recompute):
    cfg = dataclasses.replace(cfg, algorithm="tbptt", tbptt_k1=T, tbptt_k2=T)
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, T)
    _, grads = bptt_gradient(cfg, params, inps, targets)
    np.testing.assert_allclose(accumulated_gradient(cfg, params, inps, targets, recompute=recompute),
                               flatten(cfg, grads), rtol=1e-9, atol=1e-12)


def test_tbptt_k1_smaller_than_k2_is_truncated_bptt_sum():
    """Frozen weights: TBPTT(2, 3) sums, at t = 2, 4, 6, the gradient of the last two losses
    back-propagated through the last three steps, started from the (constant) stored state."""
    cfg = make_config("gru", (3,), algorithm="tbptt", tbptt_k1=2, tbptt_k2=3)
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 6)
    expected = np.zeros(num_params(cfg))
    for end in (2, 4, 6):
        start = max(0, end - 3)
        _, state = run_forward(cfg, params, inps[:start])
        caches, _ = run_forward(cfg, params, inps[start:end], state)
        dS = None
        for i in reversed(range(end - start)):
            scored = start + i >= end - 2
            dz = loss_and_grad(cfg, caches[i]["z"], targets[start + i])[1] if scored else None
            dS, g, _ = model_step_backward(cfg, params, caches[i], dS, dz)
            expected += flatten(cfg, g)
    np.testing.assert_allclose(accumulated_gradient(cfg, params, inps, targets), expected,
                               rtol=1e-10, atol=1e-12)


def diagonal_recurrence(cfg, params):
    """Zero the off-diagonal entries of every gate block of weight_hh_l0 (an IndRNN's is a
    vector: diagonal already)."""
    H = cfg.hidden_sizes[0]
    w = params["weight_hh_l0"]
    if w.ndim == 1:
        return params
    mask = np.tile(np.eye(H), (cfg.gates, 1))
    params = dict(params)
    params["weight_hh_l0"] = w * mask
    return params


SNAP_EQ = [(c, kw) for c, kw in CELL_VARIANTS if c != "jordan"]


@pytest.mark.parametrize("head", ["regression", "classes"])
@pytest.mark.parametrize("cell,kw", SNAP_EQ, ids=[cell_id(c, k) for c, k in SNAP_EQ])
def test_snap1_equals_rtrl_with_diagonal_recurrence(cell, kw, head):
    cfg = make_config(cell, (3,), head, **kw)
    params = diagonal_recurrence(cfg, random_params(cfg))
    inps, targets = random_sequence(cfg, 5)
    rtrl = accumulated_gradient(dataclasses.replace(cfg, algorithm="rtrl"), params, inps, targets)
    snap = accumulated_gradient(dataclasses.replace(cfg, algorithm="snap1"), params, inps, targets)
    np.testing.assert_allclose(snap, rtrl, rtol=1e-9, atol=1e-12)


def test_snap1_differs_from_rtrl_with_full_recurrence():
    cfg = make_config("lstm", (3,))
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 5)
    rtrl = accumulated_gradient(dataclasses.replace(cfg, algorithm="rtrl"), params, inps, targets)
    snap = accumulated_gradient(dataclasses.replace(cfg, algorithm="snap1"), params, inps, targets)
    assert not np.allclose(snap, rtrl, rtol=1e-3)


@pytest.mark.parametrize("head", ["regression", "classes"])
def test_snap1_jordan_single_unit_equals_rtrl_on_layer_params(head):
    """With H = 1 the Jordan unit's own loop through y_{t-1} is the whole recurrence, so SnAp-1
    is exact for the layer's parameters (not for the head, whose influence through y it drops)."""
    cfg = make_config("jordan", (1,), head)
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 5)
    rtrl = accumulated_gradient(dataclasses.replace(cfg, algorithm="rtrl"), params, inps, targets)
    snap = accumulated_gradient(dataclasses.replace(cfg, algorithm="snap1"), params, inps, targets)
    rec = snap_units(cfg)[0] >= 0
    np.testing.assert_allclose(snap[rec], rtrl[rec], rtol=1e-9, atol=1e-12)


LEARN_CASES = [
    (f"{cell_id(c, kw)}-{alg}-{mode}", c, kw, alg, mode)
    for c, kw in CELL_VARIANTS for alg in ("rtrl", "tbptt", "snap1")
    for mode in ("explicit", "next_input")
]


def learn_config(cell, kw, alg, mode, inp="dense", layers=(3,)):
    head = "classes" if inp == "token" else "regression"
    cfg = make_config(cell, layers, head, inp, algorithm=alg, tbptt_k1=2, tbptt_k2=3,
                      target_mode=mode, lr=0.1, momentum=0.5, clip_norm=1.0, weight_decay=0.01, **kw)
    if inp == "token":
        cfg = dataclasses.replace(cfg, num_classes=cfg.vocab_size)
    elif mode == "next_input":
        cfg = dataclasses.replace(cfg, output_size=cfg.input_size)
    return cfg


@pytest.mark.parametrize("name,cell,kw,alg,mode", LEARN_CASES, ids=[c[0] for c in LEARN_CASES])
def test_chunked_equals_unchunked(name, cell, kw, alg, mode):
    cfg = learn_config(cell, kw, alg, mode, layers=(3, 2))
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 7)
    kw_in = {"inputs": inps}
    if mode == "explicit":
        kw_in["targets"] = targets
    whole = online_sgd(cfg, params, **kw_in)
    parts = online_sgd(cfg, params, chunk_sizes=[3, 1, 3], **kw_in)
    np.testing.assert_allclose(whole[0], parts[0], rtol=1e-12)
    np.testing.assert_allclose(whole[1], parts[1], rtol=1e-12, equal_nan=True)
    for k in whole[2]:
        np.testing.assert_allclose(whole[2][k], parts[2][k], rtol=1e-12)
    assert not np.allclose(flatten(cfg, whole[2]), flatten(cfg, params))


@pytest.mark.parametrize("inp", ["dense", "token"])
@pytest.mark.parametrize("name,cell,kw,alg,mode", [c for c in LEARN_CASES if c[4] == "explicit"],
                         ids=[c[0] for c in LEARN_CASES if c[4] == "explicit"])
def test_next_input_equals_explicit_shifted(name, cell, kw, alg, mode, inp):
    cfg = learn_config(cell, kw, alg, "next_input", inp=inp)
    params = random_params(cfg)
    inps, _ = random_sequence(cfg, 7)
    key = "tokens" if inp == "token" else "inputs"
    tkey = "target_classes" if inp == "token" else "targets"
    p_next, l_next, w_next = online_sgd(cfg, params, **{key: inps})
    ex = dataclasses.replace(cfg, target_mode="explicit")
    p_ex, l_ex, w_ex = online_sgd(ex, params, **{key: inps[:-1], tkey: inps[1:]})
    np.testing.assert_allclose(p_next[:-1], p_ex, rtol=1e-12)
    assert np.isnan(l_next[0])
    np.testing.assert_allclose(l_next[1:], l_ex, rtol=1e-12)
    for k in w_ex:
        np.testing.assert_allclose(w_next[k], w_ex[k], rtol=1e-12)


@pytest.mark.parametrize("alg", ["rtrl", "tbptt", "snap1"])
def test_shared_batch_sums_stream_gradients(alg):
    """Shared weights, two streams with lr=0 for the first chunk: the update of the second
    chunk's first step is the sum of the two streams' single-stream gradients."""
    cfg = learn_config("lstm", {}, alg, "explicit")
    cfg = dataclasses.replace(cfg, momentum=0.0, clip_norm=0.0, weight_decay=0.0, tbptt_k1=1,
                              tbptt_k2=2)
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 2)
    other, other_t = random_sequence(cfg, 2, seed=5)
    both = Learner(cfg, params)
    both.step(["a", "b"], inputs=np.stack([inps[:1], other[:1]]),
              targets=np.stack([targets[:1], other_t[:1]]))
    solo = []
    for x, y in ((inps, targets), (other, other_t)):
        lr = Learner(cfg, params)
        lr.step(["a"], inputs=x[None, :1], targets=y[None, :1])
        solo.append(flatten(cfg, lr.params("a")) - flatten(cfg, params))
    np.testing.assert_allclose(flatten(cfg, both.params()) - flatten(cfg, params),
                               solo[0] + solo[1], rtol=1e-10, atol=1e-14)


def test_per_stream_weights_are_independent():
    cfg = dataclasses.replace(learn_config("gru", {}, "rtrl", "explicit"), sharing="per_stream")
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 3)
    lr = Learner(cfg, params)
    lr.step(["a", "b"], inputs=np.stack([inps, inps * 0]), targets=np.stack([targets, targets]))
    alone = online_sgd(cfg, params, inputs=inps, targets=targets)[2]
    for k in alone:
        np.testing.assert_allclose(lr.params("a")[k], alone[k], rtol=1e-12)
    assert not np.allclose(flatten(cfg, lr.params("a")), flatten(cfg, lr.params("b")))


# the cells whose torch.nn module computes the same thing (the registry's torch_exact)
TORCH_CELLS = [(c, kw) for c, kw in CELL_VARIANTS
               if registry.CELLS[c].torch_exact(make_config(c, **kw))]


@pytest.mark.parametrize("cell,kw", TORCH_CELLS, ids=[c for c, _ in TORCH_CELLS])
def test_forward_matches_torch_modules(cell, kw):
    torch = pytest.importorskip("torch")
    cfg = make_config(cell, (3, 3), **kw)
    params = random_params(cfg)
    inps, _ = random_sequence(cfg, 5)
    mod = getattr(torch.nn, registry.CELLS[cell].torch_module)(
        cfg.input_size, 3, num_layers=2, batch_first=True).double()
    sd = {k: torch.tensor(v) for k, v in params.items() if not k.startswith("head.")}
    assert set(sd) == set(mod.state_dict())
    mod.load_state_dict(sd)
    out, _ = mod(torch.tensor(inps)[None])
    state = zero_state(cfg)
    for t in range(5):
        state, cache = model_step(cfg, params, state, inps[t])
        np.testing.assert_allclose(cache["h_last"], out[0, t].detach().numpy(), rtol=1e-12)


SNAP_MASKED = [(c, kw) for c, kw in CELL_VARIANTS if c != "jordan"]


@pytest.mark.parametrize("cell,kw", SNAP_MASKED, ids=[cell_id(c, k) for c, k in SNAP_MASKED])
def test_snap1_is_masked_rtrl_for_one_layer(cell, kw):
    """Full (not diagonal) recurrence, one layer: SnAp-1's J_jj is the true diagonal block of
    the state Jacobian, so its sensitivity is RTRL's recursion M_t = (J_t M_{t-1} + I_t) ⊙ mask
    with the mask keeping each parameter's own unit (Menick et al. 2020, eq. for SnAp-1)."""
    cfg = make_config(cell, (3,), **kw)
    params = random_params(cfg)
    inps, targets = random_sequence(cfg, 5)
    layer, unit = snap_units(cfg)
    slices = state_slices(cfg)
    mask = np.zeros((state_size(cfg), num_params(cfg)))
    for kind, k, a, b in slices:
        for p in np.flatnonzero(layer == k):
            mask[a + unit[p], p] = 1.0
    snap = SnAp1(cfg)
    M = np.zeros_like(mask)
    state = zero_state(cfg)
    for inp in inps:
        prev = state
        state, cache = model_step(cfg, params, prev, inp)
        J, I = step_jacobians(cfg, params, cache)
        M = (J @ M + I) * mask
        snap.observe(params, prev, inp, cache)
        h = [s for s in slices if s[0] == "h"][0]
        rec = layer >= 0
        np.testing.assert_allclose(snap.m_h[rec], M[h[2] + unit[rec], np.flatnonzero(rec)],
                                   rtol=1e-10, atol=1e-13)
