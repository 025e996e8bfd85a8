"""The Hoeffding tree member ({"baseline": "tree"}) of a dense classifier: its probabilities and
its splits equal the plain-Python reference (the first network member's before any labelled
step; ragged lengths, one-step chunks, learn=False and unlabelled chunks, the node budget
spent); Hedge moves to it on a threshold class; snapshots (shared and per stream) continue
exactly; broken snapshots and misplaced members are refused; memory counts its arrays."""

import numpy as np
import pytest

from rnnstream.service.engine import EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.service.engine import hoeffding
from rnnstream.service.engine.ensemble import memory_per_model
from tests.kernels.engine_support import restored_and_continued, step_against_references
from tests.reference.hoeffding import HoeffdingTreeReference

TREE = {"baseline": "tree"}


def tree_spec(**kw):
    fields = dict(input_size=3, num_classes=3, cell="lstm", hidden_sizes=(4,), tbptt_k1=1,
                  tbptt_k2=2, lr=1e-2, members=({}, TREE))
    fields.update(kw)
    return Spec(**fields)


def threshold_classes(x):
    """Class 2 above a threshold on feature 1 (of scale 100), else by the sign of feature 0."""
    return np.where(x[..., 1] > 30.0, 2, (x[..., 0] > 0.2).astype(np.int64))


def reference_splits(m: dict) -> list:
    """(feature, threshold) of a member's inner nodes, depth first, left before right."""
    out, todo = [], [0]
    while todo:
        n = todo.pop()
        if m["feature"][n] >= 0:
            out.append((int(m["feature"][n]), float(m["threshold"][n])))
            todo += [int(m["left"][n]) + 1, int(m["left"][n])]
    return out


def test_member_equals_the_reference(monkeypatch):
    monkeypatch.setattr(hoeffding, "GRACE", 25)      # so it splits within a short test
    monkeypatch.setattr(hoeffding, "MAX_NODES", 5)   # so the budget is spent
    monkeypatch.setattr(hoeffding, "TAU", 0.2)
    monkeypatch.setattr(hoeffding, "DELTA", 1e-2)
    rng = np.random.default_rng(5)
    B, C, I = 2, 3, 3
    member = hoeffding.HoeffdingTree(I, C, shared=False)
    refs = [HoeffdingTreeReference(I, C, 5, 25, 1e-2, 0.2, hoeffding.N_SPLITS,
                                   hoeffding.MIN_BRANCH, hoeffding.MAX_SHARE, hoeffding.ALPHA,
                                   hoeffding.VAR_EPS) for _ in range(B)]
    sentinel = 1.0 / 7
    chunks = [(1, (1, 1), 1), (12, (12, 5), 1), (1, (1, 1), 1), (20, (20, 20), 0)]
    chunks += [(40, (40, 33), 1), (6, (6, 6), 2)] * 8 + [(15, (15, 15), 1)]
    for T, lengths, mode in chunks:
        x = rng.standard_normal((B, T, I)) * [1.0, 100.0, 5.0]  # unequal scales
        cls = threshold_classes(x)
        flip = rng.random((B, T)) < 0.1
        cls = np.where(flip, rng.integers(0, C, (B, T)), cls)
        step_against_references(member, refs, x, cls, lengths, mode, sentinel)
    for b, sid in enumerate("ab"):
        snap = member.snapshot_stream(sid)
        got, want = reference_splits(snap), refs[b].splits()
        assert [f for f, _ in got] == [f for f, _ in want]
        np.testing.assert_allclose([t for _, t in got], [t for _, t in want], rtol=1e-12)
        assert snap["nodes"] == refs[b].nodes == 5  # the budget is spent, and respected
        assert {f for f, _ in got} >= {0, 1}  # the features the class depends on


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_chunked_equals_unchunked(monkeypatch, sharing):
    monkeypatch.setattr(hoeffding, "GRACE", 30)  # so it splits inside the chunks
    monkeypatch.setattr(hoeffding, "DELTA", 1e-2)
    whole, steps = (hoeffding.HoeffdingTree(3, 3, sharing == "shared") for _ in range(2))
    x = threshold_chunks(1, 200, seed=4)[0]
    batch = {"inputs": x["inputs"], "tclass": x["target_classes"], "learn": 1,
             "lengths": np.array([200])}
    fallback = np.zeros((1, 200, 3), np.float32), np.zeros((1, 200), np.float32)
    want = whole.step(["s"], batch, *fallback)
    got = [steps.step(["s"], {"inputs": x["inputs"][:, t:t + 1], "learn": 1,
                              "tclass": x["target_classes"][:, t:t + 1],
                              "lengths": np.array([1])}, fallback[0][:, :1], fallback[1][:, :1])
           for t in range(200)]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in got], 1), want[0])
    np.testing.assert_array_equal(np.concatenate([l for _, l in got], 1), want[1])
    a, b = whole.snapshot_model() or whole.snapshot_stream("s"), steps.snapshot_model() or \
        steps.snapshot_stream("s")
    assert a["nodes"] >= 5
    for name in hoeffding.model_shapes(3, 3):  # the tree (the running loss is Hedge's, summed
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # per chunk)


def threshold_chunks(n_chunks, T, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_chunks):
        x = (rng.standard_normal((1, T, 3)) * [1.0, 100.0, 5.0]).astype(np.float32)
        out.append({"inputs": x, "target_classes": threshold_classes(x)})
    return out


def test_hedge_moves_to_the_tree_on_a_threshold_class():
    ens = make_engine(tree_spec())
    for c in threshold_chunks(40, 32, seed=1):
        ens.step(["s"], **c)
    members = ens.stream_stats("s")["members"]
    assert members[1]["weight"] > 0.9
    assert members[1]["running_loss"] < 0.9 * members[0]["running_loss"]
    assert ens.members[1]._model["nodes"] >= 3  # it split


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_snapshots_continue_exactly_reset_drop(monkeypatch, sharing):
    monkeypatch.setattr(hoeffding, "GRACE", 30)  # splits on both sides of the snapshot
    monkeypatch.setattr(hoeffding, "DELTA", 1e-2)
    spec = tree_spec(sharing=sharing)
    one = EnsembleEngine(spec)
    chunks = threshold_chunks(12, 16, seed=2)
    for c in chunks[:3]:
        one.step(["s"], **c)
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    where = snap if sharing == "per_stream" else model
    assert ("members.1.class_weight" in model) == (sharing == "shared")
    assert ("members.1.class_weight" in snap) == (sharing == "per_stream")
    assert where["members.1.nodes"] >= 3
    two = restored_and_continued(spec, one, snap, model, chunks[3:])
    assert two.snapshot_model().get("members.1.nodes", two.snapshot_stream("s").get(
        "members.1.nodes")) > where["members.1.nodes"]  # it split again after the restore
    one.reset_stream("s")
    assert one.stream_stats("s")["members"][1]["index"] == 1
    one.drop_stream("s")
    assert not one.members[1].has_stream("s")
    # memory counts the arrays where they live, by their real size
    member_bytes = 8 * sum(a.size for k, a in where.items() if k.startswith("members.1."))
    tree_bytes = 8 * sum(a.size for k, a in where.items() if k.startswith("members.1.")
                         and k[len("members.1."):] in hoeffding.model_shapes(3, 3))
    assert tree_bytes > 0
    assert memory_per_model(spec) == (tree_bytes if sharing == "shared" else 0)
    stream_bytes = 8 * sum(a.size for k, a in snap.items() if k.startswith("members.1."))
    assert hoeffding.memory_per_stream(3, 3, sharing == "shared") == stream_bytes
    assert stream_bytes == (member_bytes if sharing == "per_stream" else 8 * 3)
    assert memory_per_stream(spec) > memory_per_stream(spec.member_spec(0)) + stream_bytes - 1


def _restore(engine, sharing, d):
    if sharing == "per_stream":
        engine.restore_stream("u", d)
    else:
        engine.restore_model(d)


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
@pytest.mark.parametrize("field,value,words", [
    ("m2", np.nan, "field m2 of the baseline tree holds NaN or Inf"),
    ("threshold", np.inf, "field threshold of the baseline tree holds NaN or Inf"),
    ("feature", 7.0, "not a tree it could have grown"),    # no such feature
    ("left", 0.0, "not a tree it could have grown"),       # a cycle to the root
    ("class_weight", -1.0, "not a tree it could have grown"),
    ("nodes", 2.0, "not a tree it could have grown"),      # nodes = 2 leaves - 1
])
def test_broken_snapshots_are_refused_and_change_nothing(monkeypatch, sharing, field, value, words):
    monkeypatch.setattr(hoeffding, "GRACE", 30)
    monkeypatch.setattr(hoeffding, "DELTA", 1e-2)
    spec = tree_spec(sharing=sharing)
    one = EnsembleEngine(spec)
    for c in threshold_chunks(6, 16, seed=3):
        one.step(["s"], **c)
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    where = dict(snap if sharing == "per_stream" else model)
    key = f"members.1.{field}"
    broken = np.array(where[key])
    if broken.ndim:
        broken.flat[0] = value
    else:
        broken = np.float64(value)
    two = EnsembleEngine(spec)
    before = two.snapshot_model()
    with pytest.raises(ValueError, match=words):
        _restore(two, sharing, dict(where, **{key: broken}))
    with pytest.raises(ValueError, match="not of shape"):
        _restore(two, sharing, dict(where, **{key: np.zeros(3)}))
    assert not two.members[1].has_stream("u")
    for k, a in two.snapshot_model().items():
        np.testing.assert_array_equal(a, before[k])


@pytest.mark.parametrize("change,words", [
    (dict(num_classes=0, output_size=1), "tree splits on labelled dense inputs"),
    (dict(vocab_size=3, num_classes=3, input_size=0, target_mode="next_input"),
     "dense classification model"),
    (dict(members=({}, dict(TREE, seed=3))), "sets only 'baseline'"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError) as info:
        make_engine(tree_spec(**change))
    assert words in str(info.value)


def test_dense_classifiers_given_their_shape_run_the_tree():
    spec = Spec(input_size=3, num_classes=2)
    assert spec.members[-1] == TREE and spec.network_members() == [0, 1, 2, 3]
    assert TREE not in Spec(input_size=3, output_size=1).members
    assert TREE not in Spec(input_size=3, num_classes=2, max_label_delay=2).members
    assert Spec.from_dict(spec.to_dict()).members == spec.members
