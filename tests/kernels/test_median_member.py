"""The running-median member ({"baseline": "running_median"}) of an ensemble: its estimates equal
the plain-Python P^2 reference (across chunk boundaries, ragged lengths, ties and chunks without
targets); it abstains (NaN prediction, scored loss) until five targets; Hedge, weighing by
absolute error, moves to it on mostly-zero counts; snapshots continue exactly; forecasts;
refusals; the auto members."""

import numpy as np
import pytest

from rnnstream.service.engine import EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.service.engine import median
from tests.kernels.engine_support import make_spec, random_chunks, restored_and_continued
from tests.reference.median import MedianReference

MEDIAN = {"baseline": "running_median"}


def median_spec(**kw):
    return make_spec("lstm", None, "tbptt", 1, 4, members=({}, MEDIAN), **kw)


def test_estimates_equal_the_reference_and_it_abstains_until_five_targets():
    """The member alone, fed the engine's batch layout; the fallback (the first network
    member's prediction and loss) is a sentinel. Output 0 is continuous and skewed, output 1
    small counts full of ties (the markers' linear formula and equal heights)."""
    rng = np.random.default_rng(3)
    B, O = 2, 2
    member = median.Median(O)
    refs = [[MedianReference() for _ in range(O)] for _ in range(B)]
    stood = 0
    for T, lengths, has_targets in [(3, (3, 1), True), (1, (1, 0), True), (4, (4, 4), True),
                                    (6, (6, 6), False), (300, (300, 271), True),
                                    (1, (1, 1), True), (80, (80, 80), True)]:
        lengths = np.array(lengths, dtype=np.int64)
        y = np.stack([rng.lognormal(0.0, 1.0, (B, T)),
                      rng.poisson(0.4, (B, T)).astype(np.float64)], axis=2)
        y32 = y.astype(np.float32)
        batch = {"targets": y32, "lengths": lengths, "learn": 1 if has_targets else 2}
        fallback = np.full((B, T, O), -999.0, dtype=np.float32)
        preds, losses = member.step(["a", "b"], batch, fallback, np.full((B, T), 5.0, np.float32))
        for b in range(B):
            for t in range(lengths[b]):
                target = y32[b, t].astype(np.float64)
                want = [r.estimate() for r in refs[b]]
                if want[0] is None:  # nothing seen: the fallback's loss, and no prediction
                    assert np.isnan(preds[b, t]).all()
                    assert losses[b, t] == 5.0 or not has_targets
                else:
                    if refs[b][0].stands():
                        stood += 1
                        np.testing.assert_allclose(preds[b, t], want, rtol=1e-6)
                    else:  # abstains, scored by the exact median of what it has
                        assert np.isnan(preds[b, t]).all()
                    if has_targets:
                        np.testing.assert_allclose(
                            losses[b, t], np.mean((np.array(want) - target) ** 2), rtol=1e-5)
                    else:
                        assert np.isnan(losses[b, t])
                if has_targets:
                    for o in range(O):
                        refs[b][o].observe(float(target[o]))
            assert np.isnan(preds[b, lengths[b]:]).all() and np.isnan(losses[b, lengths[b]:]).all()
    assert stood > 600
    for b, sid in enumerate("ab"):
        s = member.snapshot_stream(sid)
        np.testing.assert_allclose(s["heights"][:, 0], refs[b][0].q[1:], rtol=1e-12)
        np.testing.assert_array_equal(s["positions"][:, 1], np.array(refs[b][1].n[1:]) - 1)
        assert member.stream_stats(sid)["steps"] == s["steps"] > s["count"]


def test_the_estimate_is_near_the_median_of_a_skewed_stream():
    rng = np.random.default_rng(1)
    state = median.fresh_state(1)
    y = rng.exponential(2.0, (5000, 1))
    median.run_stream(state, y, True)
    assert abs(state["heights"][2, 0] - 2.0 * np.log(2)) < 0.05  # the mean is 2.0


def test_hedge_moves_to_the_median_on_mostly_zero_counts_and_the_mix_beats_the_network():
    spec = make_spec("lstm", None, "tbptt", 1, 4, input_size=3, output_size=1, optimizer="adam",
                     lr=1e-2, members=({}, MEDIAN))
    ens = make_engine(spec)
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.standard_normal((1, n, 3)).astype(np.float32)  # inputs that say nothing
    y = (rng.poisson(0.3, (1, n, 1)) * (rng.random((1, n, 1)) < 0.3)).astype(np.float32)
    mix = np.empty(n)
    for t0 in range(0, n, 50):
        p, _ = ens.step(["c"], inputs=x[:, t0:t0 + 50], targets=y[:, t0:t0 + 50])
        mix[t0:t0 + 50] = p[0, :, 0]
    members = ens.stream_stats("c")["members"]
    assert members[1]["weight"] > 0.9
    net = make_engine(spec.member_spec(0))
    alone = np.concatenate([net.step(["c"], inputs=x[:, t0:t0 + 50],
                                     targets=y[:, t0:t0 + 50])[0][0, :, 0]
                            for t0 in range(0, n, 50)])
    tail = slice(n // 2, n)
    assert np.abs(mix[tail] - y[0, tail, 0]).mean() < 0.8 * np.abs(alone[tail] - y[0, tail, 0]).mean()


def test_while_it_abstains_the_mix_and_the_forecast_are_the_networks():
    spec = median_spec(sharing="per_stream", input_size=2)  # forecasts need output == input
    ens = EnsembleEngine(spec)
    net = make_engine(spec.member_spec(0))
    chunk = random_chunks(spec, 1, [4], seed=4)[0]
    preds, _ = ens.step(["s"], **chunk)
    alone, _ = net.step(["s"], **chunk)
    np.testing.assert_allclose(preds, alone, rtol=1e-6)  # four targets: the median abstains
    np.testing.assert_allclose(ens.forecast("s", 3), net.forecast("s", 3), rtol=1e-6)
    assert np.isnan(ens.members[1].forecast("s", 3, fallback=None)).all()
    ens.step(["s"], **random_chunks(spec, 1, [3], seed=5)[0])
    fc = ens.members[1].forecast("s", 3, fallback=None)
    heights = ens.snapshot_stream("s")["members.1.heights"]
    np.testing.assert_array_equal(fc, np.tile(heights[2], (3, 1)).astype(np.float32))
    w = np.array([m["weight"] for m in ens.stream_stats("s")["members"]])
    each = np.stack([ens.members[0].forecast("s", 3), fc]).astype(np.float64)
    np.testing.assert_allclose(ens.forecast("s", 3), np.einsum("k,kho->ho", w, each), rtol=1e-5)


def test_snapshot_round_trip_continues_exactly_reset_drop_and_memory():
    spec = median_spec(sharing="per_stream")
    one = EnsembleEngine(spec)
    chunks = random_chunks(spec, 1, [7, 5, 30, 4], seed=7)
    one.step(["s"], **chunks[0])
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    assert snap["members.1.count"] == 7 and snap["members.1.heights"].shape == (5, 2)
    two = restored_and_continued(spec, one, snap, model, chunks[1:])
    one.reset_stream("s")
    assert one.snapshot_stream("s")["members.1.count"] == 0
    assert np.isnan(one.snapshot_stream("s")["members.1.heights"]).all()
    one.drop_stream("s")
    assert not one.members[1].has_stream("s")
    for field, bad in (("heights", np.full((5, 2), np.inf)), ("count", np.float64(2.5)),
                       ("positions", np.full((5, 2), np.nan)), ("heights", np.zeros(3))):
        with pytest.raises(ValueError, match="running_median"):
            two.restore_stream("u", dict(snap, **{f"members.1.{field}": bad}))
    assert not any(m.has_stream("u") for m in two.members)
    assert (memory_per_stream(spec) - memory_per_stream(spec.member_spec(0))
            >= median.memory_per_stream(2) == 8 * (3 * 5 * 2 + 4))


@pytest.mark.parametrize("change,words", [
    (dict(head="classes"), "regression model"),
    (dict(target_mode="next_input"), "target_mode explicit"),
    (dict(max_label_delay=3), "max_label_delay"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError, match=words):
        make_engine(median_spec(**change))


def test_auto_members_of_an_explicit_regression_include_it():
    regress = Spec(input_size=3, output_size=1)
    assert MEDIAN in regress.members and regress.hedge_rate == pytest.approx(1.0)
    assert MEDIAN not in Spec(input_size=3, num_classes=2).members
    assert Spec(input_size=3, num_classes=2).hedge_rate == 1.0
