"""The persistence member ({"baseline": "last_target"}) of an ensemble: its predictions are the
shifted targets (the first network member's before a stream's first target), the combination
equals the Hedge reference fed with them; Hedge moves to it on a random walk; snapshots
continue exactly; reset/drop/stats/forecast; no weights; refusals; the auto members."""

import math

import numpy as np
import pytest

from rnnstream.service.engine import Engine, EnsembleEngine, Spec, make_engine, memory_per_stream
from tests.kernels.engine_support import make_spec, random_chunks, restored_and_continued
from tests.reference.hedge import HedgeReference

PERSIST = {"baseline": "last_target"}


def persist_spec(members=({}, PERSIST), **kw):
    return make_spec("lstm", None, "tbptt", 2, 4, members=tuple(members), **kw)


def test_predictions_are_the_shifted_targets_and_the_mix_equals_the_reference():
    spec = persist_spec()
    ens, net = EnsembleEngine(spec), Engine(spec.member_spec(0))
    B = 2
    chunks = random_chunks(spec, B, [5, 4, 6], seed=1)
    chunks[1]["lengths"] = np.array([4, 2], dtype=np.int64)  # ragged: stream 1 two steps short
    refs = [HedgeReference(2, ens.eta, classify=False) for _ in range(B)]
    last = [None] * B
    for c in chunks:
        preds, losses = ens.step(["a", "b"], **c)
        net_p, net_l = net.step(["a", "b"], **c)
        member_losses = ens.last_call.member_losses
        lengths = c.get("lengths", np.full(B, c["targets"].shape[1]))
        for b in range(B):
            for t in range(lengths[b]):
                y = c["targets"][b, t].astype(np.float64)
                if last[b] is None:  # no target yet: the network member's prediction and loss
                    p, l = net_p[b, t].astype(np.float64), float(net_l[b, t])
                else:
                    p, l = last[b], float(np.mean((last[b] - y) ** 2))
                np.testing.assert_allclose(member_losses[1][b, t], l, rtol=1e-6)
                mix, loss = refs[b].step([net_p[b, t].tolist(), p.tolist()],
                                         [float(net_l[b, t]), l], y.tolist())
                np.testing.assert_allclose(preds[b, t], mix, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(losses[b, t], loss, rtol=1e-4, atol=1e-7)
                last[b] = y
            assert np.isnan(preds[b, lengths[b]:]).all()
    for b, sid in enumerate("ab"):
        w = [m["weight"] for m in ens.stream_stats(sid)["members"]]
        np.testing.assert_allclose(w, refs[b].weights(), rtol=1e-6)


def test_hedge_moves_its_weight_to_persistence_on_a_random_walk():
    spec = make_spec("lstm", None, "tbptt", 1, 4, input_size=1, output_size=1, optimizer="adam",
                     lr=1e-2, members=({}, PERSIST))
    ens = make_engine(spec)
    rng = np.random.default_rng(0)
    walk = 50 + np.cumsum(rng.standard_normal(400))
    x = rng.standard_normal((1, 400, 1)).astype(np.float32)  # inputs that say nothing
    y = walk.reshape(1, 400, 1).astype(np.float32)
    for t0 in range(0, 400, 20):
        ens.step(["w"], inputs=x[:, t0:t0 + 20], targets=y[:, t0:t0 + 20])
    members = ens.stream_stats("w")["members"]
    assert members[1]["weight"] > 0.95
    assert members[1]["running_loss"] < members[0]["running_loss"]
    # after the walk, the combination is (nearly) persistence
    preds, _ = ens.step(["w"], inputs=x[:, :1], targets=y[:, :1])
    assert abs(float(preds[0, 0, 0]) - float(y[0, -1, 0])) < 0.1 * abs(float(y[0, -1, 0]) - 50) + 1


def test_snapshot_round_trip_continues_exactly_and_reset_drop_stats_forecast():
    spec = persist_spec(sharing="per_stream", input_size=2)  # forecasts need output == input
    one = EnsembleEngine(spec)
    chunks = random_chunks(spec, 1, [5, 3, 4], seed=2)
    one.step(["s"], **chunks[0])
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    assert snap["members.1.has_target"] == 1.0
    np.testing.assert_array_equal(snap["members.1.last_target"], chunks[0]["targets"][0, -1])
    two = restored_and_continued(spec, one, snap, model, chunks[1:])
    stats = one.stream_stats("s")
    assert [m["index"] for m in stats["members"]] == [0, 1] and stats["steps"] == 12
    assert math.isfinite(stats["members"][1]["running_loss"])
    # forecasts: persistence repeats its last target flat
    each = np.stack([one.members[0].forecast("s", 3),
                     np.tile(chunks[-1]["targets"][0, -1], (3, 1))])
    w = np.array([m["weight"] for m in stats["members"]])
    np.testing.assert_allclose(one.forecast("s", 3), np.einsum("k,kho->ho", w, each), rtol=1e-5)
    # reset: no target again, so step 0 predicts what the network does
    one.reset_stream("s")
    assert one.snapshot_stream("s")["members.1.has_target"] == 0.0
    one.step(["s"], **chunks[0])
    losses = one.last_call.member_losses
    assert losses[1][0, 0] == losses[0][0, 0]
    one.drop_stream("s")
    assert not one.has_stream("s") and not one.members[1].has_stream("s")
    broken = dict(snap, **{"members.1.last_target": np.zeros(5)})
    with pytest.raises(ValueError, match="last_target"):
        two.restore_stream("u", broken)
    assert not any(m.has_stream("u") for m in two.members)


def test_no_weights_and_memory():
    spec = persist_spec()
    ens = EnsembleEngine(spec)
    net = Engine(spec.member_spec(0))
    assert ens.num_parameters == net.num_parameters
    sd = ens.state_dict()
    assert set(sd) == {f"members.0.{n}" for n in net.state_dict()}
    assert [n for n, _, _ in ens.param_layout()] == list(sd)
    ens.load_state_dict(sd)
    with pytest.raises(ValueError, match="no weights"):
        ens.load_state_dict({**sd, "members.1.head.bias": np.zeros(2)})
    assert memory_per_stream(spec) > memory_per_stream(spec.member_spec(0))


@pytest.mark.parametrize("change,words", [
    (dict(members=(PERSIST,)), "at least one network member"),
    (dict(members=(PERSIST, PERSIST)), "at least one network member"),
    (dict(members=({}, {"baseline": "mean"})),
     "members[1].baseline must be one of last_target, seasonal, seasonal_scaled, context"),
    (dict(members=({}, {"baseline": "last_target", "lr": 0.1})), "sets only 'baseline'"),
    (dict(members=({}, PERSIST), head="classes"), "regression model"),
    (dict(members=({}, PERSIST), target_mode="next_input"), "target_mode explicit"),
    (dict(members=({}, PERSIST), max_label_delay=3), "max_label_delay"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError) as info:
        make_engine(make_spec("lstm", None, "tbptt", 2, 2, **change))
    assert words in str(info.value)


def test_auto_members_add_persistence_for_explicit_regression_only():
    regress = Spec(input_size=3, output_size=1)
    assert len(regress.members) == 7 and regress.members[-3:] == (
        PERSIST, {"baseline": "seasonal_scaled"}, {"baseline": "running_median"})
    assert regress.network_members() == [0, 1, 2, 3]
    assert PERSIST not in Spec(input_size=3, num_classes=2).members
    assert len(Spec(input_size=3, num_classes=2).members) == 7  # 4 networks, knn, knn_wide, tree
    assert PERSIST not in Spec(input_size=3, output_size=3, target_mode="next_input").members
    assert Spec(input_size=3, output_size=1, max_label_delay=2).members == ()
    again = Spec.from_dict(regress.to_dict())
    assert again.members == regress.members
