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

from protos.rnnstream.v1 import rnnstream_pb2 as pb
from protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

from . import convert, pieces
from .client import DEFAULT_TIMEOUT_S, _raise_refused, _request, chunk_kwargs
from .connect import Backoff, Connection
from .errors import RECONNECT_CODES, NotFound, Unavailable, from_rpc_error
from .replay import ChunkLog, TransientRefusal

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

    async def _call(self, method: str, request, timeout: float | None = None):
        try:
            return await getattr(self._stub, method)(request, timeout=timeout or self.timeout,
                                                     metadata=self.connection.metadata())
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def create_model(self, **spec: Any) -> convert.ModelInfo:
        msg = await self._call("CreateModel", pb.CreateModelRequest(spec=convert.spec_to_proto(spec)))
        return convert.ModelInfo.from_proto(msg)

    async def get_model(self, name: str) -> convert.ModelInfo:
        return convert.ModelInfo.from_proto(await self._call("GetModel", pb.GetModelRequest(name=name)))

    async def list_models(self) -> list[convert.ModelInfo]:
        msg = await self._call("ListModels", pb.ListModelsRequest())
        return [convert.ModelInfo.from_proto(m) for m in msg.models]

    async def delete_model(self, name: str) -> None:
        await self._call("DeleteModel", pb.DeleteModelRequest(name=name))

    async def export_weights(self, model: str, stream_id: str | None = None) -> dict[str, np.ndarray]:
        """In pieces (``ExportWeightsStream``), so a model of any size fits."""
        request = pb.ExportWeightsRequest(model=model, stream_id=stream_id or "")
        try:
            call = self._stub.ExportWeightsStream(request, timeout=self.timeout, metadata=self.connection.metadata())
            return pieces.from_pieces([piece async for piece in call])
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def import_weights(self, model: str, weights: Mapping[str, Any], stream_id: str | None = None) -> None:
        """In pieces (``ImportWeightsStream``)."""
        await self._call("ImportWeightsStream", pieces.to_pieces(model, stream_id or "", weights))

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
        info = await self.get_model(model)
        if seq is None:
            seq = await _next_seq(self, model, stream_id)
        req, steps = _request(info, model, stream_id, inputs, tokens, targets, predict_only, horizon)
        req.seq = seq
        return _raise_refused(convert.StreamResult.from_proto(await self._call("Predict", req), steps))

    def stream(self, model: str, stream_id: str, *, window: int = 8,
               predict_only: bool = False) -> "AsyncStreamSession":
        """A stream session, opened by ``async with`` (or by its first send)."""
        return AsyncStreamSession(self, model, stream_id, window=window, predict_only=predict_only)


async def _next_seq(client: AsyncClient, model: str, stream_id: str) -> int:
    try:
        return (await client.get_stream(model, stream_id)).acked_seq + 1
    except NotFound:
        return 1


class AsyncStreamSession:
    """The asyncio twin of :class:`clients.client.StreamSession` (same numbering and replay)."""

    def __init__(self, client: AsyncClient, model: str, stream_id: str, *, window: int = 8,
                 predict_only: bool = False):
        self.client, self.model, self.stream_id = client, model, stream_id
        self.window = max(1, int(window))
        self.predict_only = predict_only
        self.reconnects = 0
        self._call = None
        self._log: ChunkLog | None = None

    async def open(self) -> "AsyncStreamSession":
        """Look the model and the stream up and start the call (done once, on first use)."""
        if self._log is not None:
            return self
        self.info = await self.client.get_model(self.model)
        try:
            known = await self.client.get_stream(self.model, self.stream_id)
            self._log = ChunkLog(known.acked_seq + 1, known.durable_seq)
        except NotFound:
            self._log = ChunkLog()
        await self._connect()
        return self

    async def _connect(self) -> None:
        metadata = self.client.connection.metadata() + (("x-stream-id", self.stream_id),)
        self._call = self.client._stub.Stream(metadata=metadata)
        for req in self._log.replay():
            await self._call.write(req)

    async def _recover(self, cause: BaseException | None, started: float, delay: float) -> None:
        """Hang up, wait, reconnect and replay; retried here until it works or time runs out."""
        while True:
            self._call.cancel()
            if time.monotonic() - started > self.client.backoff.give_up_after_s:
                raise Unavailable(f"stream {self.stream_id!r} of {self.model!r}: gave up reconnecting "
                                  f"to {self.client.connection.address} ({cause})") from None
            await asyncio.sleep(delay)
            self.reconnects += 1
            log.info("stream %s/%s: reconnecting and replaying %d chunk(s) after %s",
                     self.model, self.stream_id, self._log.kept, cause)
            try:
                await self._connect()
                return
            except grpc.RpcError as err:
                if err.code() not in RECONNECT_CODES:
                    raise from_rpc_error(err) from None
                cause, delay = err, min(delay * self.client.backoff.multiplier, self.client.backoff.max_s)

    async def _next_result(self) -> convert.StreamResult:
        delays, started = self.client.backoff.delays(), None
        while True:
            try:
                response = await self._call.read()
                steps = None if response is grpc.aio.EOF else self._log.accept(response)
            except TransientRefusal as refusal:
                cause: BaseException | None = refusal
            except grpc.RpcError as err:
                if err.code() not in RECONNECT_CODES:
                    raise from_rpc_error(err) from None
                cause = err
            else:
                if response is grpc.aio.EOF:
                    cause = None
                elif steps is not None:
                    return convert.StreamResult.from_proto(response, steps)
                else:
                    continue
            started = started or time.monotonic()
            await self._recover(cause, started, next(delays))

    async def _submit(self, inputs=None, *, tokens=None, targets=None, horizon: int = 0,
                      predict_only: bool | None = None) -> None:
        await self.open()
        only = self.predict_only if predict_only is None else predict_only
        req, steps = _request(self.info, self.model, self.stream_id, inputs, tokens, targets, only, horizon)
        req = self._log.add(req, steps)
        try:
            await self._call.write(req)
        except (grpc.RpcError, asyncio.InvalidStateError) as err:
            # The call is gone; the chunk is kept, and the next read reconnects and replays it.
            log.debug("stream %s/%s: write failed (%s); will replay", self.model, self.stream_id, err)

    async def send(self, inputs=None, *, tokens=None, targets=None, horizon: int = 0,
                   predict_only: bool | None = None) -> convert.StreamResult:
        if self._log is not None and self._log.in_flight:
            raise RuntimeError("send() while pipeline() chunks are in flight")
        await self._submit(inputs, tokens=tokens, targets=targets, horizon=horizon, predict_only=predict_only)
        return _raise_refused(await self._next_result())

    async def pipeline(self, chunks: Iterable | AsyncIterator, *, window: int | None = None,
                       raise_refused: bool = True) -> AsyncIterator[convert.StreamResult]:
        """Send chunks ahead (at most ``window`` unanswered); yield their answers in order."""
        await self.open()
        window = max(1, int(window or self.window))
        check = _raise_refused if raise_refused else (lambda r: r)
        source = chunks.__aiter__() if hasattr(chunks, "__aiter__") else None
        sync_source = None if source is not None else iter(chunks)
        exhausted = False
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

    @property
    def durable_seq(self) -> int:
        return self._log.durable_seq

    async def close(self) -> None:
        if self._call is not None:
            try:
                await self._call.done_writing()
            except (grpc.RpcError, asyncio.InvalidStateError):
                pass
            self._call.cancel()

    async def __aenter__(self) -> "AsyncStreamSession":
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()
