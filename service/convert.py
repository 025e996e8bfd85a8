"""Between the wire and the engine: ModelSpec <-> engine Spec, Tensor <-> numpy.

Validation here covers what a client most often gets wrong, with messages that name the
field; ``Spec.validate()`` then checks the rest.
"""
from __future__ import annotations

import math
import re

import numpy as np

from rnnstream.kernels import registry
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.engine.spec import BASELINES, MAX_MEMBERS
from rnnstream.service.errors import invalid

MAX_HIDDEN = 65536
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# proto enum value -> the engine's string, and back. Each *_UNSPECIFIED (a field left unset)
# maps to the server's default ("" where the default depends on the data: service.engine.spec).
def _registry_table(enum, field: str, unset: str) -> dict:
    """{wire value: spec name} for the registry's names of ``field`` (kernels/registry.py);
    the proto spells each <PREFIX><NAME> (CELL_LSTM). A name the proto lacks fails here, at import."""
    prefix = registry.PROTO_PREFIX[field]
    return {0: unset, **{enum.Value(prefix + name.upper()): name for name in registry.names(field)}}


CELLS = _registry_table(pb.Cell, "cell", "")
LSTM_VARIANTS = _registry_table(pb.LstmVariant, "lstm_variant", registry.names("lstm_variant")[0])
GRU_VARIANTS = _registry_table(pb.GruVariant, "gru_variant", registry.names("gru_variant")[0])
ALGORITHMS = _registry_table(pb.Algorithm, "algorithm", "")
OPTIMIZERS = _registry_table(pb.OptimizerKind, "optimizer", "")
SHARINGS = {pb.SHARING_UNSPECIFIED: "shared", pb.SHARING_SHARED: "shared", pb.SHARING_PER_STREAM: "per_stream"}
DEVICES = {pb.DEVICE_UNSPECIFIED: "cpu", pb.DEVICE_CPU: "cpu", pb.DEVICE_CUDA: "cuda"}
TARGET_MODES = {pb.TARGET_MODE_UNSPECIFIED: "explicit", pb.TARGET_MODE_EXPLICIT: "explicit",
                pb.TARGET_MODE_NEXT_INPUT: "next_input"}
# NORMALIZATION_UNSPECIFIED: the Spec's default, which follows the weights' sharing
NORMALIZATIONS = {pb.NORMALIZATION_UNSPECIFIED: "", pb.NORMALIZATION_OFF: "off",
                  pb.NORMALIZATION_SHARED: "shared", pb.NORMALIZATION_PER_STREAM: "per_stream"}


def _enum(table: dict, value: int, field: str) -> str:
    if value not in table:
        raise invalid(f"spec.{field}: unknown value {value}")
    return table[value]


def _back(table: dict, value: str) -> int:
    # *_UNSPECIFIED (0) maps to a default too; the effective spec names the value itself.
    return max(k for k, v in table.items() if v == value)


def _decimal_of_f32(x: float) -> float:
    """A float32 wire value as the decimal the client most likely wrote (0.001, not 0.0010000000474):
    the shortest decimal that rounds to the same float32. (clients/convert.py has its twin: the
    layers share no code.)"""
    return float(str(np.float32(x)))


def _finite_nonneg(value: float, field: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise invalid(f"spec.{field} must be a finite number >= 0, got {value}")
    return _decimal_of_f32(value)


MAX_ID_BYTES = 256  # model names and stream ids: the store keys and status messages stay small
# The largest magnitude whose square fits float32: the squared error and Adam's second moment
# of a bigger value overflow, so the door refuses it (inputs, targets, imported weights).
MAX_ABS_VALUE = float(np.sqrt(np.finfo(np.float32).max))
MAX_SEQ = 2 ** 63 - 1  # the store keeps seq as a signed 64-bit integer


def shown(text: str, limit: int = 64) -> str:
    """``text`` quoted for a status message or log line, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text.encode())} bytes)"


def check_id(value: str, what: str) -> str:
    """INVALID_ARGUMENT unless ``value`` is 1..MAX_ID_BYTES UTF-8 bytes of printable characters."""
    if not value:
        raise invalid(f"{what} must be set (1-{MAX_ID_BYTES} bytes of printable characters)")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise invalid(f"{what} is {size} bytes; the limit is {MAX_ID_BYTES} bytes")
    if not value.isprintable():
        raise invalid(f"{what} {shown(value)} holds a non-printable character; use printable characters only")
    return value


def validate_name(name: str, what: str = "model name") -> str:
    check_id(name, what)
    if not NAME_RE.match(name):
        raise invalid(f"{what} {shown(name)} must be 1-128 characters of letters, digits, '.', '_', '-', "
                      "starting with a letter or digit")
    return name


def validate_stream_id(stream_id: str) -> str:
    return check_id(stream_id, "stream_id")


def float_array(values) -> np.ndarray:
    """A repeated float field as float32. A few values are copied one by one: np.asarray's
    set-up costs more than that, and a 1-step chunk holds a handful."""
    n = len(values)
    if n <= 32:
        return np.fromiter(values, np.float32, n)
    return np.asarray(values, dtype=np.float32)


def check_values(flat: np.ndarray, what: str) -> None:
    """INVALID_ARGUMENT for NaN, Inf or a magnitude whose square overflows float32."""
    if flat.size <= 32:  # a few values: Python's builtins beat numpy's set-up
        vals = flat.ravel().tolist()  # NaN and Inf carry through the sum; float32s cannot overflow it
        if not vals or (math.isfinite(sum(vals)) and -MAX_ABS_VALUE <= min(vals) and max(vals) <= MAX_ABS_VALUE):
            return
    elif float(np.abs(flat).max()) <= MAX_ABS_VALUE:  # False for NaN, which max() carries
        return
    if not np.isfinite(flat).all():
        raise invalid(f"{what} hold NaN or Inf")
    if flat.size and float(np.abs(flat).max()) > MAX_ABS_VALUE:
        raise invalid(f"{what} hold a value of magnitude {float(np.abs(flat).max()):.3g}; values must lie "
                      f"within +-{MAX_ABS_VALUE:.4g} (their square must fit float32)")


def spec_kwargs(msg: pb.ModelSpec) -> dict:
    """The keyword arguments of ``service.engine.Spec`` for a wire spec, defaults filled in."""
    validate_name(msg.name)
    if any(h == 0 or h > MAX_HIDDEN for h in msg.hidden_sizes):
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
    k1, k2 = msg.tbptt_k1, msg.tbptt_k2  # 0: the measured defaults (service.engine.spec)
    if algorithm in ("tbptt", "") and k1 and k2 and k1 > k2:
        raise invalid(f"spec.tbptt_k1 ({k1}) must be <= spec.tbptt_k2 ({k2})")
    opt = msg.optimizer
    if not math.isfinite(opt.lr) or opt.lr < 0:
        raise invalid(f"spec.optimizer.lr must be > 0 (or unset for torch.optim's default), got {opt.lr}")
    eps = opt.eps if opt.HasField("eps") else None
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise invalid(f"spec.optimizer.eps must be > 0, got {eps}")
    if not math.isfinite(msg.hedge_rate) or msg.hedge_rate < 0:
        raise invalid(f"spec.hedge_rate must be a finite number >= 0 (0: the default), got {msg.hedge_rate}")
    if len(msg.members) > MAX_MEMBERS:
        raise invalid(f"spec.members: at most {MAX_MEMBERS} members, got {len(msg.members)}")
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
        lr=_decimal_of_f32(opt.lr) if opt.lr > 0 else None,
        momentum=_finite_nonneg(opt.momentum, "optimizer.momentum") if opt.HasField("momentum") else 0.0,
        nesterov=bool(opt.nesterov),
        betas=(_finite_nonneg(opt.beta1, "optimizer.beta1") if opt.HasField("beta1") else 0.9,
               _finite_nonneg(opt.beta2, "optimizer.beta2") if opt.HasField("beta2") else 0.999),
        eps=_decimal_of_f32(eps) if eps is not None else None,
        alpha=_finite_nonneg(opt.alpha, "optimizer.alpha") if opt.HasField("alpha") else 0.99,
        clip_norm=_finite_nonneg(msg.clip_norm, "clip_norm"),
        weight_decay=_finite_nonneg(msg.weight_decay, "weight_decay"),
        sharing=_enum(SHARINGS, msg.sharing, "sharing"),
        device=_enum(DEVICES, msg.device, "device"),
        seed=int(msg.seed),
        target_mode=_enum(TARGET_MODES, msg.target_mode, "target_mode"),
        members=(tuple(_member_overrides(m, k) for k, m in enumerate(msg.members))
                 if len(msg.members) else None),
        hedge_rate=_decimal_of_f32(msg.hedge_rate),
        max_label_delay=int(msg.max_label_delay),
        normalize=_enum(NORMALIZATIONS, msg.normalize, "normalize"),
        normalize_decay=_decimal_of_f32(decay),
        input_taps=tuple(int(t) for t in msg.input_taps),
        # empty: the default; [0] alone: none (a repeated field cannot say "unset" otherwise)
        output_taps=(None if not len(msg.output_taps) else
                     () if list(msg.output_taps) == [0] else tuple(int(t) for t in msg.output_taps)),
        linear_skip=bool(msg.linear_skip) if msg.HasField("linear_skip") else None,
        context_table_bits=int(msg.context_table_bits),
    )


def _member_overrides(msg: pb.MemberSpec, k: int) -> dict:
    """The engine Spec fields member ``k`` sets; unset or zero fields inherit the model's."""
    where = f"spec.members[{k}]"
    if msg.baseline:
        others = sorted(f.name for f, _ in msg.ListFields() if f.name != "baseline")
        if others:
            raise invalid(f"{where} is the baseline {shown(msg.baseline)}: it sets nothing else, "
                          f"got {', '.join(others)}")
        if msg.baseline not in BASELINES:
            raise invalid(f"{where}.baseline must be one of {', '.join(BASELINES)} (or empty for a "
                          f"network member), got {shown(msg.baseline)}")
        return {"baseline": msg.baseline}
    out = {}
    if msg.cell != pb.CELL_UNSPECIFIED:
        out["cell"] = _enum(CELLS, msg.cell, f"members[{k}].cell")
    if msg.HasField("lstm_variant"):
        out["lstm_variant"] = _enum(LSTM_VARIANTS, msg.lstm_variant, f"members[{k}].lstm_variant")
    if msg.HasField("gru_variant"):
        out["gru_variant"] = _enum(GRU_VARIANTS, msg.gru_variant, f"members[{k}].gru_variant")
    if msg.hidden_sizes:
        if any(h == 0 or h > MAX_HIDDEN for h in msg.hidden_sizes):
            raise invalid(f"{where}.hidden_sizes needs one size in 1..{MAX_HIDDEN} per layer, "
                          f"got {list(msg.hidden_sizes)}")
        out["hidden_sizes"] = tuple(int(h) for h in msg.hidden_sizes)
    if msg.algorithm != pb.ALGORITHM_UNSPECIFIED:
        out["algorithm"] = _enum(ALGORITHMS, msg.algorithm, f"members[{k}].algorithm")
    k1, k2 = msg.tbptt_k1, msg.tbptt_k2
    if k1 or k2:  # a member that names a window names both ends, as the model does
        out["tbptt_k1"], out["tbptt_k2"] = int(k1 or k2), int(k2 or k1)
    if msg.HasField("optimizer"):
        opt = msg.optimizer
        if opt.kind != pb.OPTIMIZER_KIND_UNSPECIFIED:
            out["optimizer"] = _enum(OPTIMIZERS, opt.kind, f"members[{k}].optimizer.kind")
        if not math.isfinite(opt.lr) or opt.lr < 0:
            raise invalid(f"{where}.optimizer.lr must be > 0 (or unset to inherit), got {opt.lr}")
        if opt.lr > 0:
            out["lr"] = _decimal_of_f32(opt.lr)
        for field in ("momentum", "alpha"):
            if opt.HasField(field):
                out[field] = _finite_nonneg(getattr(opt, field), f"members[{k}].optimizer.{field}")
        if opt.HasField("beta1") or opt.HasField("beta2"):
            if not (opt.HasField("beta1") and opt.HasField("beta2")):
                raise invalid(f"{where}.optimizer: set both beta1 and beta2, or neither")
            out["betas"] = (_finite_nonneg(opt.beta1, f"members[{k}].optimizer.beta1"),
                            _finite_nonneg(opt.beta2, f"members[{k}].optimizer.beta2"))
        if opt.HasField("eps"):
            if not (math.isfinite(opt.eps) and opt.eps > 0):
                raise invalid(f"{where}.optimizer.eps must be > 0, got {opt.eps}")
            out["eps"] = _decimal_of_f32(opt.eps)
        if opt.nesterov:
            out["nesterov"] = True
    if msg.HasField("clip_norm"):
        out["clip_norm"] = _finite_nonneg(msg.clip_norm, f"members[{k}].clip_norm")
    if msg.HasField("weight_decay"):
        out["weight_decay"] = _finite_nonneg(msg.weight_decay, f"members[{k}].weight_decay")
    if msg.HasField("seed"):
        out["seed"] = int(msg.seed)
    return out


def _member_to_proto(m: dict) -> pb.MemberSpec:
    if "baseline" in m:
        return pb.MemberSpec(baseline=m["baseline"])
    msg = pb.MemberSpec(hidden_sizes=list(m.get("hidden_sizes", ())), tbptt_k1=m.get("tbptt_k1", 0),
                        tbptt_k2=m.get("tbptt_k2", 0))
    for field, table in (("cell", CELLS), ("lstm_variant", LSTM_VARIANTS), ("gru_variant", GRU_VARIANTS),
                         ("algorithm", ALGORITHMS)):
        if field in m:
            setattr(msg, field, _back(table, m[field]))
    for field in ("clip_norm", "weight_decay", "seed"):
        if field in m:
            setattr(msg, field, m[field])
    opt_fields = {"optimizer", "lr", "momentum", "nesterov", "betas", "eps", "alpha"}
    if opt_fields & set(m):
        opt = msg.optimizer
        opt.kind = _back(OPTIMIZERS, m["optimizer"]) if "optimizer" in m else pb.OPTIMIZER_KIND_UNSPECIFIED
        opt.lr = m.get("lr") or 0.0
        opt.nesterov = bool(m.get("nesterov", False))
        for field in ("momentum", "alpha", "eps"):
            if m.get(field) is not None:
                setattr(opt, field, m[field])
        if "betas" in m:
            opt.beta1, opt.beta2 = m["betas"]
    return msg


def spec_to_proto(spec) -> pb.ModelSpec:
    """The effective spec (defaults filled in) as a wire message."""
    opt = pb.Optimizer(kind=_back(OPTIMIZERS, spec.optimizer), lr=spec.learning_rate, nesterov=spec.nesterov,
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
        target_mode=_back(TARGET_MODES, spec.target_mode), max_label_delay=spec.max_label_delay,
        normalize=_back(NORMALIZATIONS, spec.normalize), normalize_decay=spec.normalize_decay,
        input_taps=list(spec.input_taps),
        # [0]: none (an empty list would mean the default, which may be (1,))
        output_taps=list(spec.output_taps) or ([0] if spec.output_size else []),
        linear_skip=spec.linear_skip,
        members=[_member_to_proto(m) for m in spec.members], hedge_rate=spec.hedge_rate,
        context_table_bits=spec.context_table_bits)


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
            raise invalid(f"tensor {shown(t.name)} is not a parameter of this model; expected {sorted(expected)}")
        if t.name in got:
            raise invalid(f"tensor {t.name!r} appears twice")
        shape = tuple(t.shape)
        if shape != expected[t.name]:
            raise invalid(f"tensor {t.name!r} has shape {list(shape)}, the model needs {list(expected[t.name])}")
        data = np.asarray(t.data, dtype=np.float32)
        if data.size != math.prod(shape):
            raise invalid(f"tensor {t.name!r}: {data.size} values for shape {list(shape)}")
        check_values(data, f"tensor {t.name!r}")
        got[t.name] = data.reshape(shape)
    missing = sorted(required - set(got))
    if missing:
        raise invalid(f"missing tensors: {missing}")
    return got
