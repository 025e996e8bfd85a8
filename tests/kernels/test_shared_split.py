"""A SHARED model's batch split across threads (service/engine/shared_parts.py): bit for bit
the same run to run at a given worker count, bit for bit one call when run as one part, and
equal to one call up to the order of the gradient sum with two or three parts, counters,
skips, clipping and gradient norms included."""
import numpy as np
import pytest

from rnnstream.kernels import chunk
from rnnstream.service.engine import make_engine, shards, shared_parts
from tests.kernels.engine_support import make_spec, random_chunks

B = 2 * shards.MIN_SHARED_STREAMS_PER_PART + 3  # two parts of unequal size
# float32, a few updates apart: the sums differ in their last bits, and so do their products
RTOL, ATOL = 2e-5, 2e-6


def _run(spec, calls, threads, n_streams=B, parts=0):
    """Each call of ``calls`` (Engine.step's keyword arguments) on one engine with the batch
    split for ``threads`` threads (or in ``parts`` parts); everything the calls and the model
    say afterwards."""
    shards.set_threads(threads)
    split = []
    real = shared_parts.run_chunk
    shared_parts.run_chunk = lambda *a: split.append(len(a[-1])) or real(*a)
    try:
        engine = make_engine(spec)
        ids = [f"s{b}" for b in range(n_streams)]
        got = []
        for kw in calls:
            if parts:
                with shards.split_in_this_thread(parts):
                    out = engine.step(ids, **kw)
            else:
                out = engine.step(ids, **kw)
            last = engine.last_call
            got.append(([np.array(a) for a in out], list(last.gradient_norms),
                         (last.steps, last.updates, last.clipped, dict(last.skipped)),
                         [np.array(a) for a in last.label_losses]))
        # the split path ran, in as many parts as asked (none with one thread)
        if threads > 1 or parts:
            assert set(split) == {parts or threads}
        return got, engine.state_dict(), [engine.stream_stats(sid) for sid in ids]
    finally:
        shared_parts.run_chunk = real
        shards.set_threads(0)


def _same(a, b):
    (calls_a, w_a, info_a), (calls_b, w_b, info_b) = a, b
    for (out_a, norms_a, stats_a, lab_a), (out_b, norms_b, stats_b, lab_b) in zip(calls_a, calls_b):
        for x, y in zip(out_a + lab_a, out_b + lab_b):
            np.testing.assert_array_equal(x, y)
        assert norms_a == norms_b and stats_a == stats_b
    for name in w_a:
        np.testing.assert_array_equal(w_a[name], w_b[name], err_msg=name)
    assert info_a == info_b


def _near(x, y, err_msg):
    """Equal up to float32 rounding of sums taken in another order, relative to the array's
    scale (an element near zero in a tensor of large ones moves by the large ones' rounding)."""
    finite = np.abs(y[np.isfinite(y)])
    scale = finite.max() if finite.size else 0.0
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL + RTOL * scale, equal_nan=True,
                               err_msg=err_msg)


def _close(a, b):
    (calls_a, w_a, info_a), (calls_b, w_b, info_b) = a, b
    for c, ((out_a, norms_a, stats_a, lab_a), (out_b, norms_b, stats_b, lab_b)) in enumerate(
            zip(calls_a, calls_b)):
        for x, y in zip(out_a + lab_a, out_b + lab_b):
            _near(x, y, f"call {c}")
        assert stats_a == stats_b, f"call {c}: steps, updates, clipped, skipped"
        np.testing.assert_allclose(norms_a, norms_b, rtol=RTOL, err_msg=f"call {c}: norms")
    for name in w_a:
        _near(w_a[name], w_b[name], name)
    for ia, ib in zip(info_a, info_b):
        for k in ia:
            if isinstance(ia[k], float):
                np.testing.assert_allclose(ia[k], ib[k], rtol=RTOL, atol=ATOL, err_msg=k)
            else:
                assert ia[k] == ib[k], k


def _check(spec, calls):
    one = _run(spec, calls, 1)
    two = _run(spec, calls, 2)
    assert one[0][0][2][1] > 0 or one[0][-1][2][1] > 0, "the calls must update the weights"
    _same(two, _run(spec, calls, 2))  # the same parts: the same bits, whatever the timing
    _close(one, two)
    _close(one, _run(spec, calls, 3, parts=3))


@pytest.mark.parametrize("algorithm,k1,k2", [("tbptt", 2, 3), ("tbptt", 4, 4), ("rtrl", 1, 1),
                                             ("snap1", 1, 1)])
@pytest.mark.parametrize("inp", ["dense", "token"])
def test_a_split_shared_batch_is_one_call_up_to_summation_order(algorithm, k1, k2, inp):
    spec = make_spec("lstm", algorithm=algorithm, k1=k1, k2=k2, inp=inp, optimizer="adam",
                     lr=0.01, clip_norm=0.5)
    calls = random_chunks(spec, B, [5, 3, 7, 3])
    calls[1]["lengths"] = 1 + np.arange(B) % 3  # ragged
    _check(spec, calls)


@pytest.mark.parametrize("algorithm,k1,k2", [("tbptt", 3, 3), ("snap1", 1, 1)])
def test_next_input_targets_split(algorithm, k1, k2):
    spec = make_spec("gru", algorithm=algorithm, k1=k1, k2=k2, inp="token",
                     target_mode="next_input", optimizer="sgd", lr=0.01)
    _check(spec, random_chunks(spec, B, [4, 1, 6]))


@pytest.mark.parametrize("algorithm,k1,k2", [("tbptt", 2, 3), ("snap1", 1, 1)])
def test_late_labels_and_resets_around_a_split_batch(algorithm, k1, k2):
    spec = make_spec("lstm", algorithm=algorithm, k1=k1, k2=k2, max_label_delay=4,
                     optimizer="sgd", lr=0.005)  # small: B streams' gradients make one step
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, 6, 3)).astype(np.float32)
    y = rng.standard_normal((B, 6, 2)).astype(np.float32)
    calls = [dict(inputs=x[:, :4]),
             dict(inputs=x[:, 4:], labels=[([1, 2], y[b, 1:3]) for b in range(B)],
                  reset_after=[b % 3 == 0 for b in range(B)]),
             dict(inputs=x[:, :5], targets=y[:, :5])]
    _check(spec, calls)


def test_skipped_losses_and_an_overflowing_update_count_as_one_call_counts_them():
    spec = make_spec("elman", algorithm="tbptt", k1=2, k2=2, optimizer="adam", lr=0.01,
                     normalize="off")  # the targets as given
    calls = random_chunks(spec, B, [4, 4])
    calls[0]["targets"][7, 1] = 3e19          # its loss overflows float32: a skipped loss
    # every stream's loss finite, their summed gradient too, its square in Adam's moment not
    calls[1]["targets"][:, 2, 0] = 1.2e19
    one = _run(spec, calls, 1)
    skipped = one[0][0][2][3], one[0][1][2][3]
    assert skipped[0]["nonfinite_loss"] > 0 and skipped[1]["nonfinite_gradient"] > 0
    _close(one, _run(spec, calls, 2))


def test_one_part_is_bit_for_bit_one_call(monkeypatch):
    """The split path with a single part: every counter, norm and weight equal to one call's."""
    spec = make_spec("lstm", algorithm="tbptt", k1=2, k2=3, optimizer="adam", lr=0.01,
                     clip_norm=0.5)
    calls = random_chunks(spec, B, [5, 7])
    one = _run(spec, calls, 1)
    monkeypatch.setattr(chunk, "run_chunk", lambda model, weights, pool, kbatch, out:
                        shared_parts.run_chunk(model, weights, pool, kbatch, out,
                                               [(0, kbatch[0].shape[0])]))
    _same(one, _run(spec, calls, 1))


def test_update_stages_plan_tbptt_k_by_k_as_one_stretch():
    """TBPTT(4, 4) with 4-step chunks: the parts meet once per chunk, after its last step."""
    from rnnstream.kernels.bundles import MODEL_CFG, POOL_CNT
    from rnnstream.kernels.shared_steps import STAGE_STEP, STAGES
    spec = make_spec("lstm", algorithm="tbptt", k1=4, k2=4)
    engine = make_engine(spec)
    ids = [f"s{b}" for b in range(4)]
    engine.step(ids, **random_chunks(spec, 4, [4])[0])
    weights, pool = engine.backend.bundles()
    slots = np.array([engine.pool.slots[sid] for sid in ids])
    kbatch = (slots, None, None, None, None, None, np.full(4, 4), 1)
    cfg, cnt = engine.backend.model[MODEL_CFG], pool[POOL_CNT]
    assert shared_parts.update_stages(cfg, kbatch, cnt, 4) == [3 * STAGES + STAGE_STEP]
    # a ragged batch: the streams that run all 4 steps still update after the last
    assert shared_parts.update_stages(cfg, kbatch[:6] + (np.array([4, 4, 2, 0]), 1), cnt,
                                      4) == [3 * STAGES + STAGE_STEP]
    # 2 steps more: the parts meet after the second
    assert shared_parts.update_stages(cfg, kbatch[:6] + (np.full(4, 2), 1), cnt, 4) == []
    # 2 losses pending: an update after the second step of the next chunk
    engine.step(ids, **random_chunks(spec, 4, [2])[0])
    assert shared_parts.update_stages(cfg, kbatch, cnt, 4) == [1 * STAGES + STAGE_STEP]
    assert shared_parts.update_stages(cfg, kbatch[:7] + (0,), cnt, 4) == []  # nothing learned


def test_a_small_shared_batch_stays_one_call():
    spec = make_spec("lstm", algorithm="tbptt", k1=2, k2=2)
    small = 2 * shards.MIN_SHARED_STREAMS_PER_PART - 1
    calls = random_chunks(spec, small, [3])
    shards.set_threads(2)
    split = []
    real = shared_parts.run_chunk
    shared_parts.run_chunk = lambda *a: split.append(a) or real(*a)
    try:
        make_engine(spec).step([f"s{b}" for b in range(small)], **calls[0])
        make_engine(spec).step([f"s{b}" for b in range(small + 1)],
                               **random_chunks(spec, small + 1, [3])[0])
    finally:
        shared_parts.run_chunk = real
        shards.set_threads(0)
    assert len(split) == 1 and split[0][3][0].shape[0] == small + 1
