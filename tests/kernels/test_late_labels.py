"""Late labels and segment labels (kernels/README.md, "Late labels"): the engine against the
NumPy reference that applies the same late-label schedule, the d = 0 identity with the
ordinary path, and refusals that change nothing."""

import numpy as np
import pytest

from tests.kernels.engine_support import (Engine, assert_weights_close, make_spec,
                                          reference_for)

RULES = [("tbptt", 2, 3), ("tbptt", 3, 3), ("snap1", 1, 1)]
CELLS = [("lstm", {}), ("gru", {}), ("elman", {})]


def rid(rule):
    alg, k1, k2 = rule
    return f"tbptt{k1}-{k2}" if alg == "tbptt" else alg


def data(spec, B, n, seed=1):
    rng = np.random.default_rng(seed)
    if spec.vocab_size:
        x = {"tokens": rng.integers(0, spec.vocab_size, size=(B, n)).astype(np.int64)}
    else:
        x = {"inputs": rng.standard_normal((B, n, spec.input_size)).astype(np.float32)}
    if spec.num_classes:
        y = rng.integers(0, spec.num_classes, size=(B, n)).astype(np.int64)
    else:
        y = rng.standard_normal((B, n, spec.output_size)).astype(np.float32)
    return x, y


def chunk_of(x, t0, t1):
    return {k: v[:, t0:t1] for k, v in x.items()}


def run_schedule(spec, plan, B=2, n=12, seed=1):
    """Feed the engine and the reference the same calls. ``plan(t)`` for chunk t (one step
    each) gives (label steps of that call, reset_after); every stream gets the same steps.
    Returns (engine, reference, stream ids, [(engine out, reference out, label losses)])."""
    eng = Engine(spec)
    ref = reference_for(eng, spec)
    init = {k: np.asarray(v, np.float64) for k, v in eng.state_dict().items()}
    sids = [f"s{b}" for b in range(B)]
    x, y = data(spec, B, n, seed)
    out = []
    for t in range(n + 1):
        steps, reset = plan(t)
        steps = [s for s in steps if s < t]
        if t == n and not steps and not reset:
            break
        labels = None
        if steps:
            labels = [(np.array(steps), y[b, steps]) for b in range(B)]
        kw = chunk_of(x, t, t + 1) if t < n else {}
        got = eng.step(sids, labels=labels, reset_after=reset, **kw)
        got_lab = eng.last_call.label_losses
        want = ref.step(sids, labels=labels, reset_after=reset, **kw)
        out.append((got, want, got_lab, ref.label_losses))
    return eng, ref, init, sids, out


def check(spec, eng, ref, init, sids, out):
    for c, ((gp, gl), (wp, wl), glab, wlab) in enumerate(out):
        np.testing.assert_allclose(np.asarray(gp, np.float64), wp, rtol=1e-4, atol=1e-5,
                                   err_msg=f"predictions of call {c}")
        np.testing.assert_allclose(np.asarray(gl, np.float64), wl, rtol=1e-4, atol=1e-5,
                                   equal_nan=True, err_msg=f"losses of call {c}")
        for b in range(len(wlab)):
            np.testing.assert_allclose(np.asarray(glab[b], np.float64), wlab[b], rtol=1e-4,
                                       atol=1e-5, err_msg=f"label losses of call {c}")
    for sid in (sids if spec.sharing == "per_stream" else [None]):
        got = eng.state_dict(stream_id=sid)
        want = ref.params(sid)
        assert_weights_close(got, want, what=f"final weights of {sid}")
        moved = max(np.abs(np.asarray(got[k], np.float64) - init[k]).max() for k in got)
        assert moved > 1e-4, "the labels must have trained something"


CASES = [(c, r, sh) for c in CELLS for r in RULES for sh in ("shared", "per_stream")]


@pytest.mark.parametrize("cell,rule,sharing", CASES,
                         ids=[f"{c[0]}-{rid(r)}-{sh}" for c, r, sh in CASES])
@pytest.mark.parametrize("delay", [1, 3])
def test_labels_d_steps_late_match_the_reference(cell, rule, sharing, delay):
    """Every step s's label arrives ``delay`` steps late: in the call after step s + delay
    ran (call t runs step t); the reference applies the same schedule."""
    alg, k1, k2 = rule
    spec = make_spec(cell[0], cell[1], alg, k1, k2, sharing=sharing, max_label_delay=3)
    check(spec, *run_schedule(spec, lambda t: ([t - 1 - delay] if t > delay else [], False)))


@pytest.mark.parametrize("rule", RULES, ids=rid)
@pytest.mark.parametrize("inp", ["dense", "token"])
def test_labels_out_of_order_and_sparse_match_the_reference(rule, inp):
    """Labels in bursts, out of order, some steps never labelled; TBPTT's ring overflows
    with pending losses (learned before they would leave it)."""
    alg, k1, k2 = rule
    spec = make_spec("lstm", {}, alg, k1, k2, inp=inp, max_label_delay=4)
    plan = {3: [2, 0], 5: [4, 1, 3], 9: [6, 8], 12: [11]}
    check(spec, *run_schedule(spec, lambda t: (plan.get(t, []), False), n=12))


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_sparse_labels_are_learned_before_they_leave_the_ring(sharing):
    """TBPTT(3, 3), D = 2: a ring of 5 steps, one label per 3 steps, so a pending loss
    reaches the ring's end before k1 = 3 are pending: it is learned then, not dropped."""
    spec = make_spec("lstm", {}, "tbptt", 3, 3, sharing=sharing, max_label_delay=2)
    eng, ref, init, sids, out = run_schedule(
        spec, lambda t: ([t - 2] if t >= 3 and t % 3 == 0 else [], False), n=14)
    check(spec, eng, ref, init, sids, out)
    # labels of steps 1, 4, 7, 10: steps 1 and 7 reach the ring's end with 2 losses pending
    # (updates then); waiting for k1 = 3 would have made one update and dropped step 1's loss
    assert eng.stream_stats("s0")["updates"] == 2


@pytest.mark.parametrize("rule", RULES, ids=rid)
def test_segment_labels_with_reset_match_the_reference(rule):
    """Sequence-to-class: one label on each segment's last step, state reset after it."""
    alg, k1, k2 = rule
    spec = make_spec("gru", {}, alg, k1, k2, head="classes", max_label_delay=2)

    def plan(t):  # segments of 4 steps: the label of step 4i+3 comes with the next call
        if t >= 4 and t % 4 == 0:
            return [t - 1], True
        return [], False
    check(spec, *run_schedule(spec, plan, n=12))


@pytest.mark.parametrize("rule", RULES, ids=rid)
@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_label_zero_steps_late_is_the_ordinary_path(rule, sharing):
    """Steps sent without targets, each labelled in the next call before the next step runs:
    exactly what sending the targets with the steps does (and max_label_delay itself changes
    nothing when targets come with their steps)."""
    alg, k1, k2 = rule
    plain = make_spec("lstm", {}, alg, k1, k2, sharing=sharing, normalize="off")
    late = make_spec("lstm", {}, alg, k1, k2, sharing=sharing, max_label_delay=3,
                     normalize="off")  # late labels keep regression targets in their units
    ea, eb, ec = Engine(plain), Engine(late), Engine(late)
    sids = ["a", "b"]
    x, y = data(plain, 2, 9)
    for t in range(9):
        kw = chunk_of(x, t, t + 1)
        pa, la = ea.step(sids, targets=y[:, t:t + 1], **kw)
        pb_, lb = eb.step(sids, targets=y[:, t:t + 1], **kw)
        labels = None if t == 0 else [([t - 1], y[b, t - 1:t]) for b in range(2)]
        pc, lc = ec.step(sids, labels=labels, **kw)
        np.testing.assert_array_equal(pa, pb_)
        np.testing.assert_array_equal(pa, pc)
        np.testing.assert_array_equal(la, lb)
        assert np.isnan(lc).all()  # the loss comes with the label, one call later
        if t:
            np.testing.assert_array_equal(np.concatenate(ec.last_call.label_losses), prev)
        prev = la[:, 0]
    ec.step(sids, labels=[([8], y[b, 8:9]) for b in range(2)])  # the last step's label
    np.testing.assert_array_equal(np.concatenate(ec.last_call.label_losses), prev)
    for sid in (sids if sharing == "per_stream" else [None]):
        for other in (eb, ec):
            got, want = other.state_dict(stream_id=sid), ea.state_dict(stream_id=sid)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _snapshot(eng, sids):
    return (eng.state_dict(), [eng.snapshot_stream(s) for s in sids])


def _same(a, b):
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
    for sa, sb in zip(a[1], b[1]):
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize("alg", ["tbptt", "snap1"])
def test_bad_labels_are_refused_and_change_nothing(alg):
    spec = make_spec("lstm", {}, alg, 2, 3, max_label_delay=2)
    eng = Engine(spec)
    x, y = data(spec, 1, 6)
    x = x["inputs"]
    eng.step(["s"], inputs=x[:, :5])                       # steps 0..4 wait for labels
    eng.step(["s"], labels=[([4], y[0, 4:5])])
    before = _snapshot(eng, ["s"])
    bad = [
        (([1], y[0, 1:2]), "too late"),                      # 4 - 1 > max_label_delay
        (([5], y[0, 1:2]), "in the future"),
        (([4], y[0, 4:5]), "already has its target"),
        (([3, 3], y[0, 3:5]), "labelled twice"),
        (([3], np.full((1, 2), np.nan, np.float32)), "NaN"),
        (([3], y[0, 3:4, :1]), "targets of shape"),
    ]
    for lab, msg in bad:
        with pytest.raises(ValueError, match=msg):
            eng.step(["s"], labels=[lab])
        _same(before, _snapshot(eng, ["s"]))
    with pytest.raises(ValueError, match="predict-only"):
        eng.step(["s"], inputs=x[:, 5:6], learn=False, labels=[([3], y[0, 3:4])])
    with pytest.raises(ValueError, match="in the future"):
        eng.step(["s", "new"], inputs=np.repeat(x[:, 5:6], 2, 0),
                 labels=[([3], y[0, 3:4]), ([0], y[0, 0:1])])
    _same(before, _snapshot(eng, ["s"]))
    assert not eng.has_stream("new")
    eng.step(["s"], labels=[([3], y[0, 3:4])], reset_after=True)
    with pytest.raises(ValueError, match="last reset"):
        eng.step(["s"], inputs=x[:, 5:6], labels=[([2], y[0, 2:3])])
    assert eng.stream_stats("s")["steps"] == 5  # the step count runs on across a reset


def test_labels_need_a_delay_bound_and_a_rule_that_keeps_them():
    eng = Engine(make_spec("lstm", {}, "tbptt", 2, 2))
    x, y = data(eng.spec, 1, 2)
    x = x["inputs"]
    eng.step(["s"], inputs=x[:, :1], targets=y[:, :1])
    with pytest.raises(ValueError, match="max_label_delay > 0"):
        eng.step(["s"], labels=[([0], y[0, :1])])
    with pytest.raises(ValueError, match="targets .* are required"):
        eng.step(["s"], inputs=x[:, 1:2])
    with pytest.raises(ValueError, match="RTRL"):
        make_spec("lstm", {}, "rtrl", 1, 1, max_label_delay=2).validate()
    with pytest.raises(ValueError, match="explicit"):
        make_spec("lstm", {}, "tbptt", 2, 2, target_mode="next_input",
                  max_label_delay=2).validate()
    with pytest.raises(ValueError, match="cpu"):
        make_spec("lstm", {}, "tbptt", 2, 2, device="cuda", max_label_delay=2).validate()


def test_memory_estimate_counts_the_label_window():
    from rnnstream.service.engine import memory_per_stream
    for alg in ("tbptt", "snap1"):
        base = memory_per_stream(make_spec("lstm", {}, alg, 4, 4))
        assert memory_per_stream(make_spec("lstm", {}, alg, 4, 4, max_label_delay=8)) > base
    eng = Engine(make_spec("lstm", {}, "snap1", 1, 1, max_label_delay=8))
    eng.step(["s"], inputs=data(eng.spec, 1, 1)[0]["inputs"])
    held = sum(a[0].nbytes for a in eng.pool.arrays.values())
    assert held <= memory_per_stream(eng.spec)


@pytest.mark.parametrize("alg", ["tbptt", "snap1"])
def test_a_restored_stream_keeps_its_waiting_steps_and_pending_labels(alg):
    spec = make_spec("lstm", {}, alg, 3, 3, max_label_delay=3)
    x, y = data(spec, 1, 8)
    x = x["inputs"]
    a = Engine(spec)
    a.step(["s"], inputs=x[:, :5])
    a.step(["s"], labels=[([2, 4], y[0, [2, 4]])])          # TBPTT: 2 of k1 = 3 pending
    b = Engine(spec)
    b.restore_model(a.snapshot_model())
    b.restore_stream("s", a.snapshot_stream("s"))
    for eng in (a, b):
        eng.step(["s"], inputs=x[:, 5:8], labels=[([3], y[0, 3:4])])
        eng.step(["s"], labels=[([6, 7], y[0, 6:8])], reset_after=True)
    assert a.stream_stats("s") == b.stream_stats("s")
    assert a.stream_stats("s")["updates"] >= 2
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)


@pytest.mark.parametrize("alg", ["tbptt", "snap1"])
def test_a_labels_only_row_batches_with_other_streams_steps(alg):
    """One call: stream a sends only labels (length 0), stream b sends steps. With per-stream
    weights this equals the two calls made apart."""
    spec = make_spec("gru", {}, alg, 1, 2, sharing="per_stream", max_label_delay=2)
    x, y = data(spec, 2, 4)
    x = x["inputs"]
    together, apart = Engine(spec), Engine(spec)
    for eng in (together, apart):
        eng.step(["a", "b"], inputs=x[:, :2])
    lab = ([1, 0], y[0, [1, 0]])
    together.step(["a", "b"], inputs=x[:, 2:4], lengths=np.array([0, 2]), labels=[lab, None])
    apart.step(["a"], labels=[lab])
    apart.step(["b"], inputs=x[1:, 2:4])
    for sid in ("a", "b"):
        assert together.stream_stats(sid) == pytest.approx(apart.stream_stats(sid), nan_ok=True)
        for k, v in apart.state_dict(stream_id=sid).items():
            np.testing.assert_array_equal(together.state_dict(stream_id=sid)[k], v, err_msg=k)
    assert together.stream_stats("a")["steps"] == 2 and together.stream_stats("a")["updates"] > 0


@pytest.mark.parametrize("rule", [("rtrl", 1, 1), ("tbptt", 3, 3), ("snap1", 1, 1)], ids=rid)
@pytest.mark.parametrize("mode", ["explicit", "next_input"])
def test_reset_after_without_labels_matches_the_reference(rule, mode):
    """reset_after needs no late labels: any rule, either target mode; one stream of the
    batch is reset after each chunk, the other runs on."""
    alg, k1, k2 = rule
    spec = make_spec("lstm", {}, alg, k1, k2, target_mode=mode)
    eng = Engine(spec)
    ref = reference_for(eng, spec)
    x, y = data(spec, 2, 8)
    for t in range(0, 8, 2):
        kw = chunk_of(x, t, t + 2)
        if mode == "explicit":
            kw["targets"] = y[:, t:t + 2]
        gp, gl = eng.step(["a", "b"], reset_after=[True, False], **kw)
        wp, wl = ref.step(["a", "b"], reset_after=[True, False], **kw)
        np.testing.assert_allclose(np.asarray(gp, np.float64), wp, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(gl, np.float64), wl, rtol=1e-4, atol=1e-5,
                                   equal_nan=True)
    assert_weights_close(eng.state_dict(), ref.params(), what="final weights")
    assert eng.stream_stats("a")["steps"] == 8
