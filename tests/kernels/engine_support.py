"""Shared helpers of the engine suites: specs, random chunks, the reference learner started
from the engine's own weights, and comparisons."""

import dataclasses
import itertools

import numpy as np

from rnnstream.kernels import registry
from rnnstream.service.engine import Engine, EnsembleEngine, Spec
from tests.reference.cases import CELL_VARIANTS, cell_id
from tests.reference.learner import Learner
from tests.reference.params import Config, layout

RTOL, ATOL = 1e-4, 1e-5
RULES = [("rtrl", 4, 4), ("tbptt", 2, 3), ("tbptt", 3, 3), ("snap1", 4, 4)]
OPTIMIZERS = registry.names("optimizer")


def rule_id(rule):
    alg, k1, k2 = rule
    return f"tbptt{k1}-{k2}" if alg == "tbptt" else alg


def make_spec(cell="lstm", variant=None, algorithm="rtrl", k1=4, k2=4, inp="dense",
              layers=(3,), target_mode="explicit", sharing="shared", optimizer="sgd", lr=0.05,
              head=None, **kw):
    """A small Spec. ``inp``: dense rows (regression head unless ``head='classes'``) or tokens
    (softmax over the vocabulary). NEXT_INPUT sizes the output to the input."""
    variant = variant or {}
    head = head or ("classes" if inp == "token" else "regression")
    vocab = 5 if inp == "token" else 0
    if head == "classes":
        out, classes = 0, (vocab if inp == "token" else 4)
    else:
        out, classes = (3 if target_mode == "next_input" else 2), 0
    fields = dict(cell=cell, lstm_variant="standard", gru_variant="pytorch",
                  hidden_sizes=tuple(layers), input_size=3, vocab_size=vocab, output_size=out,
                  num_classes=classes, algorithm=algorithm, tbptt_k1=k1, tbptt_k2=k2,
                  optimizer=optimizer, lr=lr, momentum=0.0, nesterov=False, betas=(0.9, 0.999),
                  eps=None, alpha=0.99, clip_norm=0.0, weight_decay=0.0, sharing=sharing,
                  device="cpu", seed=0, target_mode=target_mode,
                  # the measured defaults turn these on; a case asks for them by name
                  linear_skip=False, output_taps=())
    fields.update(variant)
    fields.update(kw)
    return Spec(**fields)


def ref_config(spec):
    return Config.from_spec(spec)


def random_chunks(spec, B, lengths, seed=0):
    """Keyword arguments of ``Engine.step`` for consecutive chunks of the given lengths."""
    rng = np.random.default_rng(seed)
    out = []
    for T in lengths:
        kw = {}
        if spec.vocab_size > 0:
            kw["tokens"] = rng.integers(0, spec.vocab_size, size=(B, T)).astype(np.int64)
        else:
            kw["inputs"] = rng.standard_normal((B, T, spec.input_size)).astype(np.float32)
        if spec.target_mode == "explicit":
            if spec.num_classes > 0:
                kw["target_classes"] = rng.integers(0, spec.num_classes, size=(B, T)).astype(np.int64)
            else:
                kw["targets"] = rng.standard_normal((B, T, spec.output_size)).astype(np.float32)
        out.append(kw)
    return out


def to_float64(d):
    return {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}


def reference_for(eng, spec, **rule_kwargs):
    """The reference learner started from the engine's current (template) weights."""
    return Learner(ref_config(spec), to_float64(eng.state_dict()), **rule_kwargs)


def assert_weights_close(got, expected, rtol=RTOL, atol=ATOL, what=""):
    assert set(got) == set(expected), (what, sorted(set(got) ^ set(expected)))
    for name in expected:
        np.testing.assert_allclose(np.asarray(got[name], dtype=np.float64), expected[name],
                                   rtol=rtol, atol=atol, err_msg=f"{what} {name}")


def assert_layout(spec, sd):
    want = layout(ref_config(spec))
    assert list(sd) == [n for n, _ in want] or set(sd) == {n for n, _ in want}
    for name, shape in want:
        assert tuple(np.shape(sd[name])) == tuple(shape), (name, np.shape(sd[name]), shape)


__all__ = ["Engine", "Spec", "CELL_VARIANTS", "cell_id", "RULES", "OPTIMIZERS", "rule_id",
           "make_spec", "random_chunks", "reference_for", "assert_weights_close",
           "assert_layout", "to_float64", "ref_config", "dataclasses", "itertools", "RTOL", "ATOL"]


def restored_and_continued(spec, one, snap, model, chunks, sid="s"):
    """A new ensemble restored from ``one``'s model and stream snapshots; asserts that it
    continues bit for bit with ``one`` over ``chunks`` (step keyword arguments) and that their
    stream stats agree. Returns the new ensemble."""
    two = EnsembleEngine(spec)
    two.restore_model(model)
    two.restore_stream(sid, snap)
    for c in chunks:
        for got, want in zip(two.step([sid], **c), one.step([sid], **c)):
            np.testing.assert_array_equal(got, want)
    assert two.stream_stats(sid) == one.stream_stats(sid)
    return two


def step_against_references(member, refs, x, cls, lengths, mode, sentinel):
    """One ``member.step`` of streams "a", "b", ... (one per row of x) checked step by step against one plain
    reference per stream (``predict(x)`` -> probabilities or None, ``learn(x, class)``):
    predictions, losses, the fallback where the reference has nothing yet, learn modes 1
    (learn) and 2 (no targets), and NaN past each stream's length."""
    B, T, C = x.shape[0], x.shape[1], member.C
    batch = {"inputs": x.astype(np.float32), "tclass": cls, "learn": mode,
             "lengths": np.array(lengths, dtype=np.int64)}
    fallback = np.full((B, T, C), sentinel, dtype=np.float32)
    preds, losses = member.step([chr(ord("a") + b) for b in range(B)], batch, fallback,
                                np.full((B, T), 9.0, np.float32))
    for b in range(B):
        for t in range(lengths[b]):
            xt = x[b, t].astype(np.float32).astype(np.float64).tolist()
            want = refs[b].predict(xt)
            if want is None:
                np.testing.assert_array_equal(preds[b, t], np.float32(sentinel))
                assert losses[b, t] == 9.0
            else:
                np.testing.assert_allclose(preds[b, t], want, rtol=1e-5)
                if mode == 2:
                    assert np.isnan(losses[b, t])
                else:
                    np.testing.assert_allclose(losses[b, t], -np.log(want[cls[b, t]]), rtol=1e-5)
            if mode == 1:
                refs[b].learn(xt, int(cls[b, t]))
        assert np.isnan(preds[b, lengths[b]:]).all()
