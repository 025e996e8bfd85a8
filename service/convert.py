"""Between the wire and the engine: ModelSpec <-> engine Spec, Tensor <-> numpy.

Validation here covers what a client most often gets wrong, with messages that name the
field; ``Spec.validate()`` then checks the rest.
"""
from __future__ import annotations

import math
import re

import numpy as np

from protos.rnnstream.v1 import rnnstream_pb2 as pb
from service.errors import invalid

DEFAULT_TBPTT_K = 16
MAX_HIDDEN = 65536
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# proto enum value -> the engine's string, and back.
CELLS = {pb.ELMAN: "elman", pb.JORDAN: "jordan", pb.LSTM: "lstm", pb.GRU: "gru"}
LSTM_VARIANTS = {pb.STANDARD: "standard", pb.PEEPHOLE: "peephole", pb.COUPLED: "coupled",
                 pb.NO_FORGET: "no_forget"}
GRU_VARIANTS = {pb.PYTORCH: "pytorch", pb.CHO: "cho"}
ALGORITHMS = {pb.ALGORITHM_UNSPECIFIED: "tbptt", pb.RTRL: "rtrl", pb.TBPTT: "tbptt", pb.SNAP1: "snap1"}
OPTIMIZERS = {pb.OPTIMIZER_UNSPECIFIED: "adam", pb.SGD: "sgd", pb.ADAM: "adam", pb.RMSPROP: "rmsprop",
              pb.ADAGRAD: "adagrad"}
SHARINGS = {pb.SHARED: "shared", pb.PER_STREAM: "per_stream"}
DEVICES = {pb.CPU: "cpu", pb.CUDA: "cuda"}
TARGET_MODES = {pb.EXPLICIT: "explicit", pb.NEXT_INPUT: "next_input"}
# NORMALIZATION_UNSPECIFIED: the Spec's default, which follows the weights' sharing
NORMALIZATIONS = {pb.NORMALIZATION_UNSPECIFIED: "", pb.NORMALIZATION_OFF: "off",
                  pb.NORMALIZATION_SHARED: "shared", pb.NORMALIZATION_PER_STREAM: "per_stream"}


def _enum(table: dict, value: int, field: str) -> str:
    if value not in table:
        raise invalid(f"spec.{field}: unknown value {value}")
    return table[value]


def _back(table: dict, value: str) -> int:
    # ALGORITHM_UNSPECIFIED and OPTIMIZER_UNSPECIFIED map to defaults; prefer the named value.
    return max(k for k, v in table.items() if v == value)


def _f32(x: float) -> float:
    """A float32 wire value as the decimal the client most likely wrote (0.001, not 0.0010000000474)."""
    return float(repr(np.float32(x)).replace("np.float32(", "").rstrip(")"))


def _finite_nonneg(value: float, field: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise invalid(f"spec.{field} must be a finite number >= 0, got {value}")
    return _f32(value)


def validate_name(name: str, what: str = "model name") -> str:
    if not NAME_RE.match(name or ""):
        raise invalid(f"{what} {name!r} must be 1-128 characters of letters, digits, '.', '_', '-', "
                      "starting with a letter or digit")
    return name


def validate_stream_id(stream_id: str) -> str:
    if not stream_id or len(stream_id) > 256:
        raise invalid("stream_id must be a non-empty string of at most 256 characters")
    return stream_id


def spec_kwargs(msg: pb.ModelSpec) -> dict:
    """The keyword arguments of ``service.engine.Spec`` for a wire spec, defaults filled in."""
    validate_name(msg.name)
    if msg.cell == pb.CELL_UNSPECIFIED:
        raise invalid("spec.cell must be set: ELMAN, JORDAN, LSTM or GRU")
    if not msg.hidden_sizes or any(h == 0 or h > MAX_HIDDEN for h in msg.hidden_sizes):
        raise invalid(f"spec.hidden_sizes needs one size in 1..{MAX_HIDDEN} per layer, got {list(msg.hidden_sizes)}")
    if msg.input_size == 0 and msg.vocab_size == 0:
        raise invalid("spec.input_size must be > 0: the number of features (only a token model, "
                      "vocab_size > 0, may leave it unset for the default embedding width)")
    decay = msg.normalize_decay
    if not (math.isfinite(decay) and (decay == 0 or 0 < decay < 1)):
        raise invalid(f"spec.normalize_decay must be 0 (no forgetting) or in (0, 1), got {decay}")
    if (msg.output_size > 0) == (msg.num_classes > 0):
        raise invalid("set exactly one of spec.output_size (regression) and spec.num_classes (classification)")
    algorithm = _enum(ALGORITHMS, msg.algorithm, "algorithm")
    k1, k2 = msg.tbptt_k1, msg.tbptt_k2
    if algorithm == "tbptt":
        k1 = k1 or k2 or DEFAULT_TBPTT_K
        k2 = k2 or k1
        if k1 > k2:
            raise invalid(f"spec.tbptt_k1 ({k1}) must be <= spec.tbptt_k2 ({k2})")
    opt = msg.optimizer
    if not math.isfinite(opt.lr) or opt.lr < 0:
        raise invalid(f"spec.optimizer.lr must be > 0 (or unset for torch.optim's default), got {opt.lr}")
    eps = opt.eps if opt.HasField("eps") else None
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise invalid(f"spec.optimizer.eps must be > 0, got {eps}")
    return dict(
        name=msg.name,
        cell=_enum(CELLS, msg.cell, "cell"),
        lstm_variant=_enum(LSTM_VARIANTS, msg.lstm_variant, "lstm_variant"),
        gru_variant=_enum(GRU_VARIANTS, msg.gru_variant, "gru_variant"),
        hidden_sizes=tuple(int(h) for h in msg.hidden_sizes),
        input_size=int(msg.input_size),
        vocab_size=int(msg.vocab_size),
        output_size=int(msg.output_size),
        num_classes=int(msg.num_classes),
        algorithm=algorithm,
        tbptt_k1=int(k1),
        tbptt_k2=int(k2),
        optimizer=_enum(OPTIMIZERS, opt.kind, "optimizer.kind"),
        lr=_f32(opt.lr) if opt.lr > 0 else None,
        momentum=_finite_nonneg(opt.momentum, "optimizer.momentum") if opt.HasField("momentum") else 0.0,
        nesterov=bool(opt.nesterov),
        betas=(_finite_nonneg(opt.beta1, "optimizer.beta1") if opt.HasField("beta1") else 0.9,
               _finite_nonneg(opt.beta2, "optimizer.beta2") if opt.HasField("beta2") else 0.999),
        eps=_f32(eps) if eps is not None else None,
        alpha=_finite_nonneg(opt.alpha, "optimizer.alpha") if opt.HasField("alpha") else 0.99,
        clip_norm=_finite_nonneg(msg.clip_norm, "clip_norm"),
        weight_decay=_finite_nonneg(msg.weight_decay, "weight_decay"),
        sharing=_enum(SHARINGS, msg.sharing, "sharing"),
        device=_enum(DEVICES, msg.device, "device"),
        seed=int(msg.seed),
        target_mode=_enum(TARGET_MODES, msg.target_mode, "target_mode"),
        normalize=_enum(NORMALIZATIONS, msg.normalize, "normalize"),
        normalize_decay=_f32(decay),
        input_taps=tuple(int(t) for t in msg.input_taps),
        output_taps=tuple(int(t) for t in msg.output_taps),
        linear_skip=bool(msg.linear_skip) if msg.HasField("linear_skip") else False,
    )


def spec_to_proto(spec) -> pb.ModelSpec:
    """The effective spec (defaults filled in) as a wire message."""
    opt = pb.Optimizer(kind=_back(OPTIMIZERS, spec.optimizer), lr=spec.lr or 0.0, nesterov=spec.nesterov,
                       momentum=spec.momentum, beta1=spec.betas[0], beta2=spec.betas[1], alpha=spec.alpha)
    if spec.eps is not None:
        opt.eps = spec.eps
    return pb.ModelSpec(
        name=spec.name, cell=_back(CELLS, spec.cell), lstm_variant=_back(LSTM_VARIANTS, spec.lstm_variant),
        gru_variant=_back(GRU_VARIANTS, spec.gru_variant), hidden_sizes=list(spec.hidden_sizes),
        input_size=spec.input_size, vocab_size=spec.vocab_size, output_size=spec.output_size,
        num_classes=spec.num_classes, algorithm=_back(ALGORITHMS, spec.algorithm), tbptt_k1=spec.tbptt_k1,
        tbptt_k2=spec.tbptt_k2, optimizer=opt, clip_norm=spec.clip_norm, weight_decay=spec.weight_decay,
        sharing=_back(SHARINGS, spec.sharing), device=_back(DEVICES, spec.device), seed=spec.seed,
        target_mode=_back(TARGET_MODES, spec.target_mode),
        normalize=_back(NORMALIZATIONS, spec.normalize), normalize_decay=spec.normalize_decay,
        input_taps=list(spec.input_taps), output_taps=list(spec.output_taps),
        linear_skip=spec.linear_skip)


def tensors_to_proto(state: dict) -> list[pb.Tensor]:
    return [pb.Tensor(name=name, shape=list(np.shape(a)), data=np.asarray(a, np.float32).ravel().tolist())
            for name, a in state.items()]


def tensors_from_proto(tensors, layout, optional=()) -> dict[str, np.ndarray]:
    """Checks names, shapes and finiteness against ``layout`` [(name, shape, offset)], every
    one required, and ``optional`` [(name, shape)] (normalisation statistics)."""
    expected = {name: tuple(shape) for name, shape, _ in layout}
    required = set(expected)
    expected.update({name: tuple(shape) for name, shape in optional})
    got = {}
    for t in tensors:
        if t.name not in expected:
            raise invalid(f"tensor {t.name!r} is not a parameter of this model; expected {sorted(expected)}")
        if t.name in got:
            raise invalid(f"tensor {t.name!r} appears twice")
        shape = tuple(t.shape)
        if shape != expected[t.name]:
            raise invalid(f"tensor {t.name!r} has shape {list(shape)}, the model needs {list(expected[t.name])}")
        data = np.asarray(t.data, dtype=np.float32)
        if data.size != math.prod(shape):
            raise invalid(f"tensor {t.name!r}: {data.size} values for shape {list(shape)}")
        if not np.isfinite(data).all():
            raise invalid(f"tensor {t.name!r} holds NaN or Inf")
        got[t.name] = data.reshape(shape)
    missing = sorted(required - set(got))
    if missing:
        raise invalid(f"missing tensors: {missing}")
    return got
