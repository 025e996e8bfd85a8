"""The part of :class:`~rnnstream.service.registry.Registry` that moves state from memory to the
store: checkpoints (models and streams in one transaction), evictions, hand-offs to another
replica and lost leases. Snapshots are taken on the model's worker, between its chunks.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from rnnstream.service.session import StreamLedger, plain_stats
from rnnstream.service.store import LEASE_LOST, StreamRecord

if TYPE_CHECKING:
    from rnnstream.service.registry import ModelHost

# Registry's log: these run as its methods, and their lines keep the name they always had
log = logging.getLogger("rnnstream.service.registry")


def _drop_engine_stream(engine, stream_id: str) -> None:
    if engine.has_stream(stream_id):
        engine.drop_stream(stream_id)


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("dropping a stream's state failed", exc_info=future.exception())


class Checkpoints:
    """Registry's checkpoint and eviction methods, as a mixin: they read its ``hosts``,
    ``store``, ``leases``, ``metrics``, ``config`` and ``_leaving``, and its ``_model_state``."""

    async def checkpoint(self, hosts=None, sessions=None, evict=(), reason: str = "idle") -> None:
        """Commit model and stream snapshots in one transaction; then mark them durable.

        ``hosts``/``sessions`` default to everything dirty. ``evict`` sessions are written
        and dropped from memory (and counted as evictions with ``reason``).
        """
        t0 = time.perf_counter()
        hosts = [h for h in (self.hosts.values() if hosts is None else hosts) if h.model_dirty]
        if sessions is None:
            sessions = [s for h in self.hosts.values() for s in h.sessions.values() if s.dirty]
        evict = list(evict)
        sessions = [s for s in sessions if s.dirty and s not in evict] + evict
        by_host: dict[str, list] = {}
        for s in sessions:
            by_host.setdefault(s.model, []).append(s)
        for host in hosts:
            by_host.setdefault(host.name, [])
        models = []
        written: list[tuple[StreamLedger, StreamRecord]] = []
        for name, host_sessions in by_host.items():
            host = self.hosts.get(name)
            if host is None:
                continue  # deleted meanwhile: nothing to write
            # on the model's worker, between its chunks: the snapshot is consistent and not torn
            model, records = await host.serial.call(self._snapshot, host, host in hosts, host_sessions)
            if model is not None:
                models.append(model)
            written += records
        dirty_models = [self.hosts[name] for name, _ in models if name in self.hosts]
        for s in evict:
            if s.pending == 0 and not s.dirty:  # unchanged since its snapshot
                self._drop(s, reason)
        for s, record in written:
            if s in evict:
                self._leaving[(s.model, s.stream_id)] = record
        if not models and not written:
            return
        try:
            failures = await self.store.call(self.store.checkpoint, models, [r for _, r in written])
        except Exception:
            for s, _ in written:
                s.dirty = True
            for host in dirty_models:
                host.model_dirty = True
            raise
        finally:
            for s in evict:
                self._leaving.pop((s.model, s.stream_id), None)
        failed = {(f.model, f.stream_id): f.error for f in failures}
        for host in dirty_models:
            if (host.name, "") in failed:
                host.model_dirty = True
                self._checkpoint_failed(host.name, "", failed[(host.name, "")])
        for s, record in written:
            error = failed.get((s.model, s.stream_id))
            if error is None:
                s.durable_seq = record.acked_seq
                s.failed = ""
            elif error.startswith(LEASE_LOST):  # another replica serves it now: ours is stale
                log.warning("stream %r of model %r: %s; dropped from memory, not written", s.stream_id, s.model, error)
                self.metrics.checkpoint_failures.inc()
                self.lease_lost([(s.model, s.stream_id)])
            else:  # this stream alone stays not durable; the others committed
                s.dirty, s.failed = True, error
                self._checkpoint_failed(s.model, s.stream_id, error)
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)

    def _snapshot(self, host: ModelHost, with_model: bool, sessions: list) -> tuple:
        """(model row or None, [(session, record)]) of one model; runs on its worker."""
        model = None
        if with_model and host.model_dirty:
            model = (host.name, self._model_state(host.engine, host.steps, host.updates))
            host.model_dirty = False
        written = []
        for s in sessions:
            if s.ephemeral:
                s.dirty = False  # never stored; an evicted one is simply dropped
                continue
            if not host.engine.has_stream(s.stream_id):
                continue  # opened but never stepped: nothing to write
            token = self.leases.token(s.model, s.stream_id) if self.leases else 0
            written.append((s, StreamRecord(s.model, s.stream_id, s.acked_seq,
                                            plain_stats(host.engine.stream_stats(s.stream_id)),
                                            host.engine.snapshot_stream(s.stream_id), token)))
            s.dirty = False
        return model, written

    def _checkpoint_failed(self, model: str, stream_id: str, error: str) -> None:
        what = f"stream {stream_id!r} of model {model!r}" if stream_id else f"model {model!r}"
        log.error("checkpoint of %s failed, it is NOT durable (the rest committed): %s", what, error)
        self.metrics.checkpoint_failures.inc()

    async def hand_off(self, keys) -> None:
        """Streams another replica asked for (the proxy sends them there now): checkpoint them,
        drop them from memory and release their leases at once. A stream with chunks queued
        stays until the next renewal."""
        sessions = [self.hosts[m].sessions[s] for m, s in keys if m in self.hosts and s in self.hosts[m].sessions]
        if not sessions:
            return
        log.info("handing %d stream(s) over to the replicas that asked for them", len(sessions))
        await self.checkpoint(evict=sessions, reason="handed_off")
        lost, _ = await self.leases.renew()  # the releases, now
        self.lease_lost(lost)

    def lease_lost(self, keys) -> None:
        """Streams whose lease another replica holds now: out of memory, without a checkpoint
        (the store would refuse it); a later chunk here waits for the lease again."""
        for model, stream_id in keys:
            if self.leases is not None:
                self.leases.held.pop((model, stream_id), None)
            host = self.hosts.get(model)
            session = host.sessions.get(stream_id) if host else None
            if session is not None:
                self._drop(session, "lease_lost")

    def _drop(self, session: StreamLedger, reason: str) -> None:
        session.dirty = False
        host = self.hosts.get(session.model)
        if host is None or host.sessions.get(session.stream_id) is not session:
            return
        if self.leases is not None:
            self.leases.forget(session.model, session.stream_id)
        # queued behind the model's earlier calls, ahead of any later one (a reopen's restore)
        host.serial.submit(_drop_engine_stream, host.engine, session.stream_id).add_done_callback(_log_failure)
        del host.sessions[session.stream_id]
        self.metrics.evictions.labels(reason).inc()
        self.metrics.active_streams.labels(host.name).set(len(host.sessions))

    async def evict_idle(self) -> None:
        deadline = time.monotonic() - self.config.stream_idle_ttl_s
        idle = [s for h in self.hosts.values() for s in h.sessions.values()
                if s.last_used < deadline and s.pending == 0]
        if idle:
            log.info("evicting %d idle streams", len(idle))
            await self.checkpoint(evict=idle, reason="idle")
