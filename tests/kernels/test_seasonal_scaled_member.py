"""The scaled seasonal member ({"baseline": "seasonal_scaled"}) of an ensemble: its
predictions equal the plain-Python reference (the first network member's where it has none,
across chunk boundaries, ragged lengths, chunks without targets, with and without inputs that
carry the stream's earlier targets); it reads the history a lag window holds; on a season whose
swing grows Hedge moves its weight there, and forecasts carry the pattern forward; snapshots
continue exactly; refusals; the shape-only regression default runs it."""

import numpy as np
import pytest

from rnnstream.service.engine import EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.service.engine import seasonal, seasonal_scaled
from tests.kernels.engine_support import make_spec, random_chunks, restored_and_continued
from tests.reference.seasonal_scaled import SeasonalScaledReference

SCALED = {"baseline": "seasonal_scaled"}


def reference():
    return SeasonalScaledReference(seasonal.PERIODS, seasonal_scaled.SMOOTHING,
                                   seasonal.DISCOUNT, seasonal.MIN_SCORED,
                                   seasonal_scaled.MIN_WINDOW, seasonal_scaled.FIRST_CHOSEN)


def growing_season(n, period, O, rng, noise=0.05):
    """[n + 8, O]: a season whose swing grows 1% a step, plus noise (8 steps of history)."""
    t = np.arange(-8, n)
    shape = rng.standard_normal((period, O)) * 3
    return shape[t % period] * (1.01 ** t)[:, None] + noise * rng.standard_normal((n + 8, O))


def test_lag_columns_reads_a_window_of_earlier_targets():
    first = np.array([9.0, 3.0, 7.0, 2.0, 5.0])  # columns 1, 3, 2 hold lags 1, 2, 3
    second = np.array([1.0, 4.0, 2.0, 3.0, 0.0])  # the first target was 4
    assert seasonal_scaled.lag_columns(first, second, 4.0) == [1, 3, 2]
    assert seasonal_scaled.lag_columns(first, second, 6.0) == []  # no lag 1
    assert seasonal_scaled.lag_columns(np.array([3.0, 8.0]), np.array([4.0, 0.0]), 4.0) == []
    # a window of one value only (zeros everywhere) is no evidence
    assert seasonal_scaled.lag_columns(np.zeros(4), np.zeros(4), 0.0) == []


def test_a_season_far_below_persistence_is_chosen_from_its_second_error():
    first, n = seasonal_scaled.FIRST_CHOSEN, seasonal.MIN_SCORED
    one = lambda e, scored, **kw: int(seasonal.choose(  # noqa: E731
        np.array([e]), np.array([1.0]), np.array([scored]), **kw))
    assert one(0.9 * first / n, first, first=first) == 0    # under n / MIN_SCORED of persistence
    assert one(1.1 * first / n, first, first=first) == -1   # not far enough under it yet
    assert one(0.01, first - 1, first=first) == -1          # too few errors
    assert one(0.9 * first / n, first) == -1  # the seasonal member's rule is unchanged
    assert one(0.9, n, first=first) == 0
    # ranked by share / bound: 2 errors at share 0.1 (0.4 of its bound) beat 8 at share 0.5
    pick = lambda e: int(seasonal.choose(np.array(e), np.ones(2), np.array([2, n]),  # noqa: E731
                                         first=2))
    assert pick([0.1, 0.5]) == 0 and pick([0.2, 0.5]) == 1


@pytest.mark.parametrize("smoothing", [None, ((0.02, 0.3), (0.02, 0.7), (0.1, 0.5))],
                         ids=["default", "three pairs"])
def test_predictions_equal_the_reference_with_the_fallback_where_it_has_none(monkeypatch,
                                                                             smoothing):
    """The member alone, fed the engine's batch layout: stream "a" sends a lag window of its
    own targets (so its history is read at its second step), stream "b" random inputs; ragged
    lengths, a one-step chunk, a chunk without targets. The fallback is a sentinel, so every
    step shows whether the member had a prediction of its own. Also with several smoothing
    pairs, chosen online beside the periods."""
    if smoothing is not None:
        monkeypatch.setattr(seasonal_scaled, "SMOOTHING", smoothing)
        monkeypatch.setattr(seasonal_scaled, "_ALPHA", np.array([a for a, _ in smoothing])[:, None])
        monkeypatch.setattr(seasonal_scaled, "_GAMMA",
                            np.array([g for _, g in smoothing])[:, None, None])
    rng = np.random.default_rng(3)
    B, O, I, period, n = 2, 1, 5, 7, 400
    member = seasonal_scaled.SeasonalScaled(O, I)
    refs = [reference() for _ in range(B)]
    series = np.stack([growing_season(n, period, O, rng) for _ in range(B)])  # [B, n + 8, O]
    # stream a: inputs [y_{t-1}, noise, y_{t-2}, y_{t-3}, y_{t-4}]; stream b: noise
    lagged = np.stack([series[0, 8 - k:8 - k + n, 0] for k in (1, 2, 3, 4)], axis=1)
    inputs = rng.standard_normal((B, n, I))
    inputs[0, :, [0, 2, 3, 4]] = lagged.T
    step = np.zeros(B, dtype=np.int64)
    used, first_own = 0, [None, None]
    for T, lengths, has_targets in [(1, (1, 1), True), (30, (30, 30), True), (1, (1, 0), True),
                                    (50, (50, 35), True), (40, (40, 40), False),
                                    (200, (200, 180), True)]:
        lengths = np.array(lengths, dtype=np.int64)
        idx = step[:, None] + np.minimum(np.arange(T)[None], lengths[:, None] - 1).clip(0)
        y = series[np.arange(B)[:, None], 8 + idx].astype(np.float32)
        x = inputs[np.arange(B)[:, None], idx].astype(np.float32)
        batch = {"targets": y, "inputs": x, "lengths": lengths, "learn": 1 if has_targets else 2}
        fallback = np.full((B, T, O), -999.0, dtype=np.float32)
        preds, losses = member.step(["a", "b"], batch, fallback, np.full((B, T), 5.0, np.float32))
        for b in range(B):
            for t in range(lengths[b]):
                target = y[b, t].astype(np.float64).tolist()
                want = refs[b].step(target if has_targets else None,
                                    x[b, t].astype(np.float64).tolist())
                if want is None:
                    np.testing.assert_array_equal(preds[b, t], -999.0)
                    assert losses[b, t] == 5.0
                    continue
                used += 1
                first_own[b] = first_own[b] if first_own[b] is not None else step[b] + t
                np.testing.assert_allclose(preds[b, t], want, rtol=1e-5, atol=1e-6)
                if has_targets:
                    np.testing.assert_allclose(
                        losses[b, t], np.mean((np.array(want) - target) ** 2), rtol=1e-4,
                        atol=1e-6)
                else:
                    assert np.isnan(losses[b, t])
            assert np.isnan(preds[b, lengths[b]:]).all()
        step += lengths
    assert used > 400
    snaps = [member.snapshot_stream(sid) for sid in "ab"]
    assert snaps[0]["origin"] == 4 and snaps[1]["origin"] == 0  # a's window held 4 lags
    assert first_own[0] < first_own[1]  # the history read from the inputs scored it sooner
    for b, sid in enumerate("ab"):
        m, c = divmod(seasonal_scaled.pick(snaps[b]), len(seasonal.PERIODS))
        assert (m, c) == refs[b].choose() and seasonal.PERIODS[c] % period == 0
        assert member.stream_stats(sid)["steps"] == step[b]


@pytest.mark.parametrize("has_targets", [True, False])
def test_chunked_equals_one_chunk(has_targets):
    """Step by step (short chunks) and filtered along a chunk are the same numbers: the same
    stream in chunks of 1, 3, 7, 8, 181, 20, 1 and 79 steps, and in two of 200 and 100; the
    last 100 steps with or without targets."""
    rng = np.random.default_rng(11)
    y = growing_season(300, 12, 2, rng)[8:].astype(np.float32)
    x = rng.standard_normal((300, 3)).astype(np.float32)

    def run(bounds):
        member, preds = seasonal_scaled.SeasonalScaled(2, 3), []
        for a, b in bounds:
            learn = 1 if has_targets or a < 200 else 2
            batch = {"targets": y[None, a:b], "inputs": x[None, a:b],
                     "lengths": np.array([b - a]), "learn": learn}
            p, _ = member.step(["s"], batch, np.full((1, b - a, 2), -999.0, np.float32),
                               np.zeros((1, b - a), np.float32))
            preds.append(p[0])
        return np.concatenate(preds), member.snapshot_stream("s")

    cuts = np.cumsum([0, 1, 3, 7, 8, 181, 20, 1, 79])
    split, split_state = run(list(zip(cuts[:-1], cuts[1:])))
    whole, whole_state = run([(0, 200), (200, 300)])
    assert (split[200:] != -999.0).any()  # the member predicts there, so the test can fail
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)
    for name in whole_state:
        np.testing.assert_allclose(split_state[name], whole_state[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_residual_correction_learns_the_negative_lag_one_of_a_differenced_noisy_level(
        monkeypatch):
    """The changes of a seasonal level with white noise: each residual is followed by one of
    about minus half its size, so phi comes out near -0.5 and the corrected predictions beat
    the season's guess alone."""
    rng = np.random.default_rng(2)
    t = np.arange(601)
    level = 100 + 10 * np.sin(2 * np.pi * t / 12) + 3 * rng.standard_normal(601)
    y = np.diff(level)[:, None].astype(np.float32)

    def run():
        member = seasonal_scaled.SeasonalScaled(1)
        batch = {"targets": y[None], "lengths": np.array([600]), "learn": 1}
        p, _ = member.step(["s"], batch, np.zeros((1, 600, 1), np.float32),
                           np.zeros((1, 600), np.float32))
        return np.mean(np.abs(p[0, 100:, 0] - y[100:, 0])), member.snapshot_stream("s")

    corrected, s = run()
    phi = seasonal_scaled._phi(s["residual_sums"], s["pairs"])
    assert -0.7 < phi[0] < -0.3
    monkeypatch.setattr(seasonal_scaled, "MIN_SCORED", 10 ** 9)  # phi stays 0
    plain, _ = run()
    assert corrected < 0.95 * plain


def test_hedge_moves_to_the_growing_season_and_forecasts_carry_it():
    """A season whose swing grows: the scaled member beats seasonal naive, Hedge follows it,
    and its forecast is the pattern at the last amplitude."""
    rng = np.random.default_rng(5)
    spec = make_spec("lstm", None, "tbptt", 1, 4, input_size=2, output_size=1,
                     optimizer="adam", lr=1e-2, sharing="per_stream",
                     members=({}, {"baseline": "seasonal"}, SCALED))
    ens = make_engine(spec)
    y = growing_season(240, 12, 1, rng, noise=0.01)[8:].astype(np.float32)
    for a in range(0, 240, 24):
        ens.step(["s"], inputs=rng.standard_normal((1, 24, 2)).astype(np.float32),
                 targets=y[None, a:a + 24])
    members = ens.stream_stats("s")["members"]
    assert members[2]["weight"] > 0.8 and members[0]["weight"] < 1e-6
    assert members[2]["running_loss"] < 0.3 * members[1]["running_loss"]
    s = ens.members[2].snapshot_stream("s")
    m, c = divmod(seasonal_scaled.pick(s), len(seasonal.PERIODS))
    fc = ens.members[2].forecast("s", 30, fallback=np.full((30, 1), np.nan))
    start = sum(seasonal.PERIODS[:c])
    phi = seasonal_scaled._phi(s["residual_sums"], s["pairs"])
    want = (s["pattern"][m, start + (240 + np.arange(30)) % seasonal.PERIODS[c]]
            * s["amplitude"][m] + phi ** np.arange(1, 31)[:, None] * s["residual"])
    np.testing.assert_allclose(fc, want, rtol=1e-6)
    # the next season: the last one's values grown 1.01^12, but for the amplitude's lag
    np.testing.assert_allclose(fc[:12, 0], y[-12:, 0] * 1.01 ** 12, rtol=0.15)


def test_snapshot_round_trip_continues_exactly_reset_drop_and_memory():
    spec = make_spec("lstm", None, "tbptt", 1, 4, output_size=1, sharing="per_stream",
                     members=({}, SCALED))
    one = EnsembleEngine(spec)
    rng = np.random.default_rng(7)
    y = growing_season(90, 4, 1, rng)[8:].astype(np.float32)
    chunks = random_chunks(spec, 1, [40, 20, 30], seed=7)
    for c, a in zip(chunks, (0, 40, 60)):
        c["targets"] = y[None, a:a + c["inputs"].shape[1]]
    one.step(["s"], **chunks[0])
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    M = len(seasonal_scaled.SMOOTHING)
    assert snap["members.1.pattern"].shape == (M, sum(seasonal.PERIODS), 1)
    assert snap["members.1.first_inputs"].shape == (3,)
    two = restored_and_continued(spec, one, snap, model, chunks[1:])
    one.reset_stream("s")
    assert np.isnan(one.snapshot_stream("s")["members.1.amplitude"]).all()
    one.drop_stream("s")
    assert not one.members[1].has_stream("s")
    for field, bad in (("amplitude", np.full((M, 1), np.inf)),
                       ("error", np.full((M, len(seasonal.PERIODS)), np.nan)),
                       ("origin", np.float64(-1.0))):
        with pytest.raises(ValueError, match="seasonal_scaled holds Inf"):
            two.restore_stream("u", dict(snap, **{f"members.1.{field}": bad}))
    with pytest.raises(ValueError, match="members.1|baseline seasonal_scaled"):
        two.restore_stream("u", {k: v for k, v in snap.items() if k != "members.1.origin"})
    assert not any(m.has_stream("u") for m in two.members)
    assert (memory_per_stream(spec) - memory_per_stream(spec.member_spec(0))
            >= 8 * M * sum(seasonal.PERIODS))


@pytest.mark.parametrize("change,words", [
    (dict(members=({}, SCALED), head="classes"), "regression model"),
    (dict(members=({}, SCALED), target_mode="next_input"), "target_mode explicit"),
    (dict(members=({}, SCALED), max_label_delay=4), "max_label_delay"),
    (dict(members=({}, dict(SCALED, lr=0.1))), "sets only 'baseline'"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError) as info:
        make_engine(make_spec("lstm", None, "tbptt", 2, 2, **change))
    assert words in str(info.value)


def test_spec_round_trip_and_the_shape_only_regression_default_runs_it():
    spec = Spec(input_size=3, output_size=1, cell="lstm", members=({}, SCALED))
    assert Spec.from_dict(spec.to_dict()).members == spec.members
    default = make_engine(Spec(input_size=12, output_size=1))
    kinds = [getattr(m, "kind", "") for m in default.members]
    assert "seasonal_scaled" in kinds and "seasonal" not in kinds
    scaled = default.members[kinds.index("seasonal_scaled")]
    assert scaled.input_size == 12
