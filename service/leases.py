"""Stream leases with fencing tokens, on a shared store: one replica at a time applies a stream.

A replica takes a stream's lease when it opens the stream, renews all of its leases in one
statement every third of the lease time, and releases a lease when the stream leaves its
memory. A replica asked for a stream another live replica holds (the proxy sends the stream
there now: a replica came back or joined) marks the lease wanted and waits, bounded; the
holder checkpoints the stream and releases it at its next renewal (a hand-off). The fencing token of the lease
goes with every checkpoint of the stream, and the store writes the stream only while that
token is current (``PostgresStore.checkpoint``): a replica that was paused or cut off past its
lease, and whose streams another replica took, cannot overwrite them. It learns so at its next
renewal (or checkpoint) and drops those streams from its memory, unwritten.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from rnnstream.service.errors import ServiceError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """This replica's leases: ``held`` maps (model, stream_id) to the fencing token."""

    def __init__(self, store, ttl_s: float):
        self.store = store
        self.ttl_s = ttl_s
        self.held: dict[tuple[str, str], int] = {}
        self._release: list[tuple[str, str, int]] = []

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    def token(self, model: str, stream_id: str) -> int:
        return self.held.get((model, stream_id), 0)

    async def acquire(self, model: str, stream_id: str) -> int:
        """The stream's fencing token, once its lease is ours. A lease another replica holds is
        waited for: a dead replica stops renewing, so it expires within ``ttl_s``; a live one
        hands the stream over at its next renewal. One still held after that is UNAVAILABLE,
        which the SDK retries."""
        deadline = time.monotonic() + self.ttl_s + 1.0
        while True:
            token, owner, left_ms = await self.store.call(self.store.acquire_lease, model, stream_id, self.ttl_ms)
            if token:
                self.held[(model, stream_id)] = token
                return token
            if time.monotonic() >= deadline:
                raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                                   f"stream {stream_id!r} of model {model!r} is served by replica {owner} (its lease "
                                   f"has {left_ms} ms left); retry, the proxy sends the stream back to it or, if "
                                   "it died, this replica takes the stream over when the lease expires")
            # until the holder's lease runs out (the database said when), then try again
            await asyncio.sleep(min(0.02 + left_ms / 1000, max(0.0, deadline - time.monotonic())))

    def forget(self, model: str, stream_id: str) -> None:
        """The stream left memory: release its lease at the next renewal. Releases go to the
        store after any checkpoint already asked for (one store thread, in order), so a
        replica that takes the stream next reads the last state this one wrote."""
        token = self.held.pop((model, stream_id), 0)
        if token:
            self._release.append((model, stream_id, token))

    async def renew(self) -> tuple[list, list]:
        """Release what was forgotten, extend the rest: (the keys whose lease was taken over,
        the keys another replica asked for)."""
        release, self._release = self._release, []
        held = dict(self.held)
        try:
            lost, wanted = await self.store.call(self.store.renew_leases, self.ttl_ms, held, release)
        except BaseException:
            self._release = release + self._release
            raise
        for key in lost:
            if self.held.get(key) == held[key]:  # not re-taken meanwhile
                del self.held[key]
        return [key for key in lost if key not in self.held], [key for key in wanted if key in self.held]

    async def release_all(self) -> None:
        """Shutdown, after the final checkpoint: every lease free for the other replicas now."""
        for model, stream_id in list(self.held):
            self.forget(model, stream_id)
        await self.renew()
