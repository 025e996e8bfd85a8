"""The models a server holds, their streams, and how both reach the store.

A :class:`ModelHost` is one model: its engine, its streams in memory and its queue of
chunks (run by ``service.batcher``). :class:`Registry` owns all hosts and is the only code
that moves state between the engine and the store. Engine calls happen on the event loop
thread only, so a snapshot taken there is consistent; the store writes on its own thread.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

import grpc
import numpy as np

from service import batcher
from service.config import Config
from service.convert import check_id, shown, spec_kwargs, validate_stream_id
from service.engine import Engine, EnsembleEngine, Spec, make_engine, memory_per_stream
from service.engine.layout import build_layout
from service.errors import ServiceError, exhausted, invalid, not_found
from service.metrics import Metrics
from service.session import StreamSession, plain_stats
from service.store import Store, StreamRecord

log = logging.getLogger(__name__)


def _durable_exists(host, stream_id: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                        f"stream {stream_id!r} of model {host.name!r} exists and is stored; an ephemeral stream "
                        "must be new: use another stream_id")

# Service counters ride along in the model snapshot under keys the engine never uses.
_STEPS_KEY, _UPDATES_KEY = "__rnnstream_steps", "__rnnstream_updates"


class ModelHost:
    def __init__(self, spec: Spec, engine: Engine | EnsembleEngine, created_unix_ms: int, metrics):
        self.name = spec.name
        self.metrics = metrics  # ModelMetrics: this model's series
        self.spec = spec
        self.engine = engine
        self.created_unix_ms = created_unix_ms
        self.sessions: dict[str, StreamSession] = {}
        self.queue: collections.deque = collections.deque()
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.closed = False
        self.busy = False  # the worker is running or committing a batch
        self.model_dirty = False
        self.steps = 0
        self.updates = 0
        self.weight_norm_at = 0.0

    def attached_streams(self) -> int:
        return sum(1 for s in self.sessions.values() if s.attached)


class Registry:
    def __init__(self, config: Config, store: Store, metrics: Metrics):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.hosts: dict[str, ModelHost] = {}
        # Streams written out by an eviction not yet committed: a reopen takes them from here.
        self._leaving: dict[tuple[str, str], StreamRecord] = {}
        self._opening: dict[tuple[str, str], asyncio.Future] = {}

    # -- models ---------------------------------------------------------------------------
    def load(self) -> None:
        """Start-up: every stored model back into memory (streams come back when used)."""
        for stored in self.store.run(self.store.load_models):
            spec = Spec.from_dict(stored.spec)
            state = dict(stored.state)
            steps, updates = int(state.pop(_STEPS_KEY, 0)), int(state.pop(_UPDATES_KEY, 0))
            engine = make_engine(spec)
            engine.restore_model(state)
            host = self._add(spec, engine, stored.created_unix_ms)
            host.steps, host.updates = steps, updates
            log.info("loaded model %s", spec.name)

    def _add(self, spec: Spec, engine: Engine, created_unix_ms: int) -> ModelHost:
        host = ModelHost(spec, engine, created_unix_ms, self.metrics.for_model(spec.name))
        self.hosts[host.name] = host
        host.worker = asyncio.get_running_loop().create_task(batcher.run(host, self), name=f"batcher-{host.name}")
        self.metrics.active_streams.labels(host.name).set(0)
        return host

    def get(self, name: str) -> ModelHost:
        host = self.hosts.get(name)
        if host is None:
            check_id(name, "model")  # an oversized or unprintable name is the caller's mistake
            raise not_found(f"model {shown(name)} does not exist")
        return host

    async def create(self, spec_msg) -> ModelHost:
        """Validate, build the engine, commit, then answer (ALREADY_EXISTS for a taken name)."""
        try:
            spec = Spec(**spec_kwargs(spec_msg))
            spec.validate()
        except ValueError as exc:
            raise invalid(f"invalid spec: {exc}") from None
        if spec.name in self.hosts:
            raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {spec.name!r} already exists")
        need = memory_per_stream(spec)
        if need > self.config.max_stream_memory_bytes:
            hint = " Use ALGORITHM_SNAP1 (O(P) per stream) or ALGORITHM_TBPTT instead." if spec.algorithm == "rtrl" else ""
            raise exhausted(f"one stream of this model needs {need} bytes, over the limit max_stream_memory_bytes "
                            f"= {self.config.max_stream_memory_bytes}.{hint}")
        self._check_snapshot_fits(spec, need)
        try:
            engine = make_engine(spec)
        except RuntimeError as exc:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        created = int(time.time() * 1000)
        if not await self.store.call(self.store.insert_model, spec.name, spec.to_dict(), created,
                                     self._model_state(engine, 0, 0)):
            raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {spec.name!r} already exists")
        if spec.name in self.hosts:  # created concurrently while we awaited the store
            raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {spec.name!r} already exists")
        return self._add(spec, engine, created)

    def _check_snapshot_fits(self, spec: Spec, stream_bytes: int) -> None:
        """RESOURCE_EXHAUSTED for a model whose checkpoint SQLite could not store in one BLOB."""
        members = [spec.member_spec(k) for k in spec.network_members()] if getattr(spec, "members", None) else [spec]
        P = sum(build_layout(m).num_parameters for m in members)
        # shared: weights, both moments and the start template; per stream: the template alone
        model_bytes = 4 * P * (4 if spec.sharing == "shared" else 1) + 4096
        limit = self.store.max_blob_bytes
        for what, size in (("the model's snapshot", model_bytes), ("one stream's snapshot", stream_bytes + 4096)):
            if size > limit:
                raise exhausted(f"{what} would take {size} bytes, over the store's limit of {limit} bytes per "
                                f"value; this model has {P} parameters: make it smaller")

    async def delete(self, name: str) -> None:
        host = self.get(name)
        del self.hosts[name]
        host.closed = True
        host.wake.set()
        batcher.fail_queued(host, not_found(f"model {name!r} was deleted"))
        for _ in host.sessions:
            self.metrics.evictions.labels("model_deleted").inc()
        host.sessions.clear()
        await self.store.call(self.store.delete_model, name)
        self.metrics.forget_model(name)

    async def stored_streams(self, host: ModelHost) -> int:
        return await self.store.call(self.store.count_streams, host.name)

    @staticmethod
    def _model_state(engine: Engine, steps: int, updates: int) -> dict:
        state = dict(engine.snapshot_model())
        state[_STEPS_KEY] = np.int64(steps)
        state[_UPDATES_KEY] = np.int64(updates)
        return state

    # -- streams --------------------------------------------------------------------------
    def total_streams(self) -> int:
        return sum(len(h.sessions) for h in self.hosts.values())

    async def open_stream(self, host: ModelHost, stream_id: str, create: bool = True,
                          ephemeral: bool = False) -> StreamSession:
        """The stream in memory, restored from the store, or (``create``) new.

        ``ephemeral``: a new stream that is never stored (refused for one that exists)."""
        session = host.sessions.get(stream_id)
        if session is not None:
            if ephemeral and not session.ephemeral:
                raise _durable_exists(host, stream_id)
            return session
        validate_stream_id(stream_id)
        key = (host.name, stream_id)
        pending = self._opening.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return await self.open_stream(host, stream_id, create, ephemeral)
        self._opening[key] = asyncio.get_running_loop().create_future()
        try:
            return await self._open(host, stream_id, create, ephemeral)
        finally:
            self._opening.pop(key).set_result(None)

    async def _open(self, host: ModelHost, stream_id: str, create: bool, ephemeral: bool) -> StreamSession:
        record = self._leaving.get((host.name, stream_id))
        if record is None:
            stored = await self.store.call(self.store.load_stream, host.name, stream_id)
            if host.closed:
                raise not_found(f"model {host.name!r} was deleted")
        else:
            stored = record
        if stored is None and not create:
            raise not_found(f"stream {stream_id!r} of model {host.name!r} does not exist")
        if stored is not None and ephemeral:
            raise _durable_exists(host, stream_id)
        if len(host.sessions) >= self.config.max_streams_per_model:
            raise exhausted(f"model {host.name!r} holds {len(host.sessions)} streams; the limit "
                            f"max_streams_per_model is {self.config.max_streams_per_model}")
        if self.total_streams() >= self.config.max_streams_total:
            raise exhausted(f"the server holds {self.total_streams()} streams; the limit max_streams_total "
                            f"is {self.config.max_streams_total}")
        session = StreamSession(host.name, stream_id, ephemeral=ephemeral)
        if stored is not None:
            host.engine.restore_stream(stream_id, stored.state)
            session.acked_seq = session.durable_seq = stored.acked_seq
        host.sessions[stream_id] = session
        self.metrics.active_streams.labels(host.name).set(len(host.sessions))
        return session

    async def stream_info(self, host: ModelHost, stream_id: str) -> tuple[int, int, dict, bool]:
        """(acked_seq, durable_seq, stats, in_memory) without loading the stream."""
        session = host.sessions.get(stream_id)
        if session is not None:
            return (session.acked_seq, session.durable_seq,
                    plain_stats(host.engine.stream_stats(stream_id)) if host.engine.has_stream(stream_id) else {},
                    True)
        stored = await self.store.call(self.store.stream_info, host.name, stream_id)
        if stored is None:
            raise not_found(f"stream {stream_id!r} of model {host.name!r} does not exist")
        return stored[0], stored[0], stored[1], False

    async def reset_stream(self, host: ModelHost, stream_id: str) -> StreamSession:
        """Back to a fresh stream (state, sensitivity/buffer, stats, seq), committed before the answer."""
        session = await self.open_stream(host, stream_id, create=False)
        if host.engine.has_stream(stream_id):
            host.engine.reset_stream(stream_id)
        session.acked_seq = 0
        session.dirty = True
        await self.checkpoint([host], [session])
        return session

    async def close_stream(self, host: ModelHost, stream_id: str) -> None:
        """Checkpoint the stream and drop it from memory; it resumes from the store."""
        if stream_id not in host.sessions:
            await self.stream_info(host, stream_id)  # NOT_FOUND when unknown
            return
        await self.checkpoint([host], [], evict=[host.sessions[stream_id]], reason="closed")

    async def import_weights(self, host: ModelHost, stream_id: str, tensors: dict) -> None:
        """Set a model's weights (PER_STREAM without a stream: those new streams start from), or
        one stream's (a new one is created). A refused import leaves no stream behind."""
        session, existed, fresh = None, stream_id in host.sessions, False
        if stream_id:
            session = await self.open_stream(host, stream_id, create=True)
            fresh = not host.engine.has_stream(stream_id)
            if fresh and not hasattr(host.engine, "add_stream"):  # an ensemble: members start together
                if not existed:
                    self._drop(session, "import_refused")
                raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"stream {stream_id!r} has not applied a chunk yet; send it one, then import")
            if fresh:  # a new stream: give it its start state, then its weights
                host.engine.add_stream(stream_id)
        try:
            host.engine.load_state_dict(tensors, stream_id or None)
        except (ValueError, KeyError) as exc:
            if fresh and not existed:
                self._drop(session, "import_refused")  # no phantom stream is left behind
            elif fresh:
                host.engine.drop_stream(stream_id)
            raise invalid(f"cannot import these weights: {exc}") from None
        host.model_dirty = True
        if session is not None:
            session.dirty = True
        await self.checkpoint([host], [session] if session else [])

    async def weights_session(self, host: ModelHost, stream_id: str) -> StreamSession:
        """A PER_STREAM stream whose weights exist (it has applied a chunk); else a clear refusal."""
        session = await self.open_stream(host, stream_id, create=False)
        if not host.engine.has_stream(stream_id):
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"stream {stream_id!r} has not applied a chunk yet, so it has no weights of its own; "
                               "send it a chunk first, or use the model's weights (no stream_id), which new "
                               "streams start from")
        return session

    async def delete_stream(self, host: ModelHost, stream_id: str) -> None:
        """Forget a stream in memory and in the store; NOT_FOUND when neither has it."""
        session = host.sessions.get(stream_id)
        if session is not None and (session.attached or session.pending):
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"stream {stream_id!r} is in use by an open Stream call or has chunks queued; "
                               "end that call first")
        stored = await self.store.call(self.store.stream_info, host.name, stream_id)
        if session is None and stored is None and (host.name, stream_id) not in self._leaving:
            raise not_found(f"stream {stream_id!r} of model {host.name!r} does not exist")
        session = host.sessions.get(stream_id)  # the store call yielded: look again
        if session is not None:
            self._drop(session, "deleted")
        await self.store.call(self.store.delete_stream, host.name, stream_id)

    def end_ephemeral(self, session: StreamSession) -> None:
        """Drop an ephemeral stream once no call uses it."""
        if session.ephemeral and not session.attached and not session.pending:
            self._drop(session, "ephemeral")

    # -- checkpoints ----------------------------------------------------------------------
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
        models = []
        for host in hosts:
            models.append((host.name, self._model_state(host.engine, host.steps, host.updates)))
            host.model_dirty = False
        written: list[tuple[StreamSession, StreamRecord]] = []
        for s in sessions:
            host = self.hosts.get(s.model)
            if s.ephemeral:
                s.dirty = False  # never stored; an evicted one is simply dropped below
                continue
            if host is None or not host.engine.has_stream(s.stream_id):
                continue  # deleted meanwhile, or opened but never stepped: nothing to write
            written.append((s, StreamRecord(s.model, s.stream_id, s.acked_seq,
                                            plain_stats(host.engine.stream_stats(s.stream_id)),
                                            host.engine.snapshot_stream(s.stream_id))))
            s.dirty = False
        for s in evict:
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
            for host in hosts:
                host.model_dirty = True
            raise
        finally:
            for s in evict:
                self._leaving.pop((s.model, s.stream_id), None)
        failed = {(f.model, f.stream_id): f.error for f in failures}
        for host in hosts:
            if (host.name, "") in failed:
                host.model_dirty = True
                self._checkpoint_failed(host.name, "", failed[(host.name, "")])
        for s, record in written:
            error = failed.get((s.model, s.stream_id))
            if error is None:
                s.durable_seq = record.acked_seq
                s.failed = ""
            else:  # this stream alone stays not durable; the others committed
                s.dirty, s.failed = True, error
                self._checkpoint_failed(s.model, s.stream_id, error)
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)

    def _checkpoint_failed(self, model: str, stream_id: str, error: str) -> None:
        what = f"stream {stream_id!r} of model {model!r}" if stream_id else f"model {model!r}"
        log.error("checkpoint of %s failed, it is NOT durable (the rest committed): %s", what, error)
        self.metrics.checkpoint_failures.inc()

    def _drop(self, session: StreamSession, reason: str) -> None:
        session.dirty = False
        host = self.hosts.get(session.model)
        if host is None or host.sessions.get(session.stream_id) is not session:
            return
        if host.engine.has_stream(session.stream_id):
            host.engine.drop_stream(session.stream_id)
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
