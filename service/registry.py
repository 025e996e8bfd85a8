"""The models a server holds, their streams, and how both reach the store.

A :class:`ModelHost` is one model: its engine, its streams in memory and its queue of
chunks (run by ``service.batcher``). :class:`Registry` owns all hosts and is the only code
that moves state between the engine and the store (its checkpoints and evictions in
``service/checkpoints.py``). Engine calls run on worker threads through
the model's :class:`~rnnstream.service.workers.SerialEngine`, one at a time and in order, so a snapshot
taken there is consistent; the store writes on its own thread.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

import grpc
import numpy as np

from rnnstream.service import batcher, memory
from rnnstream.service.checkpoints import Checkpoints
from rnnstream.service.config import Config
from rnnstream.service.convert import check_id, shown, spec_kwargs, validate_stream_id
from rnnstream.service.engine import Engine, EnsembleEngine, Spec, make_engine, memory_per_model, memory_per_stream
from rnnstream.service.engine.layout import build_layout
from rnnstream.service.errors import ServiceError, exhausted, invalid, not_found
from rnnstream.service.leases import LeaseKeeper
from rnnstream.service.metrics import Metrics
from rnnstream.service.session import StreamLedger, plain_stats
from rnnstream.service.store import StoreBase, StreamRecord
from rnnstream.service.workers import SerialEngine, WorkerPool

log = logging.getLogger(__name__)


def _durable_exists(host, stream_id: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                        f"stream {stream_id!r} of model {host.name!r} exists and is stored; an ephemeral stream "
                        "must be new: use another stream_id")


# Service counters ride along in the model snapshot under keys the engine never uses.
_STEPS_KEY, _UPDATES_KEY = "__rnnstream_steps", "__rnnstream_updates"


class ModelHost:
    def __init__(self, spec: Spec, engine: Engine | EnsembleEngine, created_unix_ms: int, metrics,
                 pool: WorkerPool):
        self.name = spec.name
        self.serial = SerialEngine(pool)  # every engine call goes through here
        shared = spec.sharing == "shared"
        # for the memory budget: weights and optimizer state, and what baseline members keep per model
        self.model_bytes = memory.model_bytes(engine.num_parameters, shared) + memory_per_model(spec)
        self.stream_bytes = memory.stream_bytes(engine, memory_per_stream(spec))
        self.metrics = metrics  # ModelMetrics: this model's series
        self.spec = spec
        self.engine = engine
        self.created_unix_ms = created_unix_ms
        self.sessions: dict[str, StreamLedger] = {}
        self.queue: collections.deque = collections.deque()
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.closed = False
        self.busy = False  # the worker is running or committing a batch
        self.model_dirty = False
        self.steps = 0
        self.updates = 0
        self.weight_norm_at = 0.0
        # kept as they change (servicer, batcher): counting thousands of sessions per batch held the loop
        self.attached = 0        # sessions with an open Stream call
        self.queued_streams = 0  # sessions with a chunk queued or running
        self.seconds_per_step: float | None = None  # a batch's time per stream-step, averaged (batcher)

    def attached_streams(self) -> int:
        return self.attached


class Registry(Checkpoints):
    def __init__(self, config: Config, store: StoreBase, metrics: Metrics, pool: WorkerPool):
        self.config = config
        self.pool = pool
        self.store = store
        # a store shared by replicas: a stream's chunks are applied under its lease
        self.leases = LeaseKeeper(store, config.lease_ttl_s) if store.shared else None
        self.metrics = metrics
        self.hosts: dict[str, ModelHost] = {}
        # Streams written out by an eviction not yet committed: a reopen takes them from here.
        self._leaving: dict[tuple[str, str], StreamRecord] = {}
        self._opening: dict[tuple[str, str], asyncio.Future] = {}
        self.memory_budget = config.max_memory_bytes or memory.default_budget()
        self._reserved = 0  # bytes of models and streams being built or restored
        metrics.memory_budget_bytes.set(self.memory_budget)
        metrics.memory_used_bytes.set_function(self.memory_used)  # read at scrape time

    # -- models ---------------------------------------------------------------------------
    def load(self) -> None:
        """Start-up: every stored model back into memory (streams come back when used)."""
        for stored in self.store.run(self.store.load_models):
            self._add_stored(stored, make_engine(Spec.from_dict(stored.spec)))

    def _add_stored(self, stored, engine) -> ModelHost:
        spec = Spec.from_dict(stored.spec)
        state = dict(stored.state)
        steps, updates = int(state.pop(_STEPS_KEY, 0)), int(state.pop(_UPDATES_KEY, 0))
        engine.restore_model(state)
        host = self._add(spec, engine, stored.created_unix_ms)
        host.steps, host.updates = steps, updates
        host.round_base_updates = updates  # shared-weight rounds count this replica's updates from here
        log.info("loaded model %s", spec.name)
        return host

    async def find(self, name: str) -> ModelHost:
        """:meth:`get`, and on a shared store also a model another replica created since this
        one started (loaded from the store on first use)."""
        if name in self.hosts or self.leases is None:
            return self.get(name)
        check_id(name, "model")
        stored = await self.store.call(self.store.load_model, name)
        if stored is None or name in self.hosts:
            return self.get(name)
        engine = await asyncio.get_running_loop().run_in_executor(
            self.pool.executor, make_engine, Spec.from_dict(stored.spec))
        return self.hosts[name] if name in self.hosts else self._add_stored(stored, engine)

    async def find_all(self) -> None:
        """On a shared store, load every stored model this replica does not hold yet."""
        if self.leases is None:
            return
        for name in await self.store.call(self.store.model_names):
            if name not in self.hosts:
                try:
                    await self.find(name)
                except ServiceError:  # deleted meanwhile by another replica
                    pass

    def _add(self, spec: Spec, engine: Engine, created_unix_ms: int) -> ModelHost:
        host = ModelHost(spec, engine, created_unix_ms, self.metrics.for_model(spec.name), self.pool)
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
        if len(self.hosts) >= self.config.max_models:
            raise exhausted(f"the server holds {len(self.hosts)} models; the limit max_models is "
                            f"{self.config.max_models}: delete a model first")
        need = memory_per_stream(spec)
        if need > self.config.max_stream_memory_bytes:
            hint = " Use ALGORITHM_SNAP1 (O(P) per stream) or ALGORITHM_TBPTT instead." if spec.algorithm == "rtrl" else ""
            raise exhausted(f"one stream of this model needs {need} bytes, over the limit max_stream_memory_bytes "
                            f"= {self.config.max_stream_memory_bytes}.{hint}")
        weight_bytes = self._check_snapshot_fits(spec, need)
        await self.make_room(weight_bytes + need, f"model {spec.name!r} (its weights and one stream)")
        self._reserved += weight_bytes

        def build():  # allocating a large model is not done on the loop
            engine = make_engine(spec)
            return engine, self._model_state(engine, 0, 0)

        try:
            engine, state = await asyncio.get_running_loop().run_in_executor(self.pool.executor, build)
        except RuntimeError as exc:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        finally:
            self._reserved -= weight_bytes
        created = int(time.time() * 1000)
        if not await self.store.call(self.store.insert_model, spec.name, spec.to_dict(), created, state):
            raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {spec.name!r} already exists")
        if spec.name in self.hosts:  # created concurrently while we awaited the store
            raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {spec.name!r} already exists")
        return self._add(spec, engine, created)

    def _check_snapshot_fits(self, spec: Spec, stream_bytes: int) -> int:
        """RESOURCE_EXHAUSTED for a model whose checkpoint SQLite could not store in one BLOB;
        else the bytes its weights and optimizer state take."""
        members = [spec.member_spec(k) for k in spec.network_members()] if getattr(spec, "members", None) else [spec]
        P = sum(build_layout(m).num_parameters for m in members)
        # shared: weights, both moments and the start template; per stream: the template alone
        model_bytes = 4 * P * (4 if spec.sharing == "shared" else 1) + memory_per_model(spec) + 4096
        limit = self.store.max_blob_bytes
        for what, size in (("the model's snapshot", model_bytes), ("one stream's snapshot", stream_bytes + 4096)):
            if size > limit:
                raise exhausted(f"{what} would take {size} bytes, over the store's limit of {limit} bytes per "
                                f"value; this model has {P} parameters: make it smaller")
        return memory.model_bytes(P, spec.sharing == "shared") + memory_per_model(spec)

    async def delete(self, name: str) -> None:
        host = self.get(name)
        self._remove(host)
        await self.store.call(self.store.delete_model, name)
        self.metrics.forget_model(name)

    def _remove(self, host: ModelHost) -> None:
        del self.hosts[host.name]
        host.closed = True
        host.wake.set()
        batcher.fail_queued(host, not_found(f"model {host.name!r} was deleted"))
        for sid in host.sessions:
            self.metrics.evictions.labels("model_deleted").inc()
            if self.leases is not None:
                self.leases.forget(host.name, sid)
        host.sessions.clear()

    async def drop_deleted_models(self) -> None:
        """Shared store: models another replica deleted leave this one's memory too."""
        stored = set(await self.store.call(self.store.model_names))
        for host in [h for name, h in list(self.hosts.items()) if name not in stored]:
            if self.hosts.get(host.name) is host:
                log.info("model %s was deleted on another replica; dropping it here", host.name)
                self._remove(host)
                self.metrics.forget_model(host.name)

    # -- memory budget --------------------------------------------------------------------
    def memory_used(self) -> int:
        """Bytes counted against ``max_memory_bytes``: models, streams in memory, buffered requests."""
        held = sum(h.model_bytes + len(h.sessions) * h.stream_bytes for h in list(self.hosts.values()))
        return held + self._reserved + int(self.metrics.buffered_request_bytes._value.get())

    async def make_room(self, need: int, what: str) -> None:
        """Return when ``need`` more bytes fit the budget, after moving the least recently used
        idle streams (no open call, nothing queued) to the store; else RESOURCE_EXHAUSTED."""
        over = self.memory_used() + need - self.memory_budget
        if over <= 0:
            return
        idle = sorted((s for h in self.hosts.values() for s in h.sessions.values() if not s.attached and not s.pending),
                      key=lambda s: s.last_used)
        chosen, freed = [], 0
        for s in idle:
            if freed >= over:
                break
            chosen.append(s)
            freed += self.hosts[s.model].stream_bytes
        if chosen:
            log.info("memory budget: moving %d idle streams to the store", len(chosen))
            await self.checkpoint(evict=chosen, reason="memory")
        used = self.memory_used()
        if used + need > self.memory_budget:
            raise exhausted(f"{what} needs {need} bytes, but the server holds {used} bytes of its memory budget "
                            f"max_memory_bytes = {self.memory_budget} (idle streams are already in the store); "
                            "close streams, delete models, or raise --max-memory-bytes")

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
                          ephemeral: bool = False) -> StreamLedger:
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

    async def _open(self, host: ModelHost, stream_id: str, create: bool, ephemeral: bool) -> StreamLedger:
        if self.leases is None or ephemeral:
            return await self._open_leased(host, stream_id, create, ephemeral)
        # the lease first, then the state: a take-over reads what the last holder committed
        await self.leases.acquire(host.name, stream_id)
        try:
            return await self._open_leased(host, stream_id, create, ephemeral)
        except BaseException:
            if stream_id not in host.sessions:
                self.leases.forget(host.name, stream_id)
            raise

    async def _open_leased(self, host: ModelHost, stream_id: str, create: bool, ephemeral: bool) -> StreamLedger:
        record = self._leaving.get((host.name, stream_id))
        if record is not None:
            stored, source = record, "leaving"
        elif not self.store.may_hold_stream(host.name, stream_id):
            # a new stream the store certainly lacks: no wait behind a checkpoint on the store thread
            stored, source = None, "new"
        else:
            stored, source = await self.store.call(self.store.load_stream, host.name, stream_id), "store"
            if host.closed:
                raise not_found(f"model {host.name!r} was deleted")
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
        await self.make_room(host.stream_bytes, f"stream {stream_id!r} of model {host.name!r}")
        session = StreamLedger(host.name, stream_id, ephemeral=ephemeral)
        if stored is not None:
            self._reserved += host.stream_bytes  # counted while it is restored
            try:
                await host.serial.call(host.engine.restore_stream, stream_id, stored.state)
            finally:
                self._reserved -= host.stream_bytes
            if host.closed:
                raise not_found(f"model {host.name!r} was deleted")
            session.acked_seq = session.durable_seq = stored.acked_seq
        host.sessions[stream_id] = session
        self.metrics.stream_opens.labels(source).inc()
        self.metrics.active_streams.labels(host.name).set(len(host.sessions))
        return session

    async def stream_info(self, host: ModelHost, stream_id: str) -> tuple[int, int, dict, bool]:
        """(acked_seq, durable_seq, stats, in_memory) without loading the stream."""
        session = host.sessions.get(stream_id)
        if session is not None:
            engine = host.engine
            stats = await host.serial.call(
                lambda: plain_stats(engine.stream_stats(stream_id)) if engine.has_stream(stream_id) else {})
            return session.acked_seq, session.durable_seq, stats, True
        stored = await self.store.call(self.store.stream_info, host.name, stream_id)
        if stored is None:
            raise not_found(f"stream {stream_id!r} of model {host.name!r} does not exist")
        return stored[0], stored[0], stored[1], False

    async def reset_stream(self, host: ModelHost, stream_id: str) -> StreamLedger:
        """Back to a fresh stream (state, sensitivity/buffer, stats, seq), committed before the answer."""
        session = await self.open_stream(host, stream_id, create=False)
        engine = host.engine

        def reset():
            if engine.has_stream(stream_id):
                engine.reset_stream(stream_id)
            session.acked_seq = 0  # with the state, so no chunk runs in between

        await host.serial.call(reset)
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
        session, existed = None, stream_id in host.sessions
        if stream_id:
            session = await self.open_stream(host, stream_id, create=True)
        engine = host.engine

        def load():  # on the model's worker: (refusal, the stream was fresh)
            fresh = bool(stream_id) and not engine.has_stream(stream_id)
            if fresh and not hasattr(engine, "add_stream"):  # an ensemble: members start together
                return "ensemble", fresh
            if fresh:  # a new stream: give it its start state, then its weights
                engine.add_stream(stream_id)
            try:
                engine.load_state_dict(tensors, stream_id or None)
            except (ValueError, KeyError) as exc:
                if fresh:
                    engine.drop_stream(stream_id)
                return f"cannot import these weights: {exc}", fresh
            host.model_dirty = True
            return None, fresh

        refusal, fresh = await host.serial.call(load)
        if refusal is not None:
            if fresh and not existed:
                self._drop(session, "import_refused")  # no phantom stream is left behind
            if refusal == "ensemble":
                raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"stream {stream_id!r} has not applied a chunk yet; send it one, then import")
            raise invalid(refusal)
        if session is not None:
            session.dirty = True
        await self.checkpoint([host], [session] if session else [])

    async def weights_session(self, host: ModelHost, stream_id: str) -> StreamLedger:
        """A PER_STREAM stream whose weights exist (it has applied a chunk); else a clear refusal."""
        session = await self.open_stream(host, stream_id, create=False)
        if not await host.serial.call(host.engine.has_stream, stream_id):
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

    def end_ephemeral(self, session: StreamLedger) -> None:
        """Drop an ephemeral stream once no call uses it."""
        if session.ephemeral and not session.attached and not session.pending:
            self._drop(session, "ephemeral")
