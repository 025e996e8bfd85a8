"""A PER_STREAM model's batch split across threads (service/engine/shards.py) gives every
stream bit for bit what one kernel call gives it."""
import numpy as np
import pytest

from rnnstream.service.engine import shards
from tests.kernels.engine_support import make_spec, random_chunks

B = 2 * shards.MIN_STREAMS_PER_PART + 3  # two parts of unequal size


def _run(spec, chunks, threads):
    from rnnstream.service.engine import make_engine
    shards.set_threads(threads)
    try:
        engine = make_engine(spec)
        ids = [f"s{b}" for b in range(B)]
        outs, norms, stats = [], [], []
        for kw in chunks:
            outs.append([np.array(a) for a in engine.step(ids, **kw)])
            norms.append(sorted(engine.last_call.gradient_norms))
            stats.append((engine.last_call.steps, engine.last_call.updates, engine.last_call.clipped))
        weights = [engine.state_dict(sid) for sid in ids]
        return outs, norms, stats, weights
    finally:
        shards.set_threads(0)


@pytest.mark.parametrize("algorithm,k1,k2", [("tbptt", 2, 3), ("rtrl", 1, 1), ("snap1", 1, 1)])
@pytest.mark.parametrize("inp", ["dense", "token"])
def test_a_split_batch_is_bit_for_bit_one_call(algorithm, k1, k2, inp):
    spec = make_spec("lstm", algorithm=algorithm, k1=k1, k2=k2, inp=inp, sharing="per_stream",
                     optimizer="adam", lr=0.01, clip_norm=1.0)
    chunks = random_chunks(spec, B, [5, 1, 7])
    o_outs, o_norms, o_stats, o_w = _run(spec, chunks, 1)
    s_outs, s_norms, s_stats, s_w = _run(spec, chunks, 2)
    for a, b in zip(o_outs, s_outs):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert o_norms == s_norms and o_stats == s_stats and o_stats[0][1] > 0
    for wa, wb in zip(o_w, s_w):
        for name in wa:
            np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def test_parts_cover_the_batch_and_small_batches_stay_whole():
    shards.set_threads(3)
    try:
        assert shards.parts(shards.MIN_STREAMS_PER_PART * 2 - 1) == [(0, shards.MIN_STREAMS_PER_PART * 2 - 1)]
        runs = shards.parts(100)
        assert len(runs) == 3 and runs[0][0] == 0 and runs[-1][1] == 100
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    finally:
        shards.set_threads(0)


def test_late_labels_and_resets_around_a_split_batch_are_bit_for_bit_one_call():
    spec = make_spec("gru", algorithm="tbptt", k1=2, k2=3, sharing="per_stream", max_label_delay=4,
                     optimizer="sgd", lr=0.05)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, 4, 3)).astype(np.float32)
    y = rng.standard_normal((B, 4, 2)).astype(np.float32)
    ids = [f"s{b}" for b in range(B)]
    runs = []
    for threads in (1, 2):
        from rnnstream.service.engine import make_engine
        shards.set_threads(threads)
        try:
            engine = make_engine(spec)
            engine.step(ids, inputs=x)
            labels = [([1, 2], y[b, 1:3]) for b in range(B)]
            out = engine.step(ids, inputs=x, targets=y, labels=labels, reset_after=[b % 2 == 0 for b in range(B)])
            runs.append(([np.array(a) for a in out], sorted(engine.last_call.gradient_norms),
                         engine.last_call.updates, [engine.state_dict(sid) for sid in ids]))
        finally:
            shards.set_threads(0)
    (o_out, o_norms, o_up, o_w), (s_out, s_norms, s_up, s_w) = runs
    for a, b in zip(o_out, s_out):
        np.testing.assert_array_equal(a, b)
    assert o_norms == s_norms and o_up == s_up == len(o_norms) > 0
    for wa, wb in zip(o_w, s_w):
        for name in wa:
            np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
