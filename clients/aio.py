"""The asyncio SDK: :class:`AsyncClient` and :class:`AsyncStreamSession`, twins of the sync ones.

    async with AsyncClient() as client:
        async with client.stream("flow", "sensor-7") as s:
            result = await s.send([[0.1], [0.3]])
            async for r in s.pipeline(chunks):
                ...
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Iterable, Mapping

import grpc
import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

from . import convert, pieces
from .connect import Backoff, Connection, route, route_of
from .errors import (QUICK_RETRY_CODES, RECONNECT_CODES, DeadlineExceeded, FailedPrecondition, InvalidArgument,
                     NotFound, Unavailable, error_of,
                     from_rpc_error)
from .replay import ChunkLog, TransientRefusal
from .sdk_common import (DEFAULT_TIMEOUT_S, FLUSH_POLL, FLUSH_TIMEOUT_S, chunk_kwargs, chunk_request,
                         gave_up_message, raise_if_refused)
from .spec import ModelSpec, create_model_signature, merged

log = logging.getLogger(__name__)


class AsyncClient:
    """The asyncio twin of :class:`clients.Client`: same arguments, every call awaited."""

    def __init__(self, address: str | None = None, *, token: str | None = None, token_file=None,
                 tls: bool = False, tls_ca=None, timeout: float = DEFAULT_TIMEOUT_S,
                 keepalive_s: float = 30.0, backoff: Backoff = Backoff()):
        self.connection = Connection.resolve(address, token=token, token_file=token_file, tls=tls,
                                             tls_ca=tls_ca, keepalive_s=keepalive_s)
        self.timeout = timeout
        self.backoff = backoff
        self._channel = self.connection.aio_channel()
        self._stub = pb_grpc.RnnStreamStub(self._channel)
        self._models: dict[str, convert.ModelInfo] = {}    # predict(): specs already asked for
        self._next_seqs: dict[tuple[str, str], int] = {}   # predict(): each stream's next seq

    async def _call(self, method: str, request, timeout: float | None = None, route: str | None = None):
        try:
            return await getattr(self._stub, method)(request, timeout=timeout or self.timeout,
                                                     metadata=self.connection.metadata(route or route_of(request)))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def create_model(self, spec: ModelSpec | None = None, **fields: Any) -> convert.ModelInfo:
        """As :meth:`clients.Client.create_model`: a ModelSpec and/or its fields as keywords."""
        msg = await self._call("CreateModel", pb.CreateModelRequest(spec=convert.spec_to_proto(merged(spec, fields))))
        return convert.ModelInfo.from_proto(msg)

    create_model.__signature__ = create_model_signature(create_model)
    create_model.__doc__ += "\n" + ModelSpec.__doc__

    async def get_model(self, name: str) -> convert.ModelInfo:
        return convert.ModelInfo.from_proto(await self._call("GetModel", pb.GetModelRequest(name=name)))

    async def list_models(self) -> list[convert.ModelInfo]:
        msg = await self._call("ListModels", pb.ListModelsRequest())
        return [convert.ModelInfo.from_proto(m) for m in msg.models]

    async def delete_model(self, name: str) -> None:
        self._models.pop(name, None)
        await self._call("DeleteModel", pb.DeleteModelRequest(name=name))

    async def export_weights(self, model: str, stream_id: str | None = None, *,
                             statistics: bool = False) -> dict[str, np.ndarray]:
        """In pieces (``ExportWeightsStream``), so a model of any size fits; ``statistics=True``
        adds the normalisation statistics."""
        request = pb.ExportWeightsRequest(model=model, stream_id=stream_id or "", with_statistics=statistics)
        try:
            call = self._stub.ExportWeightsStream(request, timeout=self.timeout,
                                                  metadata=self.connection.metadata(route_of(request)))
            return pieces.from_pieces([piece async for piece in call])
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def import_weights(self, model: str, weights: Mapping[str, Any], stream_id: str | None = None) -> None:
        """In pieces (``ImportWeightsStream``)."""
        await self._call("ImportWeightsStream", pieces.to_pieces(model, stream_id or "", weights),
                         route=route(model, stream_id or ""))

    async def get_stream(self, model: str, stream_id: str) -> convert.StreamInfo:
        return convert.StreamInfo.from_proto(
            await self._call("GetStream", pb.GetStreamRequest(model=model, stream_id=stream_id)))

    async def reset_stream(self, model: str, stream_id: str) -> convert.StreamInfo:
        return convert.StreamInfo.from_proto(
            await self._call("ResetStream", pb.ResetStreamRequest(model=model, stream_id=stream_id)))

    async def close_stream(self, model: str, stream_id: str) -> None:
        await self._call("CloseStream", pb.CloseStreamRequest(model=model, stream_id=stream_id))

    async def delete_stream(self, model: str, stream_id: str) -> None:
        """Forget a stream on the server, in memory and in its store."""
        await self._call("DeleteStream", pb.DeleteStreamRequest(model=model, stream_id=stream_id))

    async def predict(self, model: str, stream_id: str, inputs=None, *, tokens=None, targets=None,
                      horizon: int = 0, predict_only: bool = False, seq: int | None = None) -> convert.StreamResult:
        """One chunk, unary; one RPC per chunk after the first (as :meth:`clients.Client.predict`)."""
        key = (model, stream_id)
        info = self._models.get(model) or self._models.setdefault(model, await self.get_model(model))
        remembered, auto_seq = seq is None and key in self._next_seqs, seq is None
        if auto_seq:
            seq = self._next_seqs.get(key) or await _next_seq(self, model, stream_id)
        req, steps = chunk_request(info, model, stream_id, inputs, tokens, targets, predict_only, horizon)
        req.seq = seq
        try:
            result = convert.StreamResult.from_proto(await self._call("Predict", req), steps)
        except (NotFound, FailedPrecondition, InvalidArgument):
            self._models.pop(model, None)  # perhaps deleted or re-created elsewhere: ask next time
            self._next_seqs.pop(key, None)
            raise
        if remembered and result.duplicate:  # another writer moved the stream on: ask, send once more
            self._next_seqs.pop(key, None)
            return await self.predict(model, stream_id, inputs, tokens=tokens, targets=targets,
                                      horizon=horizon, predict_only=predict_only)
        if not predict_only:
            self._next_seqs[key] = max(result.acked_seq, seq) + 1
        return raise_if_refused(result)

    def stream(self, model: str, stream_id: str, *, window: int = 8,
               predict_only: bool = False, ephemeral: bool = False) -> "AsyncStreamSession":
        """A stream session, opened by ``async with`` (or by its first send). ``ephemeral``: a
        new stream the server never stores and drops when the session ends."""
        return AsyncStreamSession(self, model, stream_id, window=window, predict_only=predict_only,
                                  ephemeral=ephemeral)


async def _next_seq(client: AsyncClient, model: str, stream_id: str) -> int:
    try:
        return (await client.get_stream(model, stream_id)).acked_seq + 1
    except NotFound:
        return 1


# grpc.aio gives a call whose write was pending when the call ended (a drain) this local
# status, hiding the server's. Either the server's status came first (a done callback saw
# it) or it comes a moment later and replaces the local one.
_LOCAL_WRITE_RACE = "Internal error from Core"
_SETTLE_S = 1.0


def _status_now(call) -> tuple[grpc.StatusCode, str]:
    """A done call's status, read in place: once the call is done, the ``code()`` and
    ``details()`` coroutines return without suspending, so a done callback can run them."""
    return _run_now(call.code()), _run_now(call.details())


def _run_now(coro):
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the call is not done")


def _watch_status(call) -> list:
    """The status ``call`` was first given, once it ends."""
    seen: list = []

    def record(done_call) -> None:
        try:  # runs inside grpc's own bookkeeping: nothing may escape
            seen.append(_status_now(done_call))
        except Exception:  # noqa: BLE001
            pass

    call.add_done_callback(record)
    return seen


def _is_local(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.INTERNAL and details == _LOCAL_WRITE_RACE


async def _server_status(call, err: grpc.RpcError, seen: list) -> tuple[grpc.StatusCode, str]:
    """The code and details the call ended with: the server's, not grpc.aio's local stand-in."""
    code, details = err.code(), err.details()
    if not _is_local(code, details):
        return code, details
    for code, details in seen:
        if not _is_local(code, details):
            return code, details
    deadline = time.monotonic() + _SETTLE_S
    while _is_local(code, details) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        code, details = await call.code(), await call.details()
    return code, details


class AsyncStreamSession:
    """The asyncio twin of :class:`rnnstream.clients.client.StreamSession`: same numbering, replay,
    retry policy (see that class), ``flush`` and ``close(durable=True)``.

    A write that races the server ending the call (a drain) makes grpc.aio report a local
    ``INTERNAL: Internal error from Core``; the session waits for the server's own status
    (UNAVAILABLE) and retries by that, so a drain is a reconnect, not an error.
    """

    def __init__(self, client: AsyncClient, model: str, stream_id: str, *, window: int = 8,
                 predict_only: bool = False, ephemeral: bool = False):
        self.client, self.model, self.stream_id = client, model, stream_id
        self.window = max(1, int(window))
        self.predict_only = predict_only
        self.ephemeral = ephemeral
        self.reconnects = 0
        self.disconnects: list[grpc.StatusCode | None] = []  # what ended each call (None: plain EOF)
        self._call = None
        self._statuses: list = []  # the status the current call was first given, once it ends
        self._log: ChunkLog | None = None
        self._pipeline: object | None = None  # the pipeline() generator now sending
        self._closed = False

    async def open(self) -> "AsyncStreamSession":
        """Look the model and the stream up and start the call (done once, on first use).

        Retried while the server is unreachable (a restart), paced by the client's backoff."""
        if self._log is not None:
            return self
        backoff = self.client.backoff
        delays, started = backoff.delays(), time.monotonic()
        while True:
            try:
                self.info = await self.client.get_model(self.model)
                known = await _stream_or_none(self.client, self.model, self.stream_id)
                break
            except (Unavailable, DeadlineExceeded) as err:
                if time.monotonic() - started > backoff.give_up_after_s:
                    raise Unavailable(f"open stream {self.stream_id!r} of {self.model!r}: gave up after "
                                      f"{backoff.give_up_after_s:g}s ({err})") from None
                await asyncio.sleep(next(delays))
        self._log = ChunkLog(known.acked_seq + 1, known.durable_seq) if known else ChunkLog()
        await self._connect()
        return self

    async def _connect(self) -> None:
        metadata = self.client.connection.metadata(route(self.model, self.stream_id)) + (("x-stream-id", self.stream_id),)
        self._call = self.client._stub.Stream(metadata=metadata)
        self._statuses = _watch_status(self._call)
        for req in self._log.replay():
            if not await self._write(req):
                break

    async def _write(self, req: pb.StreamRequest) -> bool:
        try:
            await self._call.write(req)
            return True
        except (grpc.RpcError, asyncio.InvalidStateError) as err:
            # The call is gone; the chunk is kept, and the next read reconnects and replays it.
            log.debug("stream %s/%s: write failed (%s); will replay", self.model, self.stream_id, err)
            return False

    def _hang_up(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._call = None

    async def _reconnect(self, cause: BaseException | None, started: float) -> None:
        self._hang_up()
        waited = time.monotonic() - started
        if waited > self.client.backoff.give_up_after_s:
            raise Unavailable(gave_up_message(self, waited, cause)) from None
        self.reconnects += 1
        log.info("stream %s/%s: reconnecting and replaying %d chunk(s) after %s",
                 self.model, self.stream_id, self._log.kept, cause)
        await self._connect()

    async def _next_result(self) -> convert.StreamResult:
        backoff = self.client.backoff
        delays, started, quick = backoff.delays(), None, 0
        while True:
            if self._closed:
                raise RuntimeError(f"stream session {self.stream_id!r} is closed")
            try:
                response = await self._call.read()
                steps = None if response is grpc.aio.EOF else self._log.accept(response)
            except TransientRefusal as refusal:
                cause: object = refusal
                code = refusal.code
            except grpc.RpcError as err:
                if self._closed:
                    raise from_rpc_error(err) from None
                code, details = await _server_status(self._call, err, self._statuses)
                if code in QUICK_RETRY_CODES and quick < backoff.quick_retries:
                    quick += 1
                elif code not in RECONNECT_CODES:
                    raise error_of(code, details) from None
                cause = f"{code.name}: {details}"
            else:
                if response is not grpc.aio.EOF:
                    if steps is not None:
                        return convert.StreamResult.from_proto(response, steps)
                    continue
                cause, code = "the server ended the call", None
            self.disconnects.append(code)
            started = started or time.monotonic()
            await asyncio.sleep(next(delays))
            await self._reconnect(cause, started)

    def _give_up_owed(self) -> None:
        """The caller stopped waiting (an error, a cancellation, a pipeline left early): drop
        the answers it is owed when they come; their chunks stay kept, and the next chunk goes
        out on a fresh call, after a replay."""
        if self._log is not None and self._log.in_flight:
            self._log.abandon()
            self._hang_up()

    async def _submit(self, inputs=None, *, tokens=None, targets=None, horizon: int = 0,
                      predict_only: bool | None = None, labels=None, reset_after: bool = False) -> None:
        await self.open()
        if self._closed:
            raise RuntimeError(f"stream session {self.stream_id!r} is closed")
        only = self.predict_only if predict_only is None else predict_only
        req, steps = chunk_request(self.info, self.model, self.stream_id, inputs, tokens, targets, only, horizon,
                                   labels, reset_after)
        req.ephemeral = self.ephemeral
        if self._call is None:
            await self._connect()
        await self._write(self._log.add(req, steps))

    async def send(self, inputs=None, *, tokens=None, targets=None, horizon: int = 0,
                   predict_only: bool | None = None, labels=None, reset_after: bool = False) -> convert.StreamResult:
        """Push one chunk and wait for its answer. Raises :class:`ChunkRefused` if refused."""
        if self._log is not None and self._log.in_flight:
            raise RuntimeError("send() while pipeline() chunks are in flight: finish that loop (or close it) first")
        self._pipeline = None  # a pipeline left suspended, closed later, must not touch this chunk
        try:
            await self._submit(inputs, tokens=tokens, targets=targets, horizon=horizon, predict_only=predict_only,
                         labels=labels, reset_after=reset_after)
            result = await self._next_result()
        except BaseException:
            self._give_up_owed()
            raise
        return raise_if_refused(result)

    async def pipeline(self, chunks: Iterable | AsyncIterator, *, window: int | None = None,
                       raise_refused: bool = True) -> AsyncIterator[convert.StreamResult]:
        """Send chunks ahead (at most ``window`` unanswered); yield their answers in order.

        Leaving the loop early gives up the answers in flight; their chunks are replayed."""
        await self.open()
        if self._log.in_flight:
            raise RuntimeError("pipeline() while another pipeline()'s chunks are in flight: finish that loop first")
        window = max(1, int(window or self.window))
        check = raise_if_refused if raise_refused else (lambda r: r)
        source = chunks.__aiter__() if hasattr(chunks, "__aiter__") else None
        sync_source = None if source is not None else iter(chunks)
        exhausted = False
        self._pipeline = owner = object()
        try:
            while True:
                while not exhausted and self._log.in_flight < window:
                    try:
                        chunk = await source.__anext__() if source is not None else next(sync_source)
                    except (StopIteration, StopAsyncIteration):
                        exhausted = True
                        break
                    await self._submit(**chunk_kwargs(chunk))
                if not self._log.in_flight:
                    return
                yield check(await self._next_result())
        finally:
            if self._pipeline is owner:  # not a stale pipeline closed after a newer one began
                self._pipeline = None
                self._give_up_owed()

    @property
    def durable_seq(self) -> int:
        return self._log.durable_seq if self._log is not None else 0

    async def flush(self, *, durable: bool = True, timeout: float | None = None) -> int:
        """Wait until the server holds every chunk sent so far; see ``StreamSession.flush``."""
        if self._log is not None and self._log.in_flight:
            raise RuntimeError("flush() while pipeline() chunks are in flight: finish that loop (or close it) first")
        await self.open()
        limit = FLUSH_TIMEOUT_S if timeout is None else timeout
        deadline, polls = time.monotonic() + limit, FLUSH_POLL.delays()
        while True:
            position = await _server_position(self.client, self.model, self.stream_id)
            if position is not None:
                missing = self._log.settle(*position, durable)
                if missing is None:
                    return position[1]
                for req in missing:  # the server lost them (a crash): send them again
                    try:
                        self._log.accept(await self.client._call("Predict", req))
                    except (Unavailable, DeadlineExceeded, TransientRefusal):
                        break
            if time.monotonic() > deadline:
                raise self._log.flush_timeout(f"stream {self.stream_id!r} of {self.model!r}", durable, limit)
            await asyncio.sleep(min(next(polls), max(0.0, deadline - time.monotonic())))

    async def close(self, *, durable: bool = True, timeout: float | None = None) -> None:
        """Wait until every chunk is durable (see ``flush``), then finish the call."""
        try:
            if durable and not self._closed and self._log is not None and self._log.kept and not self.ephemeral:
                await self.flush(durable=True, timeout=timeout)
        finally:
            self._closed = True
            if self._call is not None:
                try:
                    await self._call.done_writing()
                except (grpc.RpcError, asyncio.InvalidStateError):
                    pass
            self._hang_up()

    async def __aenter__(self) -> "AsyncStreamSession":
        return await self.open()

    async def __aexit__(self, exc_type, *exc) -> None:
        await self.close(durable=exc_type is None)


async def _stream_or_none(client, model: str, stream_id: str):
    """GetStream, or None for a stream the server does not know."""
    try:
        return await client.get_stream(model, stream_id)
    except NotFound:
        return None


async def _server_position(client, model: str, stream_id: str) -> tuple[int, int] | None:
    """The server's (acked_seq, durable_seq) of a stream (0, 0 if it holds nothing of it), or
    None while it cannot be reached."""
    try:
        try:
            info = await client.get_stream(model, stream_id)
            return info.acked_seq, info.durable_seq
        except NotFound:
            await client.get_model(model)  # NotFound if the model is gone, not just the stream
            return 0, 0
    except (Unavailable, DeadlineExceeded):
        return None
