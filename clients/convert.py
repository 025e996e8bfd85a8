"""Plain Python and NumPy values to and from the proto messages.

The SDK speaks snake_case keyword arguments, lower-case enum names and numpy arrays; the
wire speaks ``rnnstream.v1`` messages. Every translation lives here, so that the sync and
asyncio clients share it and neither touches a message field by hand.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb

from .errors import status_code

# spec field -> proto enum; values accept the short name in any case ("lstm"), the full
# proto name ("CELL_LSTM") or the number.
_ENUMS = {
    "cell": pb.Cell,
    "lstm_variant": pb.LstmVariant,
    "gru_variant": pb.GruVariant,
    "algorithm": pb.Algorithm,
    "sharing": pb.Sharing,
    "device": pb.Device,
    "target_mode": pb.TargetMode,
    "normalize": pb.Normalization,
}
_UINTS = ("input_size", "vocab_size", "output_size", "num_classes", "tbptt_k1", "tbptt_k2", "seed",
          "max_label_delay", "context_table_bits")
_FLOATS = ("clip_norm", "weight_decay", "normalize_decay", "hedge_rate")
_OPTIMIZER_FLOATS = ("lr", "momentum", "eps", "alpha")
_UINT_LISTS = ("input_taps", "output_taps")
# what one ensemble member may set (ModelSpec.members); the rest is the model's
MEMBER_FIELDS = frozenset(("cell", "lstm_variant", "gru_variant", "hidden_sizes", "algorithm", "tbptt_k1",
                           "tbptt_k2", "optimizer", "lr", "momentum", "nesterov", "betas", "eps", "alpha",
                           "clip_norm", "weight_decay", "seed",
                           # {"baseline": "last_target"}: persistence, not a network; sets nothing else
                           "baseline"))
SPEC_FIELDS = frozenset(("name", "hidden_sizes", "optimizer", "nesterov", "betas", "linear_skip", "members",
                         *_ENUMS, *_UINTS, *_FLOATS, *_OPTIMIZER_FLOATS, *_UINT_LISTS))


def _prefix(enum) -> str:
    # Every enum's zero is <PREFIX>UNSPECIFIED (buf's ENUM_ZERO_VALUE_SUFFIX), and every other
    # value starts with the same prefix: CELL_LSTM, SHARING_PER_STREAM.
    zero = enum.Name(0)
    return zero[: -len("UNSPECIFIED")]


def _enum_value(field: str, enum, value) -> int:
    """The wire number of ``value``: a short name in any case ("lstm", "per-stream"), the full
    proto name ("CELL_LSTM"), or a number."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) not in enum.values():
            raise ValueError(f"{field}: {value} is not one of {_choices(enum)}")
        return int(value)
    key = str(value).strip().upper().replace("-", "_")
    prefix = _prefix(enum)
    for name in (prefix + key, key):
        if name.startswith(prefix) and name != prefix + "UNSPECIFIED" and name in enum.keys():
            return enum.Value(name)
    raise ValueError(f"{field}: {value!r} is not one of {_choices(enum)}")


def enum_choices(enum) -> list[str]:
    """The short lower-case names users type for an enum's values: ``["elman", "jordan", ...]``."""
    return [enum.Name(number)[len(_prefix(enum)):].lower() for number in enum.values() if number]


def _choices(enum) -> str:
    return ", ".join(enum_choices(enum))


def _enum_name(enum, number: int) -> str | None:
    """The short lower-case name of a wire value (CELL_LSTM -> "lstm"); None for *_UNSPECIFIED,
    which spec_to_proto reads as "leave it to the server"."""
    return enum.Name(number)[len(_prefix(enum)):].lower() if number else None


def _or(value, default):
    return default if value is None else value


def _decimal_of_f32(value: float) -> float:
    """A float32 field as the decimal that was written (0.01, not 0.009999999776): the shortest
    decimal that rounds to the same float32. (service/convert.py has its twin: the layers share
    no code.)"""
    return float(str(np.float32(value)))


def spec_to_proto(spec: Mapping[str, Any]) -> pb.ModelSpec:
    """A ``ModelSpec`` from the flat keyword form ``create_model(**spec)`` takes.

    ``optimizer`` is the kind ("adam", "sgd", "rmsprop", "adagrad"); its hyper-parameters
    sit beside it (``lr``, ``momentum``, ``nesterov``, ``betas``, ``eps``, ``alpha``).
    Unset fields are left to the server's defaults: given only the data's shape, the server
    picks the measured default model (README, "Learning quality"). ``members`` is a list of
    dicts of the fields each ensemble member overrides (``MEMBER_FIELDS``).
    """
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        raise TypeError(f"unknown model spec field(s): {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(SPEC_FIELDS))}")
    msg = pb.ModelSpec(name=str(spec.get("name", "")))
    for field, enum in _ENUMS.items():
        if spec.get(field) is not None:
            setattr(msg, field, _enum_value(field, enum, spec[field]))
    hidden = spec.get("hidden_sizes", ())
    msg.hidden_sizes.extend([int(hidden)] if np.isscalar(hidden) else [int(h) for h in hidden])
    for field in _UINTS:
        if spec.get(field) is not None:
            setattr(msg, field, int(spec[field]))
    for field in _FLOATS:
        if spec.get(field) is not None:
            setattr(msg, field, float(spec[field]))
    _optimizer_to_proto(spec, msg.optimizer)
    for k, member in enumerate(spec.get("members") or ()):
        msg.members.append(_member_to_proto(member, k))
    for field in _UINT_LISTS:
        if spec.get(field) is not None:
            getattr(msg, field).extend(int(t) for t in spec[field])
    if spec.get("linear_skip") is not None:
        msg.linear_skip = bool(spec["linear_skip"])
    return msg


def _optimizer_to_proto(spec: Mapping[str, Any], opt: pb.Optimizer) -> None:
    if spec.get("optimizer") is not None:
        opt.kind = _enum_value("optimizer", pb.OptimizerKind, spec["optimizer"])
    for field in _OPTIMIZER_FLOATS:
        if spec.get(field) is not None:
            setattr(opt, field, float(spec[field]))
    if spec.get("nesterov"):
        opt.nesterov = True
    if spec.get("betas") is not None:
        opt.beta1, opt.beta2 = (float(b) for b in spec["betas"])


def _member_to_proto(member: Mapping[str, Any], k: int) -> pb.MemberSpec:
    unknown = set(member) - MEMBER_FIELDS
    if unknown:
        raise TypeError(f"members[{k}]: unknown field(s) {', '.join(sorted(unknown))}; a member sets "
                        f"only {', '.join(sorted(MEMBER_FIELDS))}")
    msg = pb.MemberSpec()
    if member.get("baseline"):
        msg.baseline = str(member["baseline"])  # with any other field, the server refuses it
    for field in ("cell", "lstm_variant", "gru_variant", "algorithm"):
        if member.get(field) is not None:
            setattr(msg, field, _enum_value(f"members[{k}].{field}", _ENUMS[field], member[field]))
    hidden = member.get("hidden_sizes", ())
    msg.hidden_sizes.extend([int(hidden)] if np.isscalar(hidden) else [int(h) for h in hidden])
    for field in ("tbptt_k1", "tbptt_k2", "seed"):
        if member.get(field) is not None:
            setattr(msg, field, int(member[field]))
    for field in ("clip_norm", "weight_decay"):
        if member.get(field) is not None:
            setattr(msg, field, float(member[field]))
    if any(member.get(f) is not None for f in ("optimizer", "lr", "momentum", "eps", "alpha", "betas", "nesterov")):
        _optimizer_to_proto(member, msg.optimizer)
    return msg


def _member_from_proto(msg: pb.MemberSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if msg.baseline:
        out["baseline"] = msg.baseline
    for field in ("cell", "algorithm"):
        if getattr(msg, field):
            out[field] = _enum_name(_ENUMS[field], getattr(msg, field))
    for field in ("lstm_variant", "gru_variant", "clip_norm", "weight_decay", "seed"):
        if msg.HasField(field):
            value = getattr(msg, field)
            out[field] = (_enum_name(_ENUMS[field], value) if field.endswith("variant")
                          else _decimal_of_f32(value) if isinstance(value, float) else int(value))
    if msg.hidden_sizes:
        out["hidden_sizes"] = list(msg.hidden_sizes)
    for field in ("tbptt_k1", "tbptt_k2"):
        if getattr(msg, field):
            out[field] = int(getattr(msg, field))
    if msg.HasField("optimizer"):
        opt = msg.optimizer
        if opt.kind:
            out["optimizer"] = _enum_name(pb.OptimizerKind, opt.kind)
        if opt.lr:
            out["lr"] = _decimal_of_f32(opt.lr)
    return out


def spec_from_proto(msg: pb.ModelSpec) -> dict[str, Any]:
    """The flat keyword form of a ``ModelSpec``: ``create_model(**spec_from_proto(m))`` round-trips."""
    spec: dict[str, Any] = {"name": msg.name, "hidden_sizes": list(msg.hidden_sizes)}
    for field, enum in _ENUMS.items():
        spec[field] = _enum_name(enum, getattr(msg, field))
    for field in _UINTS:
        spec[field] = int(getattr(msg, field))
    for field in _FLOATS:
        spec[field] = _decimal_of_f32(getattr(msg, field))
    opt = msg.optimizer
    spec["optimizer"] = _enum_name(pb.OptimizerKind, opt.kind)
    spec["lr"] = _decimal_of_f32(opt.lr)
    spec["nesterov"] = bool(opt.nesterov)
    for field in ("momentum", "eps", "alpha"):
        if opt.HasField(field):
            spec[field] = _decimal_of_f32(getattr(opt, field))
    if opt.HasField("beta1") or opt.HasField("beta2"):
        spec["betas"] = (_decimal_of_f32(opt.beta1), _decimal_of_f32(opt.beta2))
    for field in _UINT_LISTS:
        taps = [int(t) for t in getattr(msg, field)]
        spec[field] = [] if taps == [0] else taps  # [0]: none on the wire
    spec["members"] = [_member_from_proto(m) for m in msg.members]
    if msg.HasField("linear_skip"):
        spec["linear_skip"] = bool(msg.linear_skip)
    return spec


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A model as the server describes it. ``spec`` is in ``create_model``'s keyword form."""

    name: str
    spec: dict[str, Any]
    num_parameters: int
    parameters: list[tuple[str, tuple[int, ...]]]
    active_streams: int
    stored_streams: int
    steps: int
    updates: int
    created_unix_ms: int

    @classmethod
    def from_proto(cls, msg: pb.Model) -> "ModelInfo":
        return cls(name=msg.spec.name, spec=spec_from_proto(msg.spec),
                   num_parameters=int(msg.num_parameters),
                   parameters=[(p.name, tuple(p.shape)) for p in msg.parameters],
                   active_streams=int(msg.active_streams), stored_streams=int(msg.stored_streams),
                   steps=int(msg.steps), updates=int(msg.updates),
                   created_unix_ms=int(msg.created_unix_ms))


@dataclasses.dataclass(frozen=True)
class StreamStats:
    steps: int = 0
    updates: int = 0
    running_loss: float = float("nan")
    gradient_norm: float = float("nan")
    skipped_updates: int = 0
    # an ensemble's members: (running_loss, weight) of each, in member order
    members: tuple = ()

    @classmethod
    def from_proto(cls, msg: pb.StreamStats) -> "StreamStats":
        members = tuple((float(m.running_loss), float(m.weight))
                        for m in sorted(msg.members, key=lambda m: m.index))
        return cls(int(msg.steps), int(msg.updates), float(msg.running_loss),
                   float(msg.gradient_norm), int(msg.skipped_updates), members)


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    model: str
    stream_id: str
    acked_seq: int
    durable_seq: int
    stats: StreamStats
    in_memory: bool

    @classmethod
    def from_proto(cls, msg: pb.StreamInfo) -> "StreamInfo":
        return cls(msg.model, msg.stream_id, int(msg.acked_seq), int(msg.durable_seq),
                   StreamStats.from_proto(msg.stats), bool(msg.in_memory))


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """The server's answer to one chunk, as numpy arrays.

    ``predictions`` is [T, outputs] (regression values, or class/token probabilities),
    ``losses`` is [T] (NaN where a step has no loss yet, e.g. a NEXT_INPUT stream's first
    step), ``forecast`` is [horizon, outputs]. ``duplicate`` is True when the server had
    already applied this seq and did nothing (its arrays are then empty).
    """

    seq: int
    acked_seq: int
    durable_seq: int
    predictions: np.ndarray
    losses: np.ndarray
    forecast: np.ndarray
    stats: StreamStats
    duplicate: bool
    error: tuple[Any, str] | None = None  # (grpc.StatusCode, message) of a refused chunk
    first_step: int = 0  # the stream's step index of this chunk's first step (to name in labels)

    @classmethod
    def from_proto(cls, msg: pb.StreamResponse, steps: int) -> "StreamResult":
        losses = np.array(msg.losses, dtype=np.float32)
        predictions = _rows(np.array(msg.predictions, dtype=np.float32), steps)
        forecast = np.array(msg.forecast, dtype=np.float32)
        width = predictions.shape[1] if predictions.ndim == 2 and predictions.size else 0
        forecast = forecast.reshape(-1, width) if width else forecast.reshape(0, 0)
        error = None
        if msg.HasField("error") and msg.error.code != 0:
            error = (status_code(msg.error.code), msg.error.message)
        return cls(seq=int(msg.seq), acked_seq=int(msg.acked_seq), durable_seq=int(msg.durable_seq),
                   predictions=predictions, losses=losses, forecast=forecast,
                   stats=StreamStats.from_proto(msg.stats), duplicate=bool(msg.duplicate), error=error,
                   first_step=int(msg.first_step))


def _rows(flat: np.ndarray, steps: int) -> np.ndarray:
    if steps > 0 and flat.size and flat.size % steps == 0:
        return flat.reshape(steps, -1)
    return flat.reshape(0, 0) if not flat.size else flat.reshape(1, -1)


def build_request(model: str, stream_id: str, seq: int, *, inputs=None, tokens=None, targets=None,
                  classes: bool = False, predict_only: bool = False, horizon: int = 0,
                  input_size: int = 0, labels=None, reset_after: bool = False) -> tuple[pb.StreamRequest, int]:
    """One chunk's ``StreamRequest`` and its number of steps T.

    ``inputs`` is [T, input_size] (or [T] when input_size is 1); ``tokens`` is [T] ints.
    ``targets`` is [T, output_size] floats, or [T] class ids when ``classes``. ``labels``
    (models with max_label_delay > 0) maps earlier step indices (a result's ``first_step`` + j)
    to their targets; a chunk of only labels (or only ``reset_after``) has no inputs.
    """
    extras = bool(labels) or bool(reset_after)
    if inputs is not None and tokens is not None or (inputs is None and tokens is None and not extras):
        raise ValueError("a chunk has either inputs or tokens (exactly one of them), or only labels")
    req = pb.StreamRequest(model=model, stream_id=stream_id, seq=seq, predict_only=bool(predict_only),
                           horizon=int(horizon), reset_after=bool(reset_after))
    for step, target in dict(labels or {}).items():
        label = req.labels.add(step=int(step))
        if classes:
            label.target_class = int(target)
        else:
            label.target.extend(np.asarray(target, dtype=np.float32).ravel().tolist())
    if inputs is None and tokens is None:
        steps = 0
    elif tokens is not None:
        toks = np.asarray(tokens, dtype=np.int64).ravel()
        req.tokens.extend(toks.tolist())
        steps = toks.size
    else:
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim == 1 and input_size > 1:
            if x.size % input_size:
                raise ValueError(f"inputs: {x.size} values are not whole rows of {input_size}")
            x = x.reshape(-1, input_size)
        steps = x.shape[0] if x.ndim else 1
        req.inputs.extend(x.ravel().tolist())
    if targets is not None:
        if classes:
            req.target_classes.extend(np.asarray(targets, dtype=np.int64).ravel().tolist())
        else:
            req.targets.extend(np.asarray(targets, dtype=np.float32).ravel().tolist())
    return req, int(steps)


def weights_to_tensors(weights: Mapping[str, Any]) -> list[pb.Tensor]:
    """``Tensor`` messages from a name -> array mapping (numpy arrays or torch tensors)."""
    tensors = []
    for name, value in weights.items():
        if hasattr(value, "detach"):  # a torch tensor, without importing torch
            value = value.detach().cpu().numpy()
        arr = np.asarray(value, dtype=np.float32)
        t = pb.Tensor(name=name, shape=list(arr.shape))
        t.data.extend(arr.ravel().tolist())
        tensors.append(t)
    return tensors


def tensors_to_weights(tensors: Iterable[pb.Tensor]) -> dict[str, np.ndarray]:
    """A PyTorch-style state dict of numpy arrays from ``Tensor`` messages."""
    return {t.name: np.array(t.data, dtype=np.float32).reshape(tuple(t.shape)) for t in tensors}
