"""The RnnStream servicer: each method validates, hands to the registry or a stream's
session, and maps refusals to status codes. Inside ``Stream`` a refused chunk is answered
with ``error`` set and the call stays open; unary calls return the status instead.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc
from google.protobuf import empty_pb2

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc
from rnnstream.service import batcher
from rnnstream.service import weights
from rnnstream.service.convert import MAX_ID_BYTES, spec_to_proto, tensors_from_proto, tensors_to_proto, validate_stream_id
from rnnstream.service.errors import ServiceError, exhausted, invalid, unavailable
from rnnstream.service.interceptors import Undecodable
from rnnstream.service.registry import ModelHost, Registry
from rnnstream.service.session import parse_chunk, stats_proto

log = logging.getLogger(__name__)
_CODES = {code.value[0]: code for code in grpc.StatusCode}
SHUTTING_DOWN = "the server is shutting down; reconnect and resume after durable_seq"


def _unary(method):
    """Map a ServiceError to its status; anything unexpected is logged and INTERNAL."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except ServiceError as exc:
            await context.abort(exc.code, exc.message)
        except ValueError as exc:  # the engine's refusal of bad input: the caller's mistake
            log.warning("%s refused: %s", method.__name__, str(exc)[:300])
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:1000])
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; see the server log")
    return wrapper


class ByteWindow:
    """Request bytes one call may hold read ahead of their answers. A message is admitted when
    it fits under ``limit`` beside those already held (always when none is held), so the call
    stops being read (HTTP/2 flow control pushes back on the client) while it is full."""

    def __init__(self, limit: int, gauge):
        self.limit, self.used, self.gauge = limit, 0, gauge
        self._changed = asyncio.Event()

    async def acquire(self, size: int) -> None:
        while self.used and self.used + size > self.limit:
            self._changed.clear()
            await self._changed.wait()
        self.used += size
        self.gauge.inc(size)

    def release(self, size: int) -> None:
        self.used -= size
        self.gauge.dec(size)
        self._changed.set()


class RnnStreamServicer(pb_grpc.RnnStreamServicer):
    def __init__(self, registry: Registry):
        self.registry = registry
        self.config = registry.config
        self.metrics = registry.metrics
        self.draining = False
        self._readers: set[asyncio.Task] = set()

    # -- models ---------------------------------------------------------------------------
    @_unary
    async def CreateModel(self, request, context):
        return await self._model(await self.registry.create(request.spec))

    @_unary
    async def GetModel(self, request, context):
        return await self._model(await self.registry.find(request.name))

    @_unary
    async def ListModels(self, request, context):
        await self.registry.find_all()  # on a shared store, the models other replicas created too
        return pb.ListModelsResponse(models=[await self._model(h) for h in list(self.registry.hosts.values())])

    @_unary
    async def DeleteModel(self, request, context):
        await self.registry.delete(request.name)
        return empty_pb2.Empty()

    @_unary
    async def ExportWeights(self, request, context):
        host = await self._weights_owner(request.model, request.stream_id)
        state = await host.serial.call(self._export_state, host, request)
        size = weights.unary_bytes(state)
        if size > self.config.max_message_bytes:
            raise exhausted(f"the weights of model {host.name!r} take about {size} bytes, over the message limit "
                            f"max_message_bytes = {self.config.max_message_bytes}; use ExportWeightsStream, "
                            "which sends them in pieces")
        return pb.Weights(model=host.name, stream_id=request.stream_id, tensors=tensors_to_proto(state))

    async def ExportWeightsStream(self, request, context):
        try:
            host = await self._weights_owner(request.model, request.stream_id)
            state = await host.serial.call(self._export_state, host, request)  # a copy: later updates do not tear it
        except ServiceError as exc:
            await context.abort(exc.code, exc.message)
        except ValueError as exc:  # the engine's refusal: the caller's mistake
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:1000])
        for piece in weights.split(host.name, request.stream_id, state,
                                   weights.piece_values(self.config.max_message_bytes)):
            yield piece

    @_unary
    async def ImportWeights(self, request, context):
        host = await self.registry.find(request.model)
        self._check_weights_target(host, request.stream_id)
        tensors = tensors_from_proto(request.tensors, host.engine.param_layout(),
                                     optional=host.engine.statistics_layout())
        await self.registry.import_weights(host, request.stream_id, tensors)
        return empty_pb2.Empty()

    @_unary
    async def ImportWeightsStream(self, request_iterator, context):
        host = assembler = None
        stream_id = ""
        async for piece in request_iterator:
            if isinstance(piece, Undecodable):
                raise invalid(piece.message)
            if host is None:
                host = await self.registry.find(piece.model)
                stream_id = piece.stream_id
                self._check_weights_target(host, stream_id)
                assembler = weights.Assembler(host.engine.param_layout(),
                                              optional=host.engine.statistics_layout())
            elif (piece.model or host.name) != host.name or (piece.stream_id or stream_id) != stream_id:
                raise invalid("every piece of one import must name the same model and stream_id as the first")
            assembler.add(piece)
        if host is None:
            raise invalid("no pieces arrived: send the model's tensors")
        if self.registry.hosts.get(host.name) is not host:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"model {host.name!r} was deleted during the import")
        await self.registry.import_weights(host, stream_id, assembler.result())
        return empty_pb2.Empty()

    # -- streams --------------------------------------------------------------------------
    async def Stream(self, request_iterator, context):
        out: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(self.config.max_inflight_per_call)  # chunks read ahead of their answers
        byte_window = ByteWindow(self.config.max_inflight_bytes_per_call, self.metrics.buffered_request_bytes)
        touched: dict = {}  # session -> its host, for the sessions this call attached
        failed: list[BaseException] = []
        reader = asyncio.create_task(self._read(request_iterator, out, window, byte_window, touched, failed))
        self._readers.add(reader)
        try:
            while (item := await out.get()) is not None:
                t_in, host_metrics, pending, size = item
                try:
                    resp = await pending if isinstance(pending, asyncio.Future) else pending
                finally:
                    byte_window.release(size)
                if host_metrics is not None:
                    host_metrics.chunk_seconds.observe(time.perf_counter() - t_in)
                window.release()
                yield resp
            if failed:
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {failed[0]!r}; see the server log")
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        finally:
            reader.cancel()
            self._readers.discard(reader)
            while not out.empty():  # answers never sent: their bytes are no longer held
                item = out.get_nowait()
                if item is not None:
                    byte_window.release(item[3])
            for session, host in touched.items():
                session.attached -= 1
                if not session.attached:
                    host.attached -= 1
                self.registry.end_ephemeral(session)

    @_unary
    async def Predict(self, request, context):
        t_in = time.perf_counter()
        pending = await self._submit(request, None)
        resp = await pending if isinstance(pending, asyncio.Future) else pending
        if request.ephemeral:  # a one-chunk call: its ephemeral stream ends with it
            host = self.registry.hosts.get(request.model)
            session = host.sessions.get(request.stream_id) if host is not None else None
            if session is not None:
                self.registry.end_ephemeral(session)
        if resp.HasField("error"):
            raise ServiceError(_CODES.get(resp.error.code, grpc.StatusCode.UNKNOWN), resp.error.message)
        self.registry.get(request.model).metrics.chunk_seconds.observe(time.perf_counter() - t_in)
        return resp

    @_unary
    async def GetStream(self, request, context):
        host = await self.registry.find(request.model)
        acked, durable, stats, in_memory = await self.registry.stream_info(host, validate_stream_id(request.stream_id))
        return pb.StreamInfo(model=host.name, stream_id=request.stream_id, acked_seq=acked, durable_seq=durable,
                             stats=stats_proto(stats), in_memory=in_memory)

    @_unary
    async def ResetStream(self, request, context):
        host = await self.registry.find(request.model)
        await self.registry.reset_stream(host, validate_stream_id(request.stream_id))
        return await self.GetStream(request, context)

    @_unary
    async def CloseStream(self, request, context):
        host = await self.registry.find(request.model)
        await self.registry.close_stream(host, validate_stream_id(request.stream_id))
        return empty_pb2.Empty()

    @_unary
    async def DeleteStream(self, request, context):
        host = await self.registry.find(request.model)
        await self.registry.delete_stream(host, validate_stream_id(request.stream_id))
        return empty_pb2.Empty()

    # -- helpers --------------------------------------------------------------------------
    async def _read(self, requests, out: asyncio.Queue, window: asyncio.Semaphore, byte_window: ByteWindow,
                    touched: dict, failed: list) -> None:
        """Submit each message as it arrives; later messages may leave model/stream_id empty."""
        model = stream_id = ""
        held = 0  # bytes admitted but not yet handed to ``out``
        try:
            async for req in requests:
                size = 0 if isinstance(req, Undecodable) else req.ByteSize()
                await window.acquire()
                await byte_window.acquire(size)
                held = size
                t_in = time.perf_counter()
                if isinstance(req, Undecodable):  # refused like any bad chunk; the call stays open
                    out.put_nowait((t_in, None, batcher.error_response(model, stream_id, 0, invalid(req.message)), 0))
                    continue
                model, stream_id = req.model or model, req.stream_id or stream_id
                req.model, req.stream_id = model, stream_id
                pending = await self._submit(req, touched)
                host = self.registry.hosts.get(model)
                out.put_nowait((t_in, host.metrics if host is not None else None, pending, size))
                held = 0
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: end this call with INTERNAL, keep the server
            log.exception("stream reader failed")
            failed.append(exc)
        finally:
            if held:
                byte_window.release(held)
            out.put_nowait(None)

    async def _submit(self, req: pb.StreamRequest, touched: dict | None):
        """Validate one chunk and queue it: a future of its response, or the refusal itself."""
        try:
            if self.draining:
                raise unavailable(SHUTTING_DOWN)
            host = await self.registry.find(req.model)
            validate_stream_id(req.stream_id)
            chunk = parse_chunk(req, host.spec, self.config)
            session = await self.registry.open_stream(host, req.stream_id, ephemeral=req.ephemeral)
        except ServiceError as exc:
            if req.model in self.registry.hosts:
                self.metrics.chunk_errors.labels(req.model, exc.code.name).inc()
            # an oversized name is not echoed back: the refusal already says what was wrong
            model, stream_id = (v if len(v.encode("utf-8", "replace")) <= MAX_ID_BYTES else ""
                                for v in (req.model, req.stream_id))
            return batcher.error_response(model, stream_id, req.seq, exc)
        if touched is not None and session not in touched:
            touched[session] = host
            if not session.attached:
                host.attached += 1
            session.attached += 1
            session.resend_from = 0  # a new call: its client sends what it needs from here
        return batcher.submit(host, session, chunk)

    @staticmethod
    def _check_weights_target(host: ModelHost, stream_id: str) -> None:
        if stream_id and host.spec.sharing != "per_stream":
            raise invalid("stream_id is only for PER_STREAM models; a SHARED model has one set of weights: "
                          "leave stream_id empty")
        if stream_id:
            validate_stream_id(stream_id)

    @staticmethod
    def _export_state(host: ModelHost, request) -> dict:
        """The weights (a copy), and the normalisation statistics when asked (on the model's worker)."""
        engine, stream_id = host.engine, request.stream_id or None
        state = engine.state_dict(stream_id)
        if request.with_statistics:
            if engine.spec.normalize == "per_stream" and stream_id is None:
                raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"model {host.name!r} keeps its normalisation statistics per stream but shares its "
                                   "weights: there is no one set to send; export without with_statistics, or "
                                   "read a stream's statistics from its PER_STREAM model")
            state.update(engine.statistics(stream_id))
        return state

    async def _weights_owner(self, model: str, stream_id: str) -> ModelHost:
        host = await self.registry.find(model)
        self._check_weights_target(host, stream_id)
        if stream_id:  # PER_STREAM; without a stream_id: the weights new streams start from
            await self.registry.weights_session(host, stream_id)
        return host

    async def _model(self, host: ModelHost) -> pb.Model:
        engine = host.engine
        return pb.Model(
            spec=spec_to_proto(host.spec), num_parameters=engine.num_parameters,
            parameters=[pb.ParameterInfo(name=n, shape=list(s), offset=o) for n, s, o in engine.param_layout()],
            active_streams=len(host.sessions), stored_streams=await self.registry.stored_streams(host),
            steps=host.steps, updates=host.updates, created_unix_ms=host.created_unix_ms)

    async def drain(self, timeout: float) -> None:
        """Stop reading chunks and wait (bounded) until every queued chunk is answered."""
        self.draining = True
        for reader in list(self._readers):
            reader.cancel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(h.queue or any(s.pending for s in h.sessions.values())
                                                  for h in self.registry.hosts.values()):
            await asyncio.sleep(0.005)
