"""The seasonal-naive member ({"baseline": "seasonal"}) of an ensemble: its predictions equal
the plain-Python reference (the first network member's where it has none, across chunk
boundaries, ragged lengths and chunks without targets); it finds the period of a seasonal
series and Hedge moves its weight there; snapshots continue exactly; forecasts repeat the
season; refusals."""

import numpy as np
import pytest

from rnnstream.service.engine import EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.service.engine import seasonal
from tests.kernels.engine_support import make_spec, random_chunks, restored_and_continued
from tests.reference.seasonal import SeasonalReference

SEASONAL = {"baseline": "seasonal"}


def seasonal_spec(**kw):
    return make_spec("lstm", None, "tbptt", 1, 4, members=({}, SEASONAL), **kw)


def periodic_chunks(spec, B, lengths, period, seed=0, noise=0.1):
    """Targets that repeat every ``period`` steps (plus noise), one phase per stream."""
    rng = np.random.default_rng(seed)
    shape = rng.standard_normal((B, period, spec.output_size)) * 3
    chunks, t0 = random_chunks(spec, B, lengths, seed=seed), 0
    for c, T in zip(chunks, lengths):
        idx = (t0 + np.arange(T)) % period
        c["targets"] = (shape[:, idx] + noise * rng.standard_normal((B, T, spec.output_size))
                        ).astype(np.float32)
        t0 += T
    return chunks


def test_predictions_equal_the_reference_with_the_fallback_where_it_has_none():
    """The member alone, fed the engine's batch layout: ragged lengths, a chunk without
    targets, a one-step chunk; the fallback (what the first network member said) is a
    sentinel, so every step shows whether the member had a prediction of its own."""
    rng = np.random.default_rng(3)
    B, O, period = 2, 2, 7
    member = seasonal.Seasonal(O)
    refs = [SeasonalReference(seasonal.PERIODS, seasonal.DISCOUNT, seasonal.MIN_SCORED)
            for _ in range(B)]
    shape = rng.standard_normal((B, period, O)) * 3
    step = np.zeros(B, dtype=np.int64)
    used = 0
    for T, lengths, has_targets in [(30, (30, 30), True), (1, (1, 0), True),
                                    (50, (50, 35), True), (40, (40, 40), False),
                                    (200, (200, 180), True)]:
        lengths = np.array(lengths, dtype=np.int64)
        idx = (step[:, None] + np.arange(T)[None]) % period
        y = shape[np.arange(B)[:, None], idx] + 0.1 * rng.standard_normal((B, T, O))
        batch = {"targets": y.astype(np.float32), "lengths": lengths,
                 "learn": 1 if has_targets else 2}
        fallback = np.full((B, T, O), -999.0, dtype=np.float32)
        preds, losses = member.step(["a", "b"], batch, fallback, np.full((B, T), 5.0, np.float32))
        for b in range(B):
            for t in range(lengths[b]):
                target = y[b, t].astype(np.float32).astype(np.float64).tolist()
                want = refs[b].step(target if has_targets else None)
                if want is None:
                    np.testing.assert_array_equal(preds[b, t], -999.0)
                    assert losses[b, t] == 5.0
                else:
                    used += 1
                    np.testing.assert_allclose(preds[b, t], want, rtol=1e-6)
                    if has_targets:
                        np.testing.assert_allclose(
                            losses[b, t], np.mean((np.array(want) - target) ** 2), rtol=1e-5)
                    else:
                        assert np.isnan(losses[b, t])
            assert np.isnan(preds[b, lengths[b]:]).all()
        step += lengths
    assert used > 150  # the period was found and used
    for b, sid in enumerate("ab"):
        s = member.snapshot_stream(sid)
        pick = int(seasonal.choose(s["error"], s["reference"], s["scored"]))
        assert seasonal.PERIODS[pick] == refs[b].choose()
        assert seasonal.PERIODS[pick] % 7 == 0  # the period or a multiple of it
        assert member.stream_stats(sid)["steps"] == step[b]


def test_hedge_moves_to_the_season_and_forecasts_repeat_it():
    spec = make_spec("lstm", None, "tbptt", 1, 4, input_size=2, output_size=2,
                     target_mode="explicit", optimizer="adam", lr=1e-2,
                     members=({}, SEASONAL), sharing="per_stream")
    ens = make_engine(spec)
    chunks = periodic_chunks(spec, 1, [24] * 20, period=12, seed=5, noise=0.01)
    for c in chunks:
        ens.step(["s"], **c)
    members = ens.stream_stats("s")["members"]
    assert members[1]["weight"] > 0.95
    assert members[1]["running_loss"] < 0.1 * members[0]["running_loss"]
    last = np.concatenate([c["targets"][0] for c in chunks])  # [480, 2]
    fc = ens.members[1].forecast("s", 30, fallback=np.full((30, 2), np.nan))
    want = np.stack([last[len(last) - 12 + (h % 12)] for h in range(30)])
    np.testing.assert_allclose(fc, want, rtol=1e-6)


def test_snapshot_round_trip_continues_exactly_reset_drop_and_memory():
    spec = seasonal_spec(sharing="per_stream")
    one = EnsembleEngine(spec)
    chunks = periodic_chunks(spec, 1, [40, 20, 30], period=4, seed=7)
    one.step(["s"], **chunks[0])
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    assert snap["members.1.history"].shape == (seasonal.HISTORY, 2)
    two = restored_and_continued(spec, one, snap, model, chunks[1:])
    one.reset_stream("s")
    assert np.isnan(one.snapshot_stream("s")["members.1.history"]).all()
    one.drop_stream("s")
    assert not one.members[1].has_stream("s")
    broken = dict(snap, **{"members.1.history": np.full((seasonal.HISTORY, 2), np.inf)})
    with pytest.raises(ValueError, match="seasonal holds Inf"):
        two.restore_stream("u", broken)
    with pytest.raises(ValueError, match="members.1|baseline seasonal"):
        two.restore_stream("u", {k: v for k, v in snap.items() if k != "members.1.reference"})
    assert not any(m.has_stream("u") for m in two.members)
    assert (memory_per_stream(spec) - memory_per_stream(spec.member_spec(0))
            >= 8 * seasonal.HISTORY * 2)


@pytest.mark.parametrize("change,words", [
    (dict(members=({}, SEASONAL), head="classes"), "regression model"),
    (dict(members=({}, SEASONAL), target_mode="next_input"), "target_mode explicit"),
    (dict(members=({}, dict(SEASONAL, lr=0.1))), "sets only 'baseline'"),
    (dict(members=(SEASONAL,)), "at least one network member"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError) as info:
        make_engine(make_spec("lstm", None, "tbptt", 2, 2, **change))
    assert words in str(info.value)


def test_spec_round_trip():
    spec = Spec(input_size=3, output_size=1, cell="lstm", members=({}, SEASONAL))
    assert Spec.from_dict(spec.to_dict()).members == spec.members
