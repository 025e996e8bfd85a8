"""The bookkeeping that makes a stream session survive a reconnect.

A session numbers its chunks, keeps every chunk the server has not yet made durable, and
after a reconnect sends them again in order. The server applies each seq at most once
(a seq it already applied is answered ``duplicate``), so a replay never trains twice; the
answers to chunks the caller already has are dropped here, and the caller sees exactly one
answer per chunk, in order. Pure bookkeeping: no I/O, shared by the sync and async sessions.
"""
from __future__ import annotations

import collections

import grpc

from protos.rnnstream.v1 import rnnstream_pb2 as pb

from .errors import status_code

# A chunk refused with one of these was not applied for a passing reason (the server is
# draining, a commit failed, the stream was closed under it): reconnect and send it again.
TRANSIENT_CHUNK_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


class TransientRefusal(Exception):
    """The owed chunk was refused for a passing reason; the session should reconnect and replay."""


class ChunkLog:
    def __init__(self, next_seq: int = 1, durable_seq: int = 0):
        self.next_seq = next_seq
        self.durable_seq = durable_seq
        self._kept: collections.OrderedDict[int, pb.StreamRequest] = collections.OrderedDict()
        self._pending: collections.deque[tuple[int, int]] = collections.deque()  # (seq, steps)

    def add(self, request: pb.StreamRequest, steps: int) -> pb.StreamRequest:
        """Number a new chunk, keep it until it is durable, and expect its answer."""
        request.seq = self.next_seq
        self.next_seq += 1
        self._kept[request.seq] = request
        self._pending.append((request.seq, steps))
        return request

    @property
    def in_flight(self) -> int:
        """Chunks sent whose answer the caller has not had yet."""
        return len(self._pending)

    @property
    def kept(self) -> int:
        """Chunks held for a replay (sent, not yet durable)."""
        return len(self._kept)

    def replay(self) -> list[pb.StreamRequest]:
        """Every kept chunk, oldest first: what to send again on a fresh connection."""
        return list(self._kept.values())

    def accept(self, response: pb.StreamResponse) -> int | None:
        """Take one answer off the wire; return the chunk's step count if the caller is owed it.

        ``None`` means the answer is to a replayed chunk whose answer the caller already has.
        Raises :class:`TransientRefusal` (keeping the chunk) when it is worth sending again.
        """
        if response.durable_seq > self.durable_seq:
            self.durable_seq = response.durable_seq
            while self._kept and next(iter(self._kept)) <= self.durable_seq:
                self._kept.popitem(last=False)
        if not self._pending or response.seq < self._pending[0][0]:
            return None
        seq, steps = self._pending[0]
        if response.seq != seq:
            raise RuntimeError(f"stream answered chunk {response.seq} while chunk {seq} was owed an answer")
        if response.HasField("error") and response.error.code != 0:
            if status_code(response.error.code) in TRANSIENT_CHUNK_CODES:
                raise TransientRefusal(f"{status_code(response.error.code).name}: {response.error.message}")
            # Refused for what it is: it changed nothing and would be refused again.
            self._kept.pop(seq, None)
        self._pending.popleft()
        return steps
