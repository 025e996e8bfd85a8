"""What the synchronous and the asyncio SDK (``client.py``, ``aio.py``) share: call defaults, one
chunk's request, the refusal check, the items a pipeline takes, and the words of giving up.
"""
from __future__ import annotations

from typing import Any, Mapping

import grpc

from . import convert
from .connect import Backoff
from .errors import ChunkRefused

DEFAULT_TIMEOUT_S = 30.0
# How often flush() asks the server how far its checkpoints have got, and for how long by
# default (many checkpoint intervals, and a restart or two).
FLUSH_POLL = Backoff(initial_s=0.05, max_s=0.5, jitter=False)
FLUSH_TIMEOUT_S = 60.0


def chunk_request(info: convert.ModelInfo, model, stream_id, inputs, tokens, targets, predict_only, horizon,
                  labels=None, reset_after=False):
    """The request of one chunk (seq 0: the caller numbers it) and its step count, shaped by the
    model's spec; a token model's bare chunk is its tokens."""
    spec = info.spec
    if inputs is not None and tokens is None and spec["vocab_size"] > 0:
        inputs, tokens = None, inputs  # a token model's bare chunk is its tokens
    return convert.build_request(model, stream_id, 0, inputs=inputs, tokens=tokens, targets=targets,
                                 classes=spec["num_classes"] > 0, predict_only=predict_only,
                                 horizon=horizon, input_size=spec["input_size"], labels=labels,
                                 reset_after=reset_after)


def raise_if_refused(result: convert.StreamResult) -> convert.StreamResult:
    if result.error is not None:
        raise ChunkRefused(result.error[1], result.error[0], result.seq)
    return result


def chunk_kwargs(chunk) -> dict[str, Any]:
    """What ``send`` takes, from one item of a pipelined iterable.

    An item is a mapping of ``send``'s keyword arguments, an ``(inputs, targets)`` pair, or
    a bare array of inputs (of tokens, for a token model).
    """
    if isinstance(chunk, Mapping):
        return dict(chunk)
    if isinstance(chunk, tuple) and len(chunk) == 2:
        return {"inputs": chunk[0], "targets": chunk[1]}
    return {"inputs": chunk}


def describe_cause(cause: BaseException | None) -> str:
    """Why a stream call ended, in words (never a repr of a grpc call object)."""
    if cause is None:
        return "the server ended the call"
    if isinstance(cause, grpc.RpcError) and hasattr(cause, "code"):
        details = " ".join(str(cause.details() or "").split())
        return f"{cause.code().name}: {details}" if details else cause.code().name
    return " ".join(str(cause).split())


def gave_up_message(session, waited_s: float, cause: BaseException | None) -> str:
    return (f"gave up on stream {session.stream_id!r} of model {session.model!r} after {session.reconnects} "
            f"reconnect attempt(s) over {waited_s:.0f} s: the server at {session.client.connection.address} "
            f"did not come back (last error: {describe_cause(cause)}); the unacknowledged chunks were not applied")
