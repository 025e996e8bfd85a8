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

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb

from .errors import DeadlineExceeded, status_code

# A chunk refused with one of these was not applied for a passing reason (the server is
# draining, a commit failed, the stream was closed under it): reconnect and send it again.
TRANSIENT_CHUNK_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


class TransientRefusal(Exception):
    """A kept chunk was refused for a passing reason; the session should reconnect and replay."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


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
        """Chunks sent whose answer the caller is still owed."""
        return len(self._pending)

    @property
    def kept(self) -> int:
        """Chunks held for a replay (sent, not yet durable)."""
        return len(self._kept)

    @property
    def last_seq(self) -> int:
        """The seq of the newest chunk numbered here (0: none yet)."""
        return self.next_seq - 1

    def replay(self, after: int = 0) -> list[pb.StreamRequest]:
        """Every kept chunk with seq > ``after``, oldest first: what to send again."""
        return [req for seq, req in self._kept.items() if seq > after]

    def abandon(self) -> None:
        """The caller gave up waiting (an error, an interrupt, a pipeline left early): the
        answers it was owed are dropped when they come; the chunks stay kept for a replay."""
        self._pending.clear()

    def advance_durable(self, durable_seq: int) -> None:
        """The server has checkpointed every chunk up to ``durable_seq``: stop keeping them."""
        if durable_seq > self.durable_seq:
            self.durable_seq = durable_seq
            while self._kept and next(iter(self._kept)) <= durable_seq:
                self._kept.popitem(last=False)

    def settle(self, acked: int, durable_seq: int, durable: bool) -> list[pb.StreamRequest] | None:
        """After reading the server's position (``flush``): None when every chunk is durable
        (``durable``) or applied, else the kept chunks the server lost, to send again."""
        self.advance_durable(durable_seq)
        missing = self.replay(after=acked)
        return missing if (self.kept if durable else missing) else None

    def flush_timeout(self, where: str, durable: bool, limit: float) -> DeadlineExceeded:
        """The error ``flush`` raises when its wait ran out."""
        return DeadlineExceeded(f"{where}: {self.kept} chunk(s) not {'durable' if durable else 'applied'} "
                                f"after {limit:g}s (durable_seq {self.durable_seq})")

    def accept(self, response: pb.StreamResponse) -> int | None:
        """Take one answer off the wire; return the chunk's step count if the caller is owed it.

        ``None`` means the answer is to a chunk whose answer the caller already has (a replay)
        or gave up on. Raises :class:`TransientRefusal` (keeping the chunk) when a kept chunk
        was refused for a passing reason: it must be sent again before the server moves past it.
        """
        self.advance_durable(response.durable_seq)
        seq = response.seq
        if response.HasField("error") and response.error.code != 0:
            code = status_code(response.error.code)
            if code in TRANSIENT_CHUNK_CODES and seq in self._kept:
                raise TransientRefusal(code, response.error.message)
            # Refused for what it is: it changed nothing and would be refused again.
            self._kept.pop(seq, None)
        if not self._pending or seq < self._pending[0][0]:
            return None
        owed, steps = self._pending[0]
        if seq != owed:
            raise RuntimeError(f"stream answered chunk {seq} while chunk {owed} was owed an answer")
        self._pending.popleft()
        return steps
