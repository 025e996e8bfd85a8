"""rnnstream in the quality benchmark: the engine in-process, fed the raw framed stream.

The default is ``Spec`` given only the data's shape; candidates for ``--configs`` are that
plus overrides. A candidate that names a Spec field this engine does not have yet (the issue's
new options land one branch at a time) is reported as skipped, not silently run as another.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .quality_data import CLASSIFICATION, REGRESSION, TEXT

CHUNK = 256  # steps per engine call for single-entity streams; prequential either way


def shape_spec_fields(stream) -> dict:
    """What a new user gives: only the data's shape."""
    if stream.task == REGRESSION:
        return {"input_size": stream.X.shape[1], "output_size": 1}
    if stream.task == CLASSIFICATION:
        return {"input_size": stream.X.shape[1], "num_classes": stream.num_classes}
    return {"vocab_size": 256, "num_classes": 256, "target_mode": "next_input"}


def spec_fields() -> set:
    from rnnstream.service.engine import Spec
    return {f.name for f in dataclasses.fields(Spec)}


def missing_fields(overrides: dict) -> list:
    return sorted(set(overrides) - spec_fields())


def make_engine(spec):
    """The ensemble branch adds a factory that picks the engine for a spec; use it when there."""
    import rnnstream.service.engine as se
    factory = getattr(se, "make_engine", None)
    return factory(spec) if factory is not None else se.Engine(spec)


def build_spec(stream, overrides=None):
    from rnnstream.service.engine import Spec
    fields = shape_spec_fields(stream)
    fields.update(overrides or {})
    return Spec(**fields)


def run(stream, overrides=None):
    """Outputs in the benchmark's common form (predictions [n], probabilities [n, C], or bits
    per byte for text), each made before the engine learned that sample."""
    engine = make_engine(build_spec(stream, overrides))
    if stream.task == TEXT:
        return _run_text(engine, stream)
    classify = stream.task == CLASSIFICATION
    width = stream.num_classes if classify else 1
    out = np.empty((stream.n, width))
    single = len(set(stream.keys)) == 1
    if single:
        # one entity: whole chunks; the engine predicts each step before learning it
        bounds = [(a, min(a + CHUNK, stream.n)) for a in range(0, stream.n, CHUNK)]
    else:
        # interleaved entities: one row per call, in the data's order, as the peers see them
        bounds = [(i, i + 1) for i in range(stream.n)]
    for a, b in bounds:
        out[a:b] = step_rows(engine, stream, a, b, classify)
    return out if classify else out[:, 0]


def step_rows(engine, stream, a, b, classify):
    """Predict, then learn, rows [a, b) of a dense stream as one chunk; the predictions."""
    x = stream.X[None, a:b].astype(np.float32)
    if classify:
        preds, _ = engine.step([stream.keys[a]], inputs=x,
                               target_classes=stream.y[None, a:b].astype(np.int64))
    else:
        preds, _ = engine.step([stream.keys[a]], inputs=x,
                               targets=stream.y[None, a:b, None].astype(np.float32))
    return preds[0]


def _run_text(engine, stream):
    """Bits per byte over the whole stream. In next_input mode the prediction made at step t is
    for byte t+1; byte 0 is scored as uniform (8 bits), as a model with no input can do."""
    tokens = stream.y.astype(np.int64)
    bits = 8.0
    prev = None  # the last prediction of the previous chunk, for the next chunk's first byte
    for a in range(0, stream.n, CHUNK):
        b = min(a + CHUNK, stream.n)
        preds, _ = engine.step([stream.keys[0]], tokens=tokens[None, a:b])
        p = preds[0].astype(np.float64)
        if prev is not None:
            bits -= np.log2(max(prev[tokens[a]], 1e-15))
        if b - a > 1:
            nxt = tokens[a + 1:b]
            bits -= np.log2(np.maximum(p[np.arange(b - a - 1), nxt], 1e-15)).sum()
        prev = p[-1]
    return bits / stream.n


# a candidate for the next default, shown beside the default in the main table (the issue #9
# grid chose today's default this way); now the default written out, persistence and
# seasonal-naive members included (regression), nearest neighbours (classification), context
# mixing (bytes)
_E4 = ({"lr": 1e-2}, {"lr": 3e-2}, {"optimizer": "sgd", "lr": 3e-2},
       {"optimizer": "sgd", "lr": 1e-1})
_DENSE = {"members": _E4, "tbptt_k1": 1, "tbptt_k2": 8, "clip_norm": 1.0,
          "linear_skip": True}
RECOMMENDED = {
    # regression also feeds the last observed target back (NARX)
    REGRESSION: {**_DENSE, "output_taps": (1,),
                 "members": _E4 + ({"baseline": "last_target"},
                                   {"baseline": "seasonal_scaled"},
                                   {"baseline": "running_median"})},
    CLASSIFICATION: {**_DENSE, "members": _E4 + ({"baseline": "knn"}, {"baseline": "knn_wide"},
                                               {"baseline": "tree"})},
    TEXT: {"input_size": 64, "cell": "gru", "hidden_sizes": (512,),
           "members": ({}, {"baseline": "context"})},
}


def recommended(task: str) -> dict:
    return RECOMMENDED[task]


# candidates for --configs ----------------------------------------------------------------
# Every candidate but "default" is its overrides on this fixed base, the defaults before
# issue #9 (with normalisation on), so the grid means the same whatever the defaults become.
BASE = {
    "dense": {"cell": "lstm", "hidden_sizes": (32,), "algorithm": "tbptt", "tbptt_k1": 16,
              "tbptt_k2": 16, "optimizer": "adam", "lr": 1e-3, "clip_norm": 0.0,
              "members": (), "linear_skip": False, "output_taps": ()},
    "text": {"cell": "lstm", "hidden_sizes": (32,), "algorithm": "tbptt", "tbptt_k1": 16,
             "tbptt_k2": 16, "optimizer": "adam", "lr": 1e-3, "clip_norm": 0.0},
}


def on_base(name: str, overrides: dict, task: str) -> dict:
    """The fields a candidate runs with: the base (those fields this Spec has) + overrides."""
    if name == "default":
        return dict(overrides)
    have = spec_fields()
    base = {k: v for k, v in BASE["text" if task == TEXT else "dense"].items() if k in have}
    if "optimizer" in overrides and "lr" not in overrides:
        base.pop("lr", None)
    return {**base, **overrides}


def _today(c: dict):
    """Options today's engine has: learning rate x update interval, SGD, clipping, sizes,
    cell, SnAp-1."""
    for lr in (1e-3, 3e-3, 1e-2, 3e-2):
        for k1, k2 in ((16, 16), (1, 8), (1, 16)):
            c[f"adam lr={lr:g} tbptt({k1},{k2})"] = {"lr": lr, "tbptt_k1": k1, "tbptt_k2": k2}
    for lr in (1e-2, 3e-2, 1e-1):
        c[f"sgd lr={lr:g} tbptt(1,16)"] = {"optimizer": "sgd", "lr": lr, "tbptt_k1": 1,
                                          "tbptt_k2": 16}
    base = {"lr": 1e-2, "tbptt_k1": 1, "tbptt_k2": 16}
    c["adam lr=0.01 tbptt(1,16) clip=1"] = {**base, "clip_norm": 1.0}
    for h in (8, 64):
        c[f"adam lr=0.01 tbptt(1,16) H={h}"] = {**base, "hidden_sizes": (h,)}
    c["gru adam lr=0.01 tbptt(1,16)"] = {**base, "cell": "gru"}
    c["snap1 adam lr=0.01"] = {"lr": 1e-2, "algorithm": "snap1"}


def _new_options(c: dict):
    """The issue's new options (normalisation, linear skip, taps, ensembles), alone and on the
    best of today's settings."""
    c["normalize=off"] = {"normalize": "off"}
    c["normalize=per_stream"] = {"normalize": "per_stream"}
    c["normalize_decay=0.999"] = {"normalize_decay": 0.999}
    c["skip"] = {"linear_skip": True}
    for lr in (3e-3, 1e-2, 3e-2):
        for k1, k2 in ((16, 16), (1, 8), (1, 16)):
            c[f"skip adam lr={lr:g} tbptt({k1},{k2})"] = {
                "linear_skip": True, "lr": lr, "tbptt_k1": k1, "tbptt_k2": k2}
    c["skip adam lr=0.01 tbptt(1,16) clip=1"] = {
        "linear_skip": True, "lr": 1e-2, "tbptt_k1": 1, "tbptt_k2": 16, "clip_norm": 1.0}
    taps = {"otaps=1": {"output_taps": (1,)}, "otaps=1,2": {"output_taps": (1, 2)},
            "itaps=1": {"input_taps": (1,)},
            "otaps=1 itaps=1": {"output_taps": (1,), "input_taps": (1,)}}
    for name, t in taps.items():
        c[f"skip {name}"] = {"linear_skip": True, **t}
        for lr, k1 in ((3e-3, 1), (1e-2, 1), (1e-2, 16)):
            c[f"skip {name} adam lr={lr:g} tbptt({k1},16)"] = {
                "linear_skip": True, "lr": lr, "tbptt_k1": k1, "tbptt_k2": 16, **t}
    c[f"otaps=1 adam lr=0.01 tbptt(1,16)"] = {"output_taps": (1,), "lr": 1e-2,
                                              "tbptt_k1": 1, "tbptt_k2": 16}
    lrs = ({"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2}, {"lr": 3e-2})
    c["ensemble lr 1e-3..3e-2"] = {"members": lrs}
    c["ensemble adam 3e-3..3e-2 + sgd 3e-2, tbptt(1,16)"] = {
        "members": ({"lr": 3e-3}, {"lr": 1e-2}, {"lr": 3e-2}, {"optimizer": "sgd", "lr": 3e-2}),
        "tbptt_k1": 1, "tbptt_k2": 16}
    c["ensemble lr 1e-3..3e-2 skip"] = {"members": lrs, "linear_skip": True}
    c["ensemble lr 1e-3..3e-2 skip otaps=1"] = {"members": lrs, "linear_skip": True,
                                                "output_taps": (1,)}
    c["ensemble lr x tbptt, skip otaps=1"] = {
        "members": ({"lr": 3e-3, "tbptt_k1": 1, "tbptt_k2": 16},
                    {"lr": 1e-2, "tbptt_k1": 1, "tbptt_k2": 16},
                    {"lr": 1e-2, "tbptt_k1": 16, "tbptt_k2": 16},
                    {"lr": 3e-2, "tbptt_k1": 1, "tbptt_k2": 8}),
        "linear_skip": True, "output_taps": (1,)}
    c["ensemble cells, skip otaps=1"] = {
        "members": ({"cell": "lstm", "lr": 1e-2}, {"cell": "gru", "lr": 1e-2},
                    {"cell": "elman", "lr": 3e-3}, {"cell": "lstm", "lr": 3e-2}),
        "linear_skip": True, "output_taps": (1,), "tbptt_k1": 1, "tbptt_k2": 16}


def _mixed(c: dict):
    """Adam members win on classification, SGD members on smooth regression (today's grid):
    ensembles that hold both, on the best single-model settings (TBPTT(1,16), skip, taps)."""
    k = {"tbptt_k1": 1, "tbptt_k2": 16}
    nf = {"linear_skip": True, "output_taps": (1, 2)}
    a1, a3 = {"lr": 1e-2}, {"lr": 3e-2}
    s3, s10 = {"optimizer": "sgd", "lr": 3e-2}, {"optimizer": "sgd", "lr": 1e-1}
    for opt in ("sgd",):
        for lr in (3e-2, 1e-1):
            c[f"mix: {opt} lr={lr:g} skip otaps=1,2 tbptt(1,16)"] = {
                "optimizer": opt, "lr": lr, **k, **nf}
    c["mix: E4 adam 1e-2,3e-2 sgd 3e-2,1e-1 skip otaps=1,2 tbptt(1,16)"] = {
        "members": (a1, a3, s3, s10), **k, **nf}
    c["mix: E4 ... clip=1"] = {"members": (a1, a3, s3, s10), **k, **nf, "clip_norm": 1.0}
    c["mix: E4 ... otaps=1"] = {"members": (a1, a3, s3, s10), **k, "linear_skip": True,
                                "output_taps": (1,)}
    c["mix: E4 ... no taps"] = {"members": (a1, a3, s3, s10), **k, "linear_skip": True}
    c["mix: E4 ... no skip"] = {"members": (a1, a3, s3, s10), **k, "output_taps": (1, 2)}
    c["mix: E2 adam 1e-2 sgd 1e-1 skip otaps=1,2 tbptt(1,16)"] = {"members": (a1, s10), **k,
                                                                  **nf}
    c["mix: E3 adam 1e-2 sgd 3e-2,1e-1 skip otaps=1,2 tbptt(1,16)"] = {
        "members": (a1, s3, s10), **k, **nf}
    c["mix: E6 adam 1e-2,3e-2 gru 1e-2 sgd 3e-2,1e-1 skip otaps=1,2"] = {
        "members": (a1, a3, {"cell": "gru", "lr": 1e-2}, s3, s10), **k, **nf}
    c["mix: E4 ... H=64"] = {"members": (a1, a3, s3, s10), **k, **nf, "hidden_sizes": (64,)}
    # SGD members with the skip path diverge without clipping (lr 0.1 on ~20 standardised
    # features is past a linear model's stability limit): the same with clip_norm = 1
    cl = {"clip_norm": 1.0}
    e4 = (a1, a3, s3, s10)
    c["mixc: adam lr=0.01 skip otaps=1,2 clip=1"] = {"lr": 1e-2, **k, **nf, **cl}
    c["mixc: sgd lr=0.1 skip otaps=1,2 clip=1"] = {"optimizer": "sgd", "lr": 0.1, **k, **nf,
                                                   **cl}
    c["mixc: E4 otaps=1"] = {"members": e4, **k, **cl, "linear_skip": True,
                             "output_taps": (1,)}
    c["mixc: E4 no taps"] = {"members": e4, **k, **cl, "linear_skip": True}
    c["mixc: E4 no skip"] = {"members": e4, **k, **cl, "output_taps": (1, 2)}
    c["mixc: E4 H=64"] = {"members": e4, **k, **nf, **cl, "hidden_sizes": (64,)}
    c["mixc: E4 tbptt(1,8)"] = {"members": e4, "tbptt_k1": 1, "tbptt_k2": 8, **nf, **cl}
    c["mixc: E4 clip=5"] = {"members": e4, **k, **nf, "clip_norm": 5.0}
    c["mixc: E2 adam 1e-2 sgd 1e-1"] = {"members": (a1, s10), **k, **nf, **cl}
    c["mixc: E3 adam 1e-2,3e-2 sgd 1e-1"] = {"members": (a1, a3, s10), **k, **nf, **cl}
    c["mixc: E6 E4 + gru 1e-2"] = {"members": e4 + ({"cell": "gru", "lr": 1e-2},), **k,
                                   **nf, **cl}
    c["mixc: E5 E4 + adam 3e-3"] = {"members": ({"lr": 3e-3},) + e4, **k, **nf, **cl}
    best = {"members": e4, **k, **cl, "linear_skip": True, "output_taps": (1,)}
    for rate in (0.5, 2.0):
        c[f"mixd: E4 otaps=1 hedge_rate={rate:g}"] = {**best, "hedge_rate": rate}
    c["mixd: E4 otaps=1 normalize_decay=0.999"] = {**best, "normalize_decay": 0.999}
    c["mixd: E4 + sgd 1e-2, otaps=1"] = {**best, "members": e4 + ({"optimizer": "sgd",
                                                                   "lr": 1e-2},)}
    c["mixd: E4 otaps=1,24"] = {**best, "output_taps": (1, 24)}
    c["mixd: E4 otaps=1 H=16"] = {**best, "hidden_sizes": (16,)}
    # cheaper: fewer updates or a shorter look-back (TBPTT(1,16) costs ~10x TBPTT(16,16))
    for k1, k2 in ((1, 8), (2, 16), (4, 16), (16, 16)):
        c[f"mixe: E4 otaps=1 tbptt({k1},{k2})"] = {**best, "tbptt_k1": k1, "tbptt_k2": k2}
    c["mixe: E2 adam 1e-2 sgd 1e-1 otaps=1 tbptt(1,8)"] = {
        **best, "members": (a1, s10), "tbptt_k1": 1, "tbptt_k2": 8}
    c["mixe: adam lr=0.01 skip otaps=1 clip=1 tbptt(1,16)"] = {
        **{k_: v for k_, v in best.items() if k_ != "members"}, "lr": 1e-2}


def _text(c: dict):
    """Token models: embedding width (the default was 1), learning rate, update interval."""
    for width in (8, 32):
        for lr in (3e-3, 1e-2):
            c[f"emb={width} adam lr={lr:g} tbptt(16,16)"] = {"input_size": width, "lr": lr}
            c[f"emb={width} adam lr={lr:g} tbptt(1,16)"] = {
                "input_size": width, "lr": lr, "tbptt_k1": 1, "tbptt_k2": 16}
    c["emb=32 H=128 adam lr=3e-3 tbptt(16,16)"] = {"input_size": 32, "lr": 3e-3,
                                                   "hidden_sizes": (128,)}
    c["emb=32 H=128 adam lr=3e-3 clip=1 tbptt(16,16)"] = {
        "input_size": 32, "lr": 3e-3, "hidden_sizes": (128,), "clip_norm": 1.0}
    c["emb=32 gru H=128 adam lr=3e-3 tbptt(16,16)"] = {
        "input_size": 32, "lr": 3e-3, "hidden_sizes": (128,), "cell": "gru"}
    c["emb=32 gru H=128 adam lr=1e-2 tbptt(16,16)"] = {
        "input_size": 32, "lr": 1e-2, "hidden_sizes": (128,), "cell": "gru"}
    c["emb=32 gru H=128 adam lr=3e-3 tbptt(32,32)"] = {
        "input_size": 32, "lr": 3e-3, "hidden_sizes": (128,), "cell": "gru", "tbptt_k1": 32}
    c["emb=32 H=128 adam lr=3e-3 tbptt(32,32)"] = {
        "input_size": 32, "lr": 3e-3, "hidden_sizes": (128,), "tbptt_k1": 32}
    c["emb=32 H=256 adam lr=3e-3 tbptt(16,16)"] = {"input_size": 32, "lr": 3e-3,
                                                   "hidden_sizes": (256,)}
    c["emb=32 gru H=256 adam lr=3e-3 tbptt(16,16)"] = {
        "input_size": 32, "lr": 3e-3, "hidden_sizes": (256,), "cell": "gru"}
    c["emb=64 gru H=256 adam lr=2e-3 tbptt(16,16)"] = {
        "input_size": 64, "lr": 2e-3, "hidden_sizes": (256,), "cell": "gru"}
    c["emb=64 H=256 adam lr=2e-3 tbptt(16,16)"] = {
        "input_size": 64, "lr": 2e-3, "hidden_sizes": (256,)}
    c["emb=64 H=512 adam lr=1e-3 tbptt(16,16)"] = {
        "input_size": 64, "lr": 1e-3, "hidden_sizes": (512,)}
    c["emb=64 gru H=512 adam lr=1e-3 tbptt(16,16)"] = {
        "input_size": 64, "lr": 1e-3, "hidden_sizes": (512,), "cell": "gru"}
    c["emb=64 gru H=512 adam lr=2e-3 tbptt(16,16)"] = {
        "input_size": 64, "lr": 2e-3, "hidden_sizes": (512,), "cell": "gru"}
    c["emb=64 H=256x2 adam lr=2e-3 tbptt(16,16)"] = {
        "input_size": 64, "lr": 2e-3, "hidden_sizes": (256, 256)}


def candidates(task: str, which: str = "all") -> dict:
    """name -> Spec overrides of the shape-only Spec. ``which``: "today" (options today's
    engine has), "new" (the issue's new options) or "all". A candidate whose fields the Spec
    lacks is skipped by the caller with a note."""
    c = {"default": {}}
    if task == TEXT:
        _text(c)
        return c
    if which in ("today", "all"):
        _today(c)
    if which in ("new", "all"):
        _new_options(c)
        _mixed(c)
    return c
