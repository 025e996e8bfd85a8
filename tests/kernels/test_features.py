"""Online normalisation, the linear skip and delay taps (kernels/README.md, "Features"): whole
trajectories of the engine against the NumPy reference, the caller's units, snapshots,
forecasts and the spec's refusals."""

import dataclasses
import itertools

import numpy as np
import pytest

from rnnstream.service.engine import Engine, Spec
from tests.kernels.engine_support import (CELL_VARIANTS, RULES, cell_id, make_spec,
                                          random_chunks, reference_for, rule_id)
from tests.kernels.test_engine_vs_reference import compare, run_both

NORMS = [dict(normalize="shared"), dict(normalize="per_stream"),
         dict(normalize="shared", normalize_decay=0.8)]
NORM_CASES = list(itertools.product(RULES, NORMS, ("explicit", "next_input"),
                                    ("shared", "per_stream")))


def norm_id(n):
    return n["normalize"] + (f"-decay{n['normalize_decay']}" if "normalize_decay" in n else "")


@pytest.mark.parametrize("rule,norm,mode,sharing", NORM_CASES,
                         ids=[f"{rule_id(r)}-{norm_id(n)}-{m}-{s}" for r, n, m, s in NORM_CASES])
def test_normalised_trajectory_matches_reference(rule, norm, mode, sharing):
    alg, k1, k2 = rule
    spec = make_spec("lstm", {}, alg, k1, k2, target_mode=mode, sharing=sharing, **norm)
    compare(spec, *run_both(spec, lengths=(3, 1, 4), B=3))


@pytest.mark.parametrize("head", ["regression", "classes"])
def test_normalised_inputs_of_a_classifier_match_reference(head):
    spec = make_spec("gru", {}, "tbptt", 2, 3, head=head, normalize="per_stream")
    compare(spec, *run_both(spec, lengths=(2, 3), B=2, learn=[True, False]))


SKIP_CASES = list(itertools.product(CELL_VARIANTS, RULES, ("dense", "token")))


@pytest.mark.parametrize("cell,variant,rule,inp", [(c, v, r, i) for (c, v), r, i in SKIP_CASES],
                         ids=[f"{cell_id(c, v)}-{rule_id(r)}-{i}" for (c, v), r, i in SKIP_CASES])
def test_linear_skip_matches_reference(cell, variant, rule, inp):
    alg, k1, k2 = rule
    spec = make_spec(cell, variant, alg, k1, k2, inp=inp, layers=(3, 2), linear_skip=True)
    compare(spec, *run_both(spec, lengths=(3, 2, 3), B=2))


TAP_CASES = [
    ("in", dict(input_taps=(1, 3))),
    ("out", dict(output_taps=(1, 2))),
    ("both-skip", dict(input_taps=(2,), output_taps=(1, 4), linear_skip=True)),
]


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
@pytest.mark.parametrize("name,taps", TAP_CASES, ids=[n for n, _ in TAP_CASES])
@pytest.mark.parametrize("head", ["regression", "classes"])
def test_taps_match_reference(rule, name, taps, head):
    alg, k1, k2 = rule
    spec = make_spec("elman", {}, alg, k1, k2, head=head, sharing="per_stream", **taps)
    compare(spec, *run_both(spec, lengths=(2, 3, 1, 2), B=2, learn=[True, False, True, True]))


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_input_taps_with_next_input_match_reference(rule):
    alg, k1, k2 = rule
    spec = make_spec("gru", {}, alg, k1, k2, target_mode="next_input", input_taps=(1, 2),
                     linear_skip=True)
    compare(spec, *run_both(spec, lengths=(3, 2, 2), B=2))


def _predict_only_chunks(spec, B, lengths, seed=3):
    """Chunks whose middle one carries no targets (predictions stand in for them)."""
    chunks = random_chunks(spec, B, lengths, seed=seed)
    chunks[1] = {k: v for k, v in chunks[1].items() if k in ("inputs", "tokens")}
    return chunks


@pytest.mark.parametrize("head", ["regression", "classes"])
def test_output_taps_without_targets_feed_predictions(head):
    spec = make_spec("lstm", {}, "tbptt", 2, 2, head=head, output_taps=(1, 2),
                     input_taps=(1,), normalize="shared", linear_skip=True)
    eng = Engine(spec)
    ref = reference_for(eng, spec)
    sids = ["a", "b"]
    for c, chunk in enumerate(_predict_only_chunks(spec, 2, (3, 4, 2))):
        lengths = np.array([chunk[next(iter(chunk))].shape[1], 2])
        learn = c != 1
        got = eng.step(sids, learn=learn, lengths=lengths, **chunk)
        want = ref_step_ragged(ref, sids, chunk, lengths, learn)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=1e-4, atol=1e-5,
                                       equal_nan=True, err_msg=f"chunk {c}")


def ref_step_ragged(ref, sids, chunk, lengths, learn):
    """The reference has no ragged batches: each stream's row on its own, in the engine's
    order (shared statistics make position order matter, so run position by position)."""
    T = max(lengths)
    B = len(sids)
    preds = np.full((B, T, ref.cfg.out_size), np.nan)
    losses = np.full((B, T), np.nan)
    for t in range(T):
        on = [b for b in range(B) if t < lengths[b]]
        kw = {k: np.asarray(v)[on, t:t + 1] for k, v in chunk.items()}
        p, l = ref.step([sids[b] for b in on], learn=learn, **kw)
        preds[on, t] = p[:, 0]
        losses[on, t] = l[:, 0]
    return preds, losses


def test_predictions_and_losses_are_in_the_callers_units():
    """Standardisation makes the model affine-equivariant: the same stream shifted and scaled
    gives the same predictions shifted and scaled, and losses scaled by the square."""
    spec = make_spec("lstm", {}, "tbptt", 4, 4, optimizer="adam", lr=0.01, normalize="shared",
                     input_taps=(1, 2), output_taps=(1,), linear_skip=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 40, 3)).astype(np.float64)
    y = rng.standard_normal((2, 40, 2)).astype(np.float64)
    a, c = 1000.0, 250.0
    outs = []
    for scale, shift in ((1.0, 0.0), (a, c)):
        eng = Engine(spec, dtype=np.float64)
        p, l = eng.step(["s", "t"], inputs=x * scale + shift, targets=y * scale + shift)
        outs.append((p, l, eng.stream_stats("s")["running_loss"]))
    (p0, l0, r0), (p1, l1, r1) = outs
    # from the second step on (the first is the running mean of nothing yet: 0)
    assert np.all(p1[:, 0] == 0.0) and np.all(p0[:, 0] == 0.0)
    np.testing.assert_allclose(p1[:, 1:], a * p0[:, 1:] + c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(l1[:, 1:], a * a * l0[:, 1:], rtol=1e-5)
    np.testing.assert_allclose(l1, ((p1 - (y * a + c)) ** 2).mean(-1), rtol=1e-9)
    running = l1[0, 0]
    for loss in l1[0, 1:]:
        running = 0.99 * running + 0.01 * loss
    assert np.isclose(r1, running, rtol=1e-9)


def test_first_steps_predict_the_running_mean():
    spec = Spec(cell="gru", hidden_sizes=(4,), input_size=1, output_size=1)
    eng = Engine(spec, dtype=np.float64)
    y = np.array([[[500.0], [520.0], [480.0]]])
    p, _ = eng.step(["s"], inputs=y, targets=y)
    assert p[0, 0, 0] == 0.0 and p[0, 1, 0] == 500.0  # no scale yet: the mean


def _engines_agree(spec, chunks, split):
    """Run all chunks; or run ``split`` of them, snapshot, restore into a fresh engine, and
    continue there: both must give the same results."""
    sids = ["a", "b"]
    one = Engine(spec)
    whole = [one.step(sids, **c) for c in chunks]
    two = Engine(spec)
    for c in chunks[:split]:
        two.step(sids, **c)
    three = Engine(spec)
    three.restore_model(two.snapshot_model())
    for sid in sids:
        three.restore_stream(sid, two.snapshot_stream(sid))
    rest = [three.step(sids, **c) for c in chunks[split:]]
    for (gp, gl), (wp, wl) in zip(rest, whole[split:]):
        np.testing.assert_array_equal(gp, wp)
        np.testing.assert_array_equal(gl, wl)
    for sid in sids:
        assert three.stream_stats(sid) == pytest.approx(one.stream_stats(sid), nan_ok=True)
        if spec.target_mode == "next_input":
            np.testing.assert_array_equal(three.forecast(sid, 4), one.forecast(sid, 4))


@pytest.mark.parametrize("norm", ["shared", "per_stream"])
@pytest.mark.parametrize("mode", ["explicit", "next_input"])
def test_snapshots_carry_statistics_and_taps(norm, mode):
    extra = dict(output_taps=(1, 3)) if mode == "explicit" else {}
    spec = make_spec("lstm", {}, "tbptt", 2, 3, target_mode=mode, normalize=norm,
                     input_taps=(1, 2), linear_skip=True, **extra)
    chunks = random_chunks(spec, 2, (3, 2, 4, 2), seed=11)
    _engines_agree(spec, chunks, 2)


@pytest.mark.parametrize("skip", [False, True])
def test_forecast_rolls_taps_with_its_predictions(skip):
    """A NEXT_INPUT forecast equals feeding each forecast value back as a predict-only chunk
    (statistics frozen: without normalisation the two are the same computation)."""
    spec = make_spec("gru", {}, "rtrl", target_mode="next_input", normalize="off",
                     input_taps=(1, 3), linear_skip=skip)
    eng = Engine(spec)
    for c in random_chunks(spec, 1, (4, 3), seed=2):
        eng.step(["s"], **c)
    fc = eng.forecast("s", 5)
    twin = Engine(spec)
    twin.restore_model(eng.snapshot_model())
    twin.restore_stream("s", eng.snapshot_stream("s"))
    for i in range(4):
        p, _ = twin.step(["s"], inputs=fc[i][None, None].astype(np.float32), learn=False)
        np.testing.assert_allclose(p[0, 0], fc[i + 1], rtol=1e-5, atol=1e-6)


def test_forecast_in_callers_units_with_normalisation():
    """With standardised data the forecast of a stream that settled on a constant level is
    that level (in the caller's units), whatever the level."""
    spec = Spec(cell="elman", hidden_sizes=(4,), input_size=1, output_size=1,
                target_mode="next_input", linear_skip=True, optimizer="adam", lr=0.05)
    levels = []
    for level in (3.0, 3000.0):
        eng = Engine(spec)
        x = (level + np.sin(np.arange(200) * 0.7)[None, :, None] * 0.001 * level)
        for chunk in np.split(x.astype(np.float32), 10, axis=1):
            eng.step(["s"], inputs=chunk)
        levels.append(eng.forecast("s", 3) / level)
    np.testing.assert_allclose(levels[0], levels[1], rtol=1e-3)
    assert np.all(np.abs(levels[0] - 1.0) < 0.01)


def test_spec_refusals_and_defaults():
    with pytest.raises(ValueError, match="input_size must be set"):
        Spec(output_size=1).validate()
    assert Spec(vocab_size=50, num_classes=50).input_size == 64
    assert Spec(vocab_size=50, num_classes=50, input_size=8).input_size == 8
    bad = [dict(normalize="sometimes"), dict(normalize_decay=1.0), dict(normalize_decay=-0.1),
           dict(input_taps=(0,)), dict(output_taps=(2, 2)), dict(input_taps=(5000,)),
           dict(target_mode="next_input", output_taps=(1,)),
           dict(device="cuda", linear_skip=True)]
    for kw in bad:
        fields = dict(input_size=1, output_size=1)
        fields.update(kw)
        with pytest.raises(ValueError):
            Spec(**fields).validate()
    with pytest.raises(ValueError, match="dense input"):
        Spec(vocab_size=5, num_classes=5, input_taps=(1,)).validate()
    assert Spec(input_size=1, output_size=1).normalize == "shared"
    # unset follows the weights: per-stream models keep their streams independent
    assert Spec(input_size=1, output_size=1, sharing="per_stream").normalize == "per_stream"
    assert Spec(input_size=1, output_size=1, sharing="per_stream",
                normalize="shared").normalize == "shared"


def test_stored_spec_without_normalize_keeps_running_without_it():
    d = Spec(input_size=2, output_size=1).to_dict()
    del d["normalize"]
    assert Spec.from_dict(d).normalize == "off"
    d = Spec(input_size=2, output_size=1, input_taps=(1, 2)).to_dict()
    assert Spec.from_dict(d) == Spec(input_size=2, output_size=1, input_taps=(1, 2))


def test_old_stream_snapshot_restores_with_fresh_features():
    spec = make_spec("lstm", {}, "tbptt", 2, 2, normalize="per_stream", input_taps=(1,))
    eng = Engine(spec)
    eng.step(["a"], **random_chunks(spec, 1, (3,))[0])
    snap = {k: v for k, v in eng.snapshot_stream("a").items()
            if k not in ("norm_x", "norm_y", "npend", "nrun", "tapx", "tapy", "tapn")}
    fresh = Engine(spec)
    fresh.restore_stream("a", snap)
    assert fresh.stream_stats("a")["steps"] == 3


def test_bad_chunk_changes_no_statistics():
    spec = make_spec("lstm", {}, "tbptt", 2, 2, normalize="shared", input_taps=(1,))
    eng = Engine(spec)
    c = random_chunks(spec, 1, (3,))[0]
    eng.step(["a"], **c)
    snap_m, snap_s = eng.snapshot_model(), eng.snapshot_stream("a")
    bad = dict(c, inputs=np.full_like(c["inputs"], np.nan))
    with pytest.raises(ValueError):
        eng.step(["a"], **bad)
    for k, v in eng.snapshot_model().items():
        np.testing.assert_array_equal(v, snap_m[k])
    for k, v in eng.snapshot_stream("a").items():
        np.testing.assert_array_equal(v, snap_s[k])


def test_an_error_value_does_not_set_the_scale_for_good():
    """A sensor's 1e30 is skipped by the kernel (its loss overflows) and by the statistics:
    the predictions after it stay on the data's scale."""
    spec = Spec(cell="gru", hidden_sizes=(4,), input_size=1, output_size=1, tbptt_k1=16, output_taps=())
    eng = Engine(spec)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 30, 1)).astype(np.float32)
    eng.step(["s"], inputs=x, targets=x)
    _, losses = eng.step(["s"], inputs=x[:, :1], targets=np.full((1, 1, 1), 1e30, np.float32))
    assert not np.isfinite(losses).any()
    p, losses = eng.step(["s"], inputs=x, targets=x)
    assert eng.stream_stats("s")["skipped_updates"] == 1  # the window that held it
    assert np.all(np.abs(p) < 10) and np.all(losses < 100)


@pytest.mark.parametrize("norm", ["shared", "per_stream"])
def test_statistics_export_as_running_mean_and_variance_and_import_back(norm):
    spec = make_spec("lstm", {}, "tbptt", 2, 2, normalize=norm, sharing=norm)
    eng = Engine(spec)
    chunk = random_chunks(spec, 1, (6,), seed=4)[0]
    eng.step(["a"], **chunk)
    sid = None if norm == "shared" else "a"
    stats = eng.statistics(sid)
    assert [n for n, _ in eng.statistics_layout()] == list(stats)
    x, y = chunk["inputs"][0].astype(np.float64), chunk["targets"][0].astype(np.float64)
    for what, data in (("input", x), ("target", y)):
        assert stats[f"{what}_norm.count"][0] == 6
        np.testing.assert_allclose(stats[f"{what}_norm.running_mean"], data.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats[f"{what}_norm.running_var"], data.var(0), rtol=1e-9)
    other = Engine(spec)
    other.step(["a"], **random_chunks(spec, 1, (2,), seed=9)[0])
    before = other.statistics(sid)
    bad = dict(other.state_dict(sid), **{k: v.copy() for k, v in stats.items()})
    bad["input_norm.running_var"] = -bad["input_norm.running_var"]
    with pytest.raises(ValueError):
        other.load_state_dict(bad, stream_id=sid)
    for k, v in other.statistics(sid).items():
        np.testing.assert_array_equal(v, before[k])
    other.load_state_dict(dict(eng.state_dict(sid), **stats), stream_id=sid)
    for k, v in other.statistics(sid).items():
        np.testing.assert_allclose(v, stats[k], rtol=1e-12)
    for e in (eng, other):  # a fresh state; the learned weights and statistics stay
        e.reset_stream("a")
    p1, _ = eng.step(["a"], learn=False, **chunk)
    p2, _ = other.step(["a"], learn=False, **chunk)
    np.testing.assert_allclose(p1, p2, rtol=1e-6, atol=1e-7)


def test_wire_spec_round_trips_the_feature_fields():
    from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
    from rnnstream.service.convert import spec_kwargs, spec_to_proto
    spec = Spec(name="m", input_size=3, output_size=1, normalize="per_stream", tbptt_k2=16,
                normalize_decay=0.99, input_taps=(1, 12), output_taps=(1,), linear_skip=True)
    back = Spec(**spec_kwargs(spec_to_proto(spec)))
    assert back == dataclasses.replace(spec, lr=spec.learning_rate)  # the wire names the rate in effect
    msg = pb.ModelSpec(name="m", cell=pb.CELL_LSTM, hidden_sizes=[4], input_size=2, output_size=1)
    assert Spec(**spec_kwargs(msg)).normalize == "shared"
    msg.sharing = pb.SHARING_PER_STREAM
    assert Spec(**spec_kwargs(msg)).normalize == "per_stream"
    assert Spec(**spec_kwargs(msg)).linear_skip is True  # the measured default (dense, cpu)
    tokens = pb.ModelSpec(name="t", cell=pb.CELL_GRU, hidden_sizes=[4], vocab_size=9, num_classes=9)
    assert Spec(**spec_kwargs(tokens)).input_size == 64
    msg.normalize_decay = 1.5
    with pytest.raises(Exception, match="normalize_decay"):
        spec_kwargs(msg)
    dense = pb.ModelSpec(name="d", cell=pb.CELL_GRU, hidden_sizes=[4], output_size=1)
    with pytest.raises(Exception, match="input_size"):
        spec_kwargs(dense)


def test_explicit_forecast_feeds_back_through_both_statistics():
    """Explicit targets and inputs have statistics of their own: the forecast's second value
    is what a predict-only step fed the first would predict (statistics as they are now)."""
    spec = make_spec("lstm", {}, "tbptt", 2, 2, input_taps=(1, 2), output_taps=(1,),
                     linear_skip=True, normalize="shared", input_size=2)
    eng = Engine(spec)
    rng = np.random.default_rng(8)
    for _ in range(3):
        x = (5 + 3 * rng.standard_normal((1, 4, 2))).astype(np.float32)
        eng.step(["s"], inputs=x, targets=(x * 2 - 7).astype(np.float32))
    fc = eng.forecast("s", 2)
    twin = Engine(spec)
    twin.restore_model(eng.snapshot_model())
    twin.restore_stream("s", eng.snapshot_stream("s"))
    p, _ = twin.step(["s"], inputs=fc[:1][None].astype(np.float32), learn=False)
    np.testing.assert_allclose(p[0, 0], fc[1], rtol=1e-4, atol=1e-4)


def test_token_forecast_with_a_skip_feeds_the_most_probable_token():
    spec = make_spec("gru", {}, "snap1", inp="token", target_mode="next_input",
                     linear_skip=True, optimizer="adam", lr=0.05)
    eng = Engine(spec)
    for c in random_chunks(spec, 1, (6, 5), seed=4):
        eng.step(["s"], **c)
    fc = eng.forecast("s", 4)
    twin = Engine(spec)
    twin.restore_model(eng.snapshot_model())
    twin.restore_stream("s", eng.snapshot_stream("s"))
    for i in range(3):
        p, _ = twin.step(["s"], tokens=np.array([[np.argmax(fc[i])]]), learn=False)
        np.testing.assert_allclose(p[0, 0], fc[i + 1], rtol=1e-5, atol=1e-6)
