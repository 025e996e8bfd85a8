"""One stream's bookkeeping and one chunk's validation.

The engine holds the numbers of a stream (recurrent state, sensitivity or TBPTT buffer,
per-stream weights); the service holds what the engine does not know about: the client's
seq counter, what is acknowledged and what is durable.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.convert import MAX_SEQ, check_values, float_array
from rnnstream.service.errors import exhausted, invalid


@dataclasses.dataclass(eq=False)
class StreamLedger:
    """The server's bookkeeping of one stream: its seqs, what is in flight, what is durable.

    Not the SDK's ``StreamSession`` (a client's open call): one ledger outlives many calls.
    """

    model: str
    stream_id: str
    acked_seq: int = 0      # last chunk applied
    durable_seq: int = 0    # last chunk in a committed checkpoint
    last_used: float = dataclasses.field(default_factory=time.monotonic)
    pending: int = 0        # chunks queued, not yet answered
    attached: int = 0       # Stream calls that sent a chunk of this stream and are still open
    dirty: bool = False     # changed since the last checkpoint
    ephemeral: bool = False  # never checkpointed; dropped when its last call ends
    failed: str = ""        # why its last checkpoint failed (it is not durable), "" when fine
    resend_from: int = 0    # a chunk refused for a passing reason: later seqs wait for it again

    def touch(self) -> None:
        self.last_used = time.monotonic()


@dataclasses.dataclass
class Chunk:
    """A validated chunk: arrays ready for the engine."""
    seq: int
    steps: int
    inputs: np.ndarray | None          # [T, I] float32
    tokens: np.ndarray | None          # [T] int64
    targets: np.ndarray | None         # [T, O] float32
    target_classes: np.ndarray | None  # [T] int64
    learn: bool
    horizon: int
    labels: tuple | None = None        # (steps [n] int64, targets [n, O] or classes [n])
    reset_after: bool = False

    @property
    def kind(self) -> tuple:
        """Chunks of one engine call must agree on this."""
        return (self.learn, self.targets is not None, self.target_classes is not None)


def can_forecast(spec) -> bool:
    """Feeding predictions back needs the output to be a valid next input."""
    if spec.vocab_size > 0:
        return spec.num_classes == spec.vocab_size
    return spec.output_size > 0 and spec.output_size == spec.input_size


def parse_chunk(req: pb.StreamRequest, spec, config) -> Chunk:
    """Check a request against the model before anything is touched; raise ServiceError."""
    if req.seq == 0:
        raise invalid("seq must be >= 1: it counts the client's chunks, and acked_seq 0 means none applied")
    if req.seq > MAX_SEQ:
        raise invalid(f"seq {req.seq} is too large: it must be at most 2^63 - 1 = {MAX_SEQ} (stored as a signed "
                      "64-bit integer)")
    tokens = inputs = None
    if spec.vocab_size > 0:
        if len(req.inputs):
            raise invalid("this model takes tokens (vocab_size > 0), not inputs")
        tokens = np.asarray(req.tokens, dtype=np.int64)
        steps = tokens.size
        if steps and (tokens.min() < 0 or tokens.max() >= spec.vocab_size):
            raise invalid(f"token out of range: tokens must lie in [0, {spec.vocab_size})")
    else:
        if len(req.tokens):
            raise invalid("this model takes inputs, not tokens (vocab_size is 0)")
        flat = float_array(req.inputs)
        if flat.size % spec.input_size:
            raise invalid(f"inputs has {flat.size} values, not a multiple of input_size {spec.input_size}")
        steps = flat.size // spec.input_size
        check_values(flat, "inputs")
        inputs = flat.reshape(steps, spec.input_size)
    labels = parse_labels(req, spec, config)
    if steps == 0 and labels is None and not req.reset_after:
        raise invalid("empty chunk: send at least one step of inputs or tokens (or labels)")
    if steps > config.max_chunk_steps:
        raise exhausted(f"chunk has {steps} steps; the limit max_chunk_steps is {config.max_chunk_steps}")
    if req.horizon > config.max_horizon:
        raise exhausted(f"horizon {req.horizon} exceeds the limit max_horizon {config.max_horizon}")
    if req.horizon and not can_forecast(spec):
        raise invalid("horizon > 0 needs a model whose output can be fed back as its next input "
                      "(output_size == input_size, or num_classes == vocab_size)")
    targets = target_classes = None
    if spec.target_mode == "next_input":
        if len(req.targets) or len(req.target_classes):
            raise invalid("target_mode TARGET_MODE_NEXT_INPUT: targets come from the next input; send none")
    elif spec.num_classes > 0:
        if len(req.targets):
            raise invalid("a classification model takes target_classes, not targets")
        if len(req.target_classes):
            target_classes = np.asarray(req.target_classes, dtype=np.int64)
            if target_classes.size != steps:
                raise invalid(f"target_classes has {target_classes.size} values for {steps} steps")
            if target_classes.min() < 0 or target_classes.max() >= spec.num_classes:
                raise invalid(f"target class out of range: classes must lie in [0, {spec.num_classes})")
    else:
        if len(req.target_classes):
            raise invalid("a regression model takes targets, not target_classes")
        if len(req.targets):
            flat = float_array(req.targets)
            if flat.size != steps * spec.output_size:
                raise invalid(f"targets has {flat.size} values; {steps} steps x output_size {spec.output_size} "
                              f"= {steps * spec.output_size}")
            check_values(flat, "targets")
            targets = flat.reshape(steps, spec.output_size)
    learn = not req.predict_only
    if (learn and steps and spec.target_mode == "explicit" and targets is None and target_classes is None
            and spec.max_label_delay == 0):
        raise invalid("a learning chunk of a TARGET_MODE_EXPLICIT model needs targets (or set predict_only, "
                      "or create the model with max_label_delay > 0 and send labels later)")
    if labels is not None and not learn:
        raise invalid("labels are for learning: a predict_only chunk cannot carry them")
    return Chunk(req.seq, steps, inputs, tokens, targets, target_classes, learn, int(req.horizon),
                 labels, bool(req.reset_after))


def parse_labels(req: pb.StreamRequest, spec, config) -> tuple | None:
    """The request's late labels as arrays; which steps they may name is the engine's check."""
    if not len(req.labels):
        return None
    if spec.max_label_delay == 0:
        raise invalid("this model takes no labels: create it with max_label_delay > 0, or send "
                      "targets with the chunk's steps")
    if len(req.labels) > config.max_chunk_steps:
        raise exhausted(f"{len(req.labels)} labels; the limit max_chunk_steps is {config.max_chunk_steps}")
    steps = np.asarray([lab.step for lab in req.labels], dtype=np.uint64)
    if steps.max() >= 1 << 62:
        raise invalid(f"label step {int(steps.max())} is in the future")
    steps = steps.astype(np.int64)
    if spec.num_classes > 0:
        if any(len(lab.target) for lab in req.labels):
            raise invalid("a classification model's labels take target_class, not target")
        values = np.asarray([lab.target_class for lab in req.labels], dtype=np.int64)
        if values.min() < 0 or values.max() >= spec.num_classes:
            raise invalid(f"label class out of range: classes must lie in [0, {spec.num_classes})")
        return steps, values
    bad = [lab.step for lab in req.labels if len(lab.target) != spec.output_size]
    if bad:
        raise invalid(f"label for step {bad[0]} has the wrong number of target values: a regression "
                      f"label needs output_size = {spec.output_size}")
    values = np.asarray([list(lab.target) for lab in req.labels], dtype=np.float32)
    check_values(values, "label targets")  # NaN, Inf, or a square that overflows float32
    return steps, values


def stats_proto(stats: dict) -> pb.StreamStats:
    return pb.StreamStats(steps=int(stats.get("steps", 0)), updates=int(stats.get("updates", 0)),
                          running_loss=float(stats.get("running_loss", 0.0)),
                          gradient_norm=float(stats.get("gradient_norm", 0.0)),
                          skipped_updates=int(stats.get("skipped_updates", 0)),
                          members=[pb.MemberStats(index=int(m["index"]),
                                                  running_loss=float(m["running_loss"]),
                                                  weight=float(m["weight"]))
                                   for m in stats.get("members", ())])


def plain_stats(stats: dict) -> dict:
    """JSON-able copy of ``engine.stream_stats`` (numpy scalars become Python numbers; an
    ensemble's per-member list is copied the same way)."""
    out = {}
    for k, v in stats.items():
        if isinstance(v, (list, tuple)):
            out[k] = [plain_stats(m) for m in v]
            continue
        v = v.item() if hasattr(v, "item") else v
        out[k] = v if isinstance(v, (int, float)) else float(v)
    return out
