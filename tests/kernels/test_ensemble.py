"""Online model selection (EnsembleEngine): the Hedge combination against the plain-Python
reference fed by independently run member engines; one member equals the plain engine; the
weight goes to a clearly better member; snapshots continue exactly; names; bad input."""

import math

import numpy as np
import pytest

from rnnstream.service.engine import Engine, EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.service.engine import hedge
from tests.kernels.engine_support import make_spec, random_chunks
from tests.reference.hedge import HedgeReference

MEMBERS = ({}, {"cell": "gru", "hidden_sizes": (4,), "lr": 0.02},
           {"cell": "elman", "optimizer": "adam", "lr": 0.01, "algorithm": "tbptt", "tbptt_k1": 2,
            "tbptt_k2": 3, "seed": 5})
CASES = {
    "regression": dict(inp="dense"),
    "classes": dict(inp="dense", head="classes"),
    "next-input-dense": dict(inp="dense", target_mode="next_input"),
    "next-input-tokens": dict(inp="token", target_mode="next_input"),
    "per-stream": dict(inp="dense", sharing="per_stream"),
}


def ensemble_spec(members=MEMBERS, hedge_rate=0.0, **kw):
    return make_spec("lstm", None, "rtrl", 4, 4, members=tuple(members), hedge_rate=hedge_rate,
                     **kw)


def with_ragged(chunks, B):
    """Give the middle chunk ragged rows (the last row one step short, padded)."""
    chunks = [dict(c) for c in chunks]
    T = next(iter(chunks[1].values())).shape[1]
    chunks[1]["lengths"] = np.array([T] * (B - 1) + [T - 1], dtype=np.int64)
    return chunks


@pytest.mark.parametrize("classify,next_input,T", [(False, False, 30), (True, False, 30),
                                                   (False, True, 30), (True, True, 30),
                                                   (False, False, 700), (True, True, 700)])
def test_hedge_math_equals_the_reference_with_diverged_members(classify, next_input, T):
    """Synthetic members, one of them diverging (inf loss, NaN prediction) part of the time;
    700 steps span several of the blocks the discounted sums are taken in."""
    rng = np.random.default_rng(7)
    K, B, O = 3, 2, 3
    raw = rng.standard_normal((K, B, T, O)) * [[[[1.0]]], [[[0.5]]], [[[3.0]]]]
    preds = np.exp(raw) / np.exp(raw).sum(axis=3, keepdims=True) if classify else raw * 40 + 100
    targets = rng.standard_normal((B, T, O)) * 40 + 100
    classes = rng.integers(0, O, size=(B, T))
    if classify:
        losses = -np.log(np.take_along_axis(preds, classes[None, :, :, None], 3)[..., 0])
    else:
        losses = ((preds - targets[None]) ** 2).mean(axis=3)
    preds[2, 0, 5:9] = np.nan
    losses[2, 0, 5:9] = np.inf
    losses[:, 1, :4] = np.nan  # no targets yet for stream 1
    lengths = np.array([T, T - 3])
    key = "tokens" if classify else "inputs"
    batch = {"lengths": lengths, ("tokens" if next_input else "tclass"): classes,
             ("inputs" if next_input else "targets"): targets}
    batch[key] = batch.get(key, classes if classify else targets)
    state = {n: np.stack([hedge.fresh_state(K, O)[n]] * B) for n in hedge.state_shapes(K, O)}
    eta = 0.3
    got_p, got_l = hedge.combine_chunk(state, preds, losses, batch, classify=classify,
                                       next_input=next_input, eta=eta)
    for b in range(B):
        ref = HedgeReference(K, eta, classify, next_input=next_input)
        for t in range(lengths[b]):
            target = int(classes[b, t]) if classify else targets[b, t].tolist()
            mix, loss = ref.step(preds[:, b, t].tolist(), losses[:, b, t].tolist(), target)
            np.testing.assert_allclose(got_p[b, t], mix, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(got_l[b, t], loss, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(hedge.weights(state["loss"][b], eta), ref.weights(), rtol=1e-9)
        assert np.isnan(got_p[b, lengths[b]:]).all()
    w = hedge.weights(state["loss"], eta)
    assert w[0, 2] < w[0, 0] and w[0, 2] < w[0, 1]  # the diverging member lost weight


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_combination_equals_the_reference_fed_by_plain_members(case):
    spec = ensemble_spec(hedge_rate=0.7 if case == "classes" else 0.0, **CASES[case])
    ens = EnsembleEngine(spec)
    plain = [Engine(spec.member_spec(k)) for k in range(len(MEMBERS))]
    sids = ["a", "b"]
    chunks = with_ragged(random_chunks(spec, len(sids), [3, 5, 4], seed=1), len(sids))
    eta = spec.hedge_rate or hedge.default_rate(spec.classify)
    refs = {sid: HedgeReference(len(MEMBERS), eta, spec.classify,
                                next_input=spec.target_mode == "next_input") for sid in sids}
    for chunk in chunks:
        preds, losses = ens.step(sids, **chunk)
        outs = [m.step(sids, **chunk) for m in plain]
        lengths = chunk.get("lengths", [preds.shape[1]] * len(sids))
        for b, sid in enumerate(sids):
            for t in range(lengths[b]):
                if spec.target_mode == "next_input":
                    target = (chunk["tokens"][b, t] if spec.vocab_size else
                              chunk["inputs"][b, t].astype(np.float64).tolist())
                elif spec.classify:
                    target = chunk["target_classes"][b, t]
                else:
                    target = chunk["targets"][b, t].astype(np.float64).tolist()
                mix, loss = refs[sid].step([o[0][b, t].astype(np.float64).tolist() for o in outs],
                                           [float(o[1][b, t]) for o in outs], target)
                np.testing.assert_allclose(preds[b, t], mix, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(losses[b, t], loss, rtol=1e-5, atol=1e-6)
            assert np.isnan(preds[b, lengths[b]:]).all() and np.isnan(losses[b, lengths[b]:]).all()
    for sid in sids:
        stats = ens.stream_stats(sid)
        np.testing.assert_allclose([m["weight"] for m in stats["members"]], refs[sid].weights(),
                                   rtol=1e-9)
        assert [m["running_loss"] for m in stats["members"]] == \
               [p.stream_stats(sid)["running_loss"] for p in plain]
        np.testing.assert_allclose(stats["running_loss"], refs[sid].running, rtol=1e-9)
        assert stats["steps"] == plain[0].stream_stats(sid)["steps"] == {"a": 12, "b": 11}[sid]
        assert stats["updates"] == sum(p.stream_stats(sid)["updates"] for p in plain)
    # learning exactly as alone: every member's weights equal its plain twin's
    for k, p in enumerate(plain):
        for name, a in p.state_dict(sids[0] if spec.sharing == "per_stream" else None).items():
            got = ens.state_dict(sids[0] if spec.sharing == "per_stream" else None)
            np.testing.assert_array_equal(got[f"members.{k}.{name}"], a)


def test_the_mix_of_probabilities_is_within_ln_k_over_eta_of_the_best_member():
    spec = ensemble_spec(head="classes", hedge_rate=1.0)
    ens = EnsembleEngine(spec)
    plain = [Engine(spec.member_spec(k)) for k in range(len(MEMBERS))]
    total, each = 0.0, np.zeros(len(MEMBERS))
    for chunk in random_chunks(spec, 1, [8] * 10, seed=3):
        total += float(ens.step(["s"], **chunk)[1].sum())
        each += [float(m.step(["s"], **chunk)[1].sum()) for m in plain]
    # Hedge's bound for exp-concave losses, loosened by the discount (< 1e-2 here)
    assert total <= each.min() + math.log(len(MEMBERS)) + 1e-2


def test_one_member_is_the_plain_engine_exactly():
    spec = make_spec("lstm", None, "tbptt", 2, 3, optimizer="adam", lr=0.01)
    ens = EnsembleEngine(make_spec("lstm", None, "tbptt", 2, 3, optimizer="adam", lr=0.01,
                                   members=({},)))
    plain = Engine(spec)
    for chunk in random_chunks(spec, 2, [3, 5, 1, 4], seed=2):
        p1, l1 = ens.step(["a", "b"], **chunk)
        p2, l2 = plain.step(["a", "b"], **chunk)
        np.testing.assert_array_equal(p1, p2)
        # the combination's loss is recomputed in float64 from the float32 mix: an ulp apart
        np.testing.assert_allclose(l1, l2, rtol=3e-7, atol=0)
    assert ens.stream_stats("a")["members"][0]["weight"] == 1.0
    # so the factory gives a one-member spec the plain engine of the merged spec: exact, free
    one = make_engine(make_spec(members=({"hidden_sizes": (5,)},)))
    assert type(one) is Engine and one.spec.hidden_sizes == (5,) and not one.spec.members
    assert type(make_engine(make_spec())) is Engine
    assert type(make_engine(ensemble_spec())) is EnsembleEngine


def test_the_weight_goes_to_the_clearly_better_member():
    # y = x1 - x2: member 1 (Adam, 0.05) learns it; member 0 (SGD, 1e-7) stays where it began
    spec = make_spec("elman", None, "tbptt", 1, 1, layers=(6,), output_size=1,
                     members=({"optimizer": "sgd", "lr": 1e-7}, {"optimizer": "adam", "lr": 0.05}))
    ens = EnsembleEngine(spec)
    rng = np.random.default_rng(0)
    for _ in range(40):
        x = rng.standard_normal((1, 10, 3)).astype(np.float32)
        y = (x[:, :, :1] - x[:, :, 1:2]).astype(np.float32)
        ens.step(["s"], inputs=x, targets=y)
    stats = ens.stream_stats("s")
    lazy, good = stats["members"]
    assert good["running_loss"] < 0.2 * lazy["running_loss"]
    assert good["weight"] > 0.99 and lazy["weight"] < 0.01
    assert stats["running_loss"] < 1.1 * good["running_loss"]


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_snapshot_round_trip_continues_exactly(sharing):
    spec = ensemble_spec(sharing=sharing)
    chunks = random_chunks(spec, 2, [3, 4, 2, 5, 3], seed=4)
    a = EnsembleEngine(spec)
    for c in chunks[:3]:
        a.step(["x", "y"], **c)
    model = a.snapshot_model()
    streams = {sid: a.snapshot_stream(sid) for sid in ("x", "y")}
    assert all(isinstance(v, np.ndarray) for v in list(model.values()) + list(streams["x"].values()))
    assert "hedge.loss" in streams["x"] and "members.2.state" in streams["x"]
    b = EnsembleEngine(spec)
    b.restore_model(model)
    for sid, d in streams.items():
        b.restore_stream(sid, d)
    assert b.stream_stats("x") == a.stream_stats("x")
    for c in chunks[3:]:
        pa, la = a.step(["x", "y"], **c)
        pb_, lb = b.step(["x", "y"], **c)
        np.testing.assert_array_equal(pa, pb_)
        np.testing.assert_array_equal(la, lb)
    for sid in ("x", "y"):
        assert b.stream_stats(sid) == a.stream_stats(sid)
        for name, value in a.state_dict(sid).items():
            np.testing.assert_array_equal(b.state_dict(sid)[name], value)
    assert (b.total_steps, b.total_updates) == (a.total_steps, a.total_updates)


def test_state_dict_names_layout_and_bad_imports_change_nothing():
    spec = ensemble_spec()
    ens = EnsembleEngine(spec)
    sd = ens.state_dict()
    for k in range(len(MEMBERS)):
        member = Engine(spec.member_spec(k)).state_dict()
        for name, a in member.items():
            np.testing.assert_array_equal(sd[f"members.{k}.{name}"], a)
    assert len(sd) == sum(len(Engine(spec.member_spec(k)).state_dict()) for k in range(3))
    layout = ens.param_layout()
    assert [n for n, _, _ in layout] == list(sd)
    assert sum(int(np.prod(s)) for _, s, _ in layout) == ens.num_parameters
    offsets = [o for _, _, o in layout]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    changed = {n: a + 1.0 for n, a in sd.items()}
    ens.load_state_dict(changed)
    assert all(np.array_equal(ens.state_dict()[n], a) for n, a in changed.items())
    for bad in ({**changed, "members.3.head.bias": np.zeros(2)},
                {n: a for n, a in changed.items() if n != "members.1.head.bias"},
                {**changed, "members.2.head.bias": np.full(2, np.nan)},
                {"head.bias": np.zeros(2)}):
        with pytest.raises(ValueError):
            ens.load_state_dict({n: a - 1.0 for n, a in bad.items()})
        assert all(np.array_equal(ens.state_dict()[n], a) for n, a in changed.items())
    expected = math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in changed.values()))
    assert ens.weight_norm() == pytest.approx(expected, rel=1e-6)


def test_bad_input_is_refused_before_any_member_moves():
    spec = ensemble_spec()
    ens = EnsembleEngine(spec)
    good = random_chunks(spec, 1, [3], seed=0)[0]
    ens.step(["s"], **good)
    before = {n: a.copy() for n, a in ens.state_dict().items()}
    stats = ens.stream_stats("s")
    with pytest.raises(ValueError, match="inputs must have shape"):
        ens.step(["s"], inputs=np.zeros((1, 3, 7), np.float32), targets=good["targets"])
    with pytest.raises(ValueError, match="NaN"):
        ens.step(["t"], inputs=np.full((1, 3, 3), np.nan, np.float32), targets=good["targets"])
    assert not ens.has_stream("t") and not any(m.has_stream("t") for m in ens.members)
    assert ens.stream_stats("s") == stats
    assert all(np.array_equal(ens.state_dict()[n], a) for n, a in before.items())
    with pytest.raises(ValueError, match="unknown stream"):
        ens.stream_stats("t")
    with pytest.raises(ValueError, match="not of this ensemble"):
        ens.restore_stream("u", {"state": np.zeros(3)})
    broken = ens.snapshot_stream("s")
    broken["members.2.state"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError):
        ens.restore_stream("u", broken)
    assert not any(m.has_stream("u") for m in ens.members)


@pytest.mark.parametrize("members,words", [
    (({"input_size": 3},), "may not set input_size"),
    (({"num_classes": 4},), "may not set num_classes"),
    (({"cell": "gru"}, {"tbptt_k1": -1}), "members[1]: tbptt_k1"),
    (({},) * 9, "at most 8"),
    (({"sharing": "per_stream"}, {}), "may not set sharing"),
])
def test_bad_members_are_refused_naming_the_member(members, words):
    with pytest.raises(ValueError) as info:
        make_engine(make_spec("lstm", None, "tbptt", 2, 2, members=members))
    assert words in str(info.value)
    with pytest.raises(ValueError, match="hedge_rate"):
        make_spec(members=({}, {}), hedge_rate=float("inf")).validate()


def test_reset_drop_forecast_and_memory():
    spec = ensemble_spec(target_mode="next_input")
    ens = EnsembleEngine(spec)
    for c in random_chunks(spec, 1, [6, 6], seed=5):
        ens.step(["s"], **c)
    w = np.array([m["weight"] for m in ens.stream_stats("s")["members"]])
    each = np.stack([m.forecast("s", 3) for m in ens.members])
    np.testing.assert_allclose(ens.forecast("s", 3), np.einsum("k,kho->ho", w, each), rtol=1e-5)
    ens.reset_stream("s")
    stats = ens.stream_stats("s")
    assert stats["steps"] == 0 and math.isnan(stats["running_loss"])
    assert [m["weight"] for m in stats["members"]] == pytest.approx([1 / 3] * 3)
    ens.drop_stream("s")
    assert not ens.has_stream("s") and ens.stream_ids() == []
    assert memory_per_stream(spec) > sum(memory_per_stream(spec.member_spec(k)) for k in range(3))
    plain = make_spec()
    assert memory_per_stream(plain) == memory_per_stream(Spec(**{**plain.to_dict(), "members": ()}))


def test_regression_weights_wait_for_a_target_scale_then_are_scale_free():
    """Constant targets give no scale, so the weights stay even; after that the same stream
    in other units (x1000) gets the same weights."""
    rng = np.random.default_rng(3)
    K, T, O = 2, 40, 1
    preds = rng.standard_normal((K, 1, T, O)) * [[[[0.3]]], [[[2.0]]]]
    targets = np.concatenate([np.full((1, 8, O), 0.7), rng.standard_normal((1, T - 8, O))], axis=1)
    got = []
    for unit in (1.0, 1000.0):
        p, y = preds * unit, targets * unit
        losses = ((p - y[None]) ** 2).mean(axis=3)
        state = {n: hedge.fresh_state(K, O)[n][None].copy() for n in hedge.state_shapes(K, O)}
        first = {"lengths": np.array([8]), "targets": y[:, :8]}
        hedge.combine_chunk(state, p[:, :, :8], losses[:, :, :8], first, classify=False,
                            next_input=False, eta=0.125)
        assert state["loss"][0].tolist() == [0.0, 0.0]
        rest = {"lengths": np.array([T - 8]), "targets": y[:, 8:]}
        hedge.combine_chunk(state, p[:, :, 8:], losses[:, :, 8:], rest, classify=False,
                            next_input=False, eta=0.125)
        got.append(hedge.weights(state["loss"][0], 0.125))
    np.testing.assert_allclose(got[0], got[1], rtol=1e-9)
    assert got[0][0] > 0.9  # the member with the smaller errors
