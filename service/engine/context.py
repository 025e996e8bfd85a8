"""The byte context-mixing member ``{"baseline": "context"}`` of a token model.

Classical compression modelling as an ensemble member: order-1..6 hashed context statistics, a
match model and a logistic mixer over the bits of each byte (Cleary & Witten 1984, PPM;
Mahoney 2005, PAQ context mixing); the kernel and its state are in ``rnnstream.kernels.context``. The
member predicts, at step t, a distribution over the next token (target_mode next_input), and
Hedge (service/engine/hedge.py) weighs it against the network members by log loss, so a token
model is never worse than this statistical model by more than ln(K) nats in total, and the
recurrent network takes over where it learns more. On CPython's ``pydoc_data.topics`` (464 KB,
one pass) the member alone scores 1.40 bits/byte against bzip2 -9's 1.68 (bench/quality.py).

Tokens are bytes: ``vocab_size`` at most 256, the distribution renormalised over the
vocabulary. Memory: the statistics table (``Spec.context_table_bits``, default 22: 2^22 slots
of 4 bytes, 16 MiB) and the mixer weights are per model when the model shares its weights (the default) and per stream
otherwise; every stream keeps its last HISTORY_BITS bytes, the match index and its last
distribution. All of it is in the model or stream snapshot, so checkpoints and replays
continue exactly. ``learn=False`` moves the history (so later predictions use it) but changes
no statistics. It has no exportable weights.
"""
from __future__ import annotations

import numpy as np

from rnnstream.kernels import context as ck

from . import hedge, kernel_tier
from .baseline import PooledMember, state_bytes, zeros_of
from .engine import CallStats

HISTORY_BITS = 20
MATCH_BITS = 18
MODEL_FIELDS = ("table", "weights")
STREAM_FIELDS = ("history", "last_seen", "last_dist", "scalars")


def model_shapes(table_bits: int) -> dict:
    return {"table": ((1 << table_bits,), np.uint32), "weights": ((256, ck.NIN), np.float32)}


def stream_shapes() -> dict:
    return {"history": ((1 << HISTORY_BITS,), np.uint8),
            "last_seen": ((1 << MATCH_BITS,), np.int64),
            "last_dist": ((256,), np.float64), "scalars": ((8,), np.int64),
            "running": ((2,), np.float64)}


def _fresh(shapes: dict) -> dict:
    d = zeros_of(shapes)
    if "weights" in d:
        d["weights"][:] = ck.INITIAL_WEIGHT
    return d


class ContextMixing(PooledMember):
    """Context mixing for every stream of a token model."""

    kind = "context"
    pooled = "statistics"

    def __init__(self, vocab_size: int, shared: bool, table_bits: int, dtype=np.float32):
        self.vocab = vocab_size
        self.shared = shared
        self.table_bits = table_bits
        self.dtype = np.dtype(dtype)
        self._model = _fresh(model_shapes(table_bits)) if shared else None
        self._streams: dict = {}
        self.last_call = CallStats()

    def _model_shapes(self) -> dict:
        return model_shapes(self.table_bits)

    def _stream_shapes(self) -> dict:
        return stream_shapes()

    def step(self, stream_ids, batch: dict, fallback_preds, fallback_losses):
        """Distributions over the next token [B, T, V] and the losses of the previous
        predictions [B, T] (NaN at a stream's first token), as the engine reports them."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        learn = bool(batch["learn"] == 1)
        B, T = tokens.shape
        preds = np.full((B, T, self.vocab), np.nan)
        losses = np.full((B, T), np.nan)
        for b, sid in enumerate(stream_ids):
            s = self._streams.get(sid) or self._fresh()
            m = self._model if self.shared else s
            n = int(lengths[b])
            out = np.empty((n, 256))
            kernel_tier.active().context.run_bytes(
                np.ascontiguousarray(tokens[b, :n], dtype=np.int64), m["table"], m["weights"],
                s["history"], s["last_seen"], s["last_dist"], s["scalars"], out, losses[b, :n],
                self.vocab, learn)
            preds[b, :n] = out[:, :self.vocab]
            hedge._running(s["running"][None], losses[b:b + 1])
            self._streams[sid] = s
        self.last_call = CallStats(steps=int(lengths.sum()), batch_streams=B)
        return preds.astype(self.dtype), losses.astype(self.dtype)

    # streams ----------------------------------------------------------------------------
    def _new(self, shapes: dict) -> dict:
        return _fresh(shapes)

    def _steps(self, s: dict) -> int:
        return int(s["scalars"][ck.STEPS])


def memory_per_model(shared: bool, table_bits: int) -> int:
    """Bytes the model keeps once: the statistics table and mixer, when streams share them."""
    return state_bytes(model_shapes(table_bits)) if shared else 0


def memory_per_stream(shared: bool, table_bits: int) -> int:
    return state_bytes(stream_shapes() if shared else {**stream_shapes(), **model_shapes(table_bits)})
