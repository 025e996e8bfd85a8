"""The byte context-mixing member ({"baseline": "context"}) of a token model: its kernel equals
the plain-Python reference (distributions and losses, across chunks, with a learn=False chunk
and a vocabulary under 256); in an ensemble, Hedge moves to it on repetitive text; shared and
per-stream state round-trips through snapshots exactly; reset/drop/stats; refusals; the
default for byte models."""

import math

import numpy as np
import pytest

from rnnstream.service.engine import EnsembleEngine, Spec, make_engine, memory_per_stream
from rnnstream.kernels import context as ck
from rnnstream.service.engine import context
from tests.kernels.engine_support import restored_and_continued
from tests.reference.context import ContextReference

CONTEXT = {"baseline": "context"}
TEXT = (b"the cat sat on the mat. the cat ate the rat. a cat is a cat; "
        b"def f(x): return x + 1\ndef g(x): return f(x) * 2\n") * 3


def byte_spec(**kw):
    fields = dict(vocab_size=256, num_classes=256, target_mode="next_input", cell="gru",
                  hidden_sizes=(8,), input_size=4, tbptt_k1=4, tbptt_k2=4, lr=1e-2,
                  members=({}, CONTEXT))
    fields.update(kw)
    return Spec(**fields)


def run_kernel(state, tokens, vocab=256, learn=True):
    n = len(tokens)
    out, losses = np.empty((n, 256)), np.empty(n)
    ck.run_bytes(np.asarray(tokens, dtype=np.int64), state["table"], state["weights"],
                 state["history"], state["last_seen"], state["last_dist"], state["scalars"],
                 out, losses, vocab, learn)
    return out, losses


@pytest.mark.parametrize("vocab", [256, 120])
def test_kernel_equals_the_reference(vocab):
    tokens = [b % vocab for b in TEXT]
    bits = 12  # a small table: collisions and check mismatches happen
    state = {**context._fresh(context.model_shapes(bits)), **context._fresh(context.stream_shapes())}
    ref = ContextReference(ck, bits, context.HISTORY_BITS, context.MATCH_BITS,
                           vocab=vocab)
    cuts = [0, 1, 50, 90, 200, len(tokens)]
    for a, b in zip(cuts[:-1], cuts[1:]):
        learn = a != 50  # the third chunk only predicts
        out, losses = run_kernel(state, tokens[a:b], vocab, learn)
        for t in range(b - a):
            loss, dist = ref.step(tokens[a + t], learn)
            if loss is None:
                assert math.isnan(losses[t])
            else:
                np.testing.assert_allclose(losses[t], loss, rtol=1e-9)
            np.testing.assert_allclose(out[t], dist, rtol=1e-9, atol=1e-15)
    assert np.all(out[:, vocab:] == 0) and np.allclose(out.sum(axis=1), 1.0)
    assert state["scalars"][ck.STEPS] == len(tokens)
    # the repeats are learned: the last copy costs far less than 8 bits a byte
    assert np.mean(losses[-50:]) / math.log(2) < 2.0


def test_hedge_moves_to_the_context_member_on_repetitive_text():
    spec = byte_spec()
    ens = make_engine(spec)
    tokens = np.frombuffer(TEXT * 4, dtype=np.uint8).astype(np.int64)[None]
    for a in range(0, tokens.shape[1], 64):
        preds, losses = ens.step(["t"], tokens=tokens[:, a:a + 64])
    stats = ens.stream_stats("t")
    assert stats["members"][1]["weight"] > 0.99
    assert stats["members"][1]["running_loss"] < 0.5 * stats["members"][0]["running_loss"]
    assert stats["steps"] == tokens.shape[1]
    np.testing.assert_allclose(preds.sum(axis=2), 1.0, rtol=1e-4)


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_snapshots_continue_exactly_reset_drop(sharing):
    spec = byte_spec(sharing=sharing)
    one = EnsembleEngine(spec)
    tokens = np.frombuffer(TEXT, dtype=np.uint8).astype(np.int64)[None]
    one.step(["s"], tokens=tokens[:, :100])
    snap, model = one.snapshot_stream("s"), one.snapshot_model()
    assert ("members.1.table" in model) == (sharing == "shared")
    assert ("members.1.table" in snap) == (sharing == "per_stream")
    two = restored_and_continued(spec, one, snap, model,
                                 [dict(tokens=tokens[:, a:b]) for a, b in ((100, 150), (150, len(TEXT)))])
    one.reset_stream("s")
    assert one.snapshot_stream("s")["members.1.scalars"].sum() == 0
    one.drop_stream("s")
    assert not one.members[1].has_stream("s")
    broken = dict(snap, **{"members.1.last_dist": np.full(256, np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        two.restore_stream("u", broken)
    with pytest.raises(ValueError, match="history"):
        two.restore_stream("u", {k: v for k, v in snap.items() if k != "members.1.history"})
    assert not any(m.has_stream("u") for m in two.members)
    assert two.state_dict().keys() == {f"members.0.{k}" for k in two.members[0].state_dict()}
    assert memory_per_stream(spec) > memory_per_stream(spec.member_spec(0)) + (1 << 20)


@pytest.mark.parametrize("change,words", [
    (dict(vocab_size=300, num_classes=300), "vocab_size at most 256"),
    (dict(vocab_size=0, num_classes=0, input_size=3, output_size=1, target_mode="explicit"),
     "token model"),
    (dict(members=({}, dict(CONTEXT, lr=0.1))), "sets only 'baseline'"),
    (dict(context_table_bits=9), "context_table_bits must be in 10..26"),
    (dict(context_table_bits=27), "context_table_bits must be in 10..26"),
])
def test_refusals(change, words):
    with pytest.raises(ValueError) as info:
        make_engine(byte_spec(**change))
    assert words in str(info.value)


def test_table_size_is_in_the_spec_memory_and_snapshots():
    small, big = byte_spec(context_table_bits=12), byte_spec(context_table_bits=14)
    assert small.context_table_bits == 12
    assert make_engine(small).snapshot_model()["members.1.table"].shape == (1 << 12,)
    per = [byte_spec(context_table_bits=b, sharing="per_stream") for b in (12, 14)]
    assert memory_per_stream(per[1]) - memory_per_stream(per[0]) == 4 * ((1 << 14) - (1 << 12))
    assert memory_per_stream(big) == memory_per_stream(small)  # shared: the table is the model's
    one = EnsembleEngine(small)
    one.step(["s"], tokens=np.frombuffer(TEXT, np.uint8).astype(np.int64)[None, :40])
    with pytest.raises(ValueError, match="table"):
        EnsembleEngine(big).restore_model(one.snapshot_model())


def test_byte_models_given_their_shape_run_the_context_member():
    spec = Spec(vocab_size=256, num_classes=256, target_mode="next_input")
    assert spec.members == ({}, CONTEXT) and spec.cell == "gru"
    assert spec.context_table_bits == 22  # the spec names the table in effect
    assert Spec(input_size=2, output_size=1).context_table_bits == 0  # no context member
    assert Spec(vocab_size=1000, num_classes=1000, target_mode="next_input").members == ()
    assert Spec(vocab_size=256, num_classes=256, target_mode="next_input", cell="lstm").members == ()
    assert Spec.from_dict(spec.to_dict()).members == spec.members
