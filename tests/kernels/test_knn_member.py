"""The nearest-neighbour members ({"baseline": "knn"}, and "knn_wide" with more neighbours) of a
dense classifier: their probabilities
equal the plain-Python reference (the first network member's before any labelled step; window
eviction, ragged lengths, one-step chunks, learn=False and unlabelled chunks); Hedge moves to it
on a nonlinear 2-D boundary; snapshots (shared and per stream) continue exactly; refusals; the
default for dense classifiers."""

import numpy as np
import pytest

from rnnstream.service.engine import EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.service.engine import neighbours
from tests.kernels.engine_support import restored_and_continued, step_against_references
from tests.reference.neighbours import NeighboursReference

KNN = {"baseline": "knn"}
KNN_WIDE = {"baseline": "knn_wide"}


def knn_spec(**kw):
    fields = dict(input_size=2, num_classes=3, cell="lstm", hidden_sizes=(4,), tbptt_k1=1,
                  tbptt_k2=2, lr=1e-2, members=({}, KNN))
    fields.update(kw)
    return Spec(**fields)


@pytest.mark.parametrize("k", [neighbours.K, neighbours.K_WIDE])
def test_member_equals_the_reference(monkeypatch, k):
    monkeypatch.setattr(neighbours, "WINDOW", 25 + k)  # so the window fills and evicts
    rng = np.random.default_rng(4)
    B, C, I = 2, 3, 2
    member = neighbours.Neighbours(I, C, shared=False, neighbours=k)
    assert member.kind == ("knn" if k == neighbours.K else "knn_wide")
    refs = [NeighboursReference(C, 25 + k, k, neighbours.ALPHA, neighbours.EPS)
            for _ in range(B)]
    sentinel = 1.0 / 7
    for T, lengths, mode in [(1, (1, 1), 1), (12, (12, 5), 1), (1, (1, 1), 1), (20, (20, 20), 0),
                             (30, (30, 17), 1), (6, (6, 6), 2), (15, (15, 15), 1)]:
        x = rng.standard_normal((B, T, I)) * [1.0, 30.0]  # unequal scales: the scaling matters
        cls = (x[..., 0] * x[..., 1] > 0).astype(np.int64) + (x[..., 0] > 1)
        step_against_references(member, refs, x, cls, lengths, mode, sentinel)
    for b, sid in enumerate("ab"):
        assert member.stream_stats(sid)["steps"] == 1 + 12 + 1 + 20 + 30 + 6 + 15 - (7 + 13) * b
        assert member.snapshot_stream(sid)["count"] == (1 + 12 + 1 + 30 + 15 if b == 0
                                                        else 1 + 5 + 1 + 17 + 15)


def circle_chunks(n_chunks, T, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_chunks):
        x = rng.uniform(-2, 2, (1, T, 2)).astype(np.float32)
        out.append({"inputs": x, "target_classes": (np.hypot(x[..., 0], x[..., 1]) > 1.2)
                    .astype(np.int64)})
    return out


def test_hedge_moves_to_the_neighbours_on_a_nonlinear_boundary():
    ens = make_engine(knn_spec(num_classes=2))
    for c in circle_chunks(30, 32, seed=1):
        ens.step(["s"], **c)
    members = ens.stream_stats("s")["members"]
    assert members[1]["weight"] > 0.9
    assert members[1]["running_loss"] < 0.5 * members[0]["running_loss"]


@pytest.mark.parametrize("sharing,member", [("shared", KNN), ("per_stream", KNN),
                                            ("shared", KNN_WIDE), ("per_stream", KNN_WIDE)])
def test_snapshots_continue_exactly_reset_drop(sharing, member):
    spec = knn_spec(num_classes=2, sharing=sharing, members=({}, member))
    one = EnsembleEngine(spec)
    chunks = circle_chunks(4, 16, seed=2)
    one.step(["s"], **chunks[0])
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    assert ("members.1.inputs" in model) == (sharing == "shared")
    assert ("members.1.inputs" in snap) == (sharing == "per_stream")
    two = restored_and_continued(spec, one, snap, model, chunks[1:])
    one.reset_stream("s")
    assert one.stream_stats("s")["members"][1]["index"] == 1
    one.drop_stream("s")
    assert not one.members[1].has_stream("s")
    where = snap if sharing == "per_stream" else model
    broken = dict(where, **{"members.1.classes": np.full(neighbours.WINDOW, 5.0)})
    with pytest.raises(ValueError, match="class outside"):
        if sharing == "per_stream":
            two.restore_stream("u", broken)
        else:
            two.restore_model(broken)
    assert not two.members[1].has_stream("u")
    assert memory_per_stream(spec) > memory_per_stream(spec.member_spec(0))
    # both neighbour members keep the same window and statistics, counted where they live
    from rnnstream.service.engine.ensemble import memory_per_model
    twin = knn_spec(num_classes=2, sharing=sharing, members=({}, KNN))
    assert memory_per_stream(spec) == memory_per_stream(twin)
    window = 8 * sum(a.size for k, a in where.items() if k.startswith("members.1."))
    assert memory_per_model(spec) == memory_per_model(twin) == (window if sharing == "shared" else 0)


@pytest.mark.parametrize("change,words", [
    (dict(num_classes=0, output_size=1), "dense classification model"),
    (dict(vocab_size=3, num_classes=3, input_size=0, target_mode="next_input"),
     "dense classification model"),
    (dict(members=({}, dict(KNN, seed=3))), "sets only 'baseline'"),
    (dict(num_classes=0, output_size=1, members=({}, KNN_WIDE)),
     "knn_wide votes with labelled dense inputs"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError) as info:
        make_engine(knn_spec(**change))
    assert words in str(info.value)


def test_dense_classifiers_given_their_shape_run_the_neighbours():
    spec = Spec(input_size=3, num_classes=2)
    assert len(spec.members) == 7 and spec.members[-3:-1] == (KNN, KNN_WIDE)
    assert KNN_WIDE not in Spec(input_size=3, output_size=1).members
    assert KNN not in Spec(input_size=3, output_size=1).members
    assert Spec(input_size=3, num_classes=2, cell="gru").members == ()
    assert Spec.from_dict(spec.to_dict()).members == spec.members
