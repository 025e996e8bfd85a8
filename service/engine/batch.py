"""A step's batch: ``Engine.step``'s arguments checked (shapes, dtypes, finiteness, ranges)
before any state is touched, and shaped into the arrays the chunk kernel takes."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# dtype kinds: numpy's np.integer / np.number / np.inexact, without issubdtype's cost per call
_INTEGER, _NUMBER, _INEXACT = "iu", "iufc", "fc"


class Constants(NamedTuple):
    """A batch shape's arrays that the kernels only read: zero tokens, inputs (token models),
    targets and classes where none came, lengths all T, weight row 0 for every stream."""
    tokens: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    classes: np.ndarray
    lengths: np.ndarray
    rows: np.ndarray


def constant_arrays(B: int, T: int, dtype, out_size: int) -> Constants:
    """The :class:`Constants` of a batch of B streams, T steps (the engine keeps them per shape)."""
    int_zeros = np.zeros((B, T), np.int64)
    return Constants(int_zeros, np.zeros((B, T, 0), dtype), np.zeros((B, T, out_size), dtype),
                     int_zeros, np.full(B, T, np.int64), np.zeros(B, np.int64))


def validated_batch(engine, stream_ids, inputs, tokens, targets, target_classes, learn, lengths,
                    allow_empty=False) -> dict:
    """The arrays ``Engine.step`` hands the chunk kernel (inputs, tokens, targets, tclass,
    lengths), ``learn`` (1 learn; 0 predict only; 2 predict only, no targets sent) and T; for
    anything else a ValueError that names what was expected, before any state is touched."""
    spec = engine.spec
    if isinstance(stream_ids, (str, bytes)) or len(stream_ids) == 0:
        raise ValueError("stream_ids must be a non-empty list of stream ids")
    B = len(stream_ids)
    if B > 1 and len(set(stream_ids)) != B:
        raise ValueError("a stream may appear only once per call; send its steps as "
                         "one longer chunk")
    I, O = spec.input_size, spec.out_size
    least = 0 if allow_empty else 1  # labels or a reset alone: no new steps needed
    if allow_empty and inputs is None and tokens is None:
        if spec.vocab_size > 0:
            tokens = np.zeros((B, 0), dtype=np.int64)
        else:
            inputs = np.zeros((B, 0, I), dtype=engine.dtype)
    if spec.vocab_size > 0:
        if inputs is not None:
            raise ValueError("this model takes tokens, not inputs")
        if tokens is None:
            raise ValueError("tokens [B, T] are required for a token model")
        tok = np.asarray(tokens)
        if tok.ndim != 2 or tok.shape[0] != B or tok.shape[1] < least:
            raise ValueError(f"tokens must have shape [B={B}, T>={least}], got {tok.shape}")
        if tok.dtype.kind not in _INTEGER:
            raise ValueError("tokens must be integers")
        if tok.size and (tok.min() < 0 or tok.max() >= spec.vocab_size):
            raise ValueError(f"token out of range: every token must be in [0, "
                             f"{spec.vocab_size}), got {tok.min()}..{tok.max()}")
        tok = np.ascontiguousarray(tok, dtype=np.int64)
        T = tok.shape[1]
        const = engine._constants(B, T)
        x = const.inputs
    else:
        if tokens is not None:
            raise ValueError("this model takes dense inputs, not tokens")
        if inputs is None:
            raise ValueError(f"inputs [B, T, {I}] are required")
        x = np.asarray(inputs)
        if x.ndim != 3 or x.shape[0] != B or x.shape[1] < least or x.shape[2] != I:
            raise ValueError(f"inputs must have shape [B={B}, T>={least}, input_size={I}], "
                             f"got {x.shape}")
        if x.dtype.kind not in _NUMBER:
            raise ValueError("inputs must be numbers")
        if not _all_finite(x):
            raise ValueError("inputs hold NaN or Inf")
        T = x.shape[1]
        x = np.ascontiguousarray(x, dtype=engine.dtype)
        const = engine._constants(B, T)
        tok = const.tokens
    y = None  # zeros unless targets come: the kernels read them only where a target is
    cls = None
    mode = 1 if learn else 0
    if spec.target_mode == "next_input":
        if targets is not None or target_classes is not None:
            raise ValueError("target_mode is next_input: the targets are the next inputs; "
                             "send no targets")
    elif spec.classify:
        if targets is not None:
            raise ValueError("this model classifies: send target_classes, not targets")
        if target_classes is None:
            if learn and not (spec.max_label_delay > 0 or T == 0):
                raise ValueError("target_classes [B, T] are required to learn (or create the "
                                 "model with max_label_delay > 0 and label the steps later)")
            mode = 2
        else:
            c = np.asarray(target_classes)
            if c.shape != (B, T) or c.dtype.kind not in _INTEGER:
                raise ValueError(f"target_classes must be integers of shape [B={B}, T={T}], "
                                 f"got {c.shape} {c.dtype}")
            if c.size and (c.min() < 0 or c.max() >= spec.num_classes):
                raise ValueError(f"target class out of range: every class must be in [0, "
                                 f"{spec.num_classes}), got {c.min()}..{c.max()}")
            cls = np.ascontiguousarray(c, dtype=np.int64)
    else:
        if target_classes is not None:
            raise ValueError("this model regresses: send targets, not target_classes")
        if targets is None:
            if learn and not (spec.max_label_delay > 0 or T == 0):
                raise ValueError(f"targets [B, T, {O}] are required to learn (or create the "
                                 "model with max_label_delay > 0 and label the steps later)")
            mode = 2
        else:
            t = np.asarray(targets)
            if t.shape != (B, T, O):
                raise ValueError(f"targets must have shape [B={B}, T={T}, output_size={O}], "
                                 f"got {t.shape}")
            if t.dtype.kind not in _NUMBER or not _all_finite(t):
                raise ValueError("targets hold NaN or Inf")
            y = np.ascontiguousarray(t, dtype=engine.dtype)
    if lengths is None:
        lens = const.lengths
    else:
        lens = np.asarray(lengths)
        if lens.shape != (B,) or lens.dtype.kind not in _INTEGER:
            raise ValueError(f"lengths must be {B} integers")
        if lens.min() < least or lens.max() > T:
            raise ValueError(f"every length must be in [{least}, T={T}]")
        lens = lens.astype(np.int64)
    if y is None:
        y = const.targets
    if cls is None:
        cls = const.classes
    return {"inputs": x, "tokens": tok, "targets": y, "tclass": cls, "lengths": lens,
            "learn": mode, "T": T}


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or Inf in the numbers ``a``. A chunk of a few float32 values is summed in Python
    floats instead (NaN and Inf carry through a sum, and float32 values cannot overflow
    float64's range when added up): a numpy reduction costs more than the values here."""
    kind = a.dtype.kind
    if kind not in _INEXACT:
        return True
    if a.size <= 64 and kind == "f" and a.dtype.itemsize <= 4:
        return math.isfinite(sum(a.ravel().tolist()))
    return bool(np.isfinite(a).all())
