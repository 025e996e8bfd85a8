"""The synchronous SDK: :class:`Client` for the unary calls, :class:`StreamSession` for streams.

``Client``'s docstring has a worked example (run as a doctest by tests/clients/test_doc_examples.py).
"""
from __future__ import annotations

import itertools
import logging
import queue
import time
from typing import Any, Iterable, Iterator, Mapping

import grpc
import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

from . import convert, pieces
from .connect import Backoff, Connection, route, route_of
from .errors import (QUICK_RETRY_CODES, RECONNECT_CODES, DeadlineExceeded, FailedPrecondition,
                     InvalidArgument, NotFound, Unavailable, from_rpc_error)
from .replay import ChunkLog, TransientRefusal
from .sdk_common import (DEFAULT_TIMEOUT_S, FLUSH_POLL, FLUSH_TIMEOUT_S, chunk_kwargs, chunk_request,
                         describe_cause, gave_up_message, raise_if_refused)
from .spec import ModelSpec, create_model_signature, merged

log = logging.getLogger(__name__)


class Client:
    """A connection to one rnnstream server.

    ``address`` defaults to ``$RNNSTREAM_ADDRESS`` or 127.0.0.1:50051; ``token`` (or
    ``token_file``, or ``$RNNSTREAM_TOKEN``) is sent as a Bearer token; ``tls=True`` or
    ``tls_ca=PATH`` turns on TLS. Every unary call has a deadline of ``timeout`` seconds.
    Errors are raised as :class:`rnnstream.clients.errors.RnnStreamError` subclasses.

    >>> import numpy as np
    >>> with Client() as client:                    # $RNNSTREAM_ADDRESS, or 127.0.0.1:50051
    ...     info = client.create_model(name="doc-wave", cell="gru", hidden_sizes=[8], input_size=1,
    ...                                output_size=1, target_mode="next_input")
    ...     with client.stream("doc-wave", "sensor-1") as stream:
    ...         result = stream.send(np.zeros((16, 1), dtype=np.float32))   # one chunk of 16 steps
    ...     weights = client.export_weights("doc-wave")
    ...     client.delete_model("doc-wave")
    >>> info.spec["cell"], result.seq, result.predictions.shape, result.losses.shape
    ('gru', 1, (16, 1), (16,))
    >>> weights["weight_hh_l0"].shape                # PyTorch's names and shapes: 3 gates x 8
    (24, 8)
    """

    def __init__(self, address: str | None = None, *, token: str | None = None, token_file=None,
                 tls: bool = False, tls_ca=None, timeout: float = DEFAULT_TIMEOUT_S,
                 keepalive_s: float = 30.0, backoff: Backoff = Backoff()):
        self.connection = Connection.resolve(address, token=token, token_file=token_file, tls=tls,
                                             tls_ca=tls_ca, keepalive_s=keepalive_s)
        self.timeout = timeout
        self.backoff = backoff
        self._channel = self.connection.channel()
        self._stub = pb_grpc.RnnStreamStub(self._channel)
        self._models: dict[str, convert.ModelInfo] = {}    # predict(): specs already asked for
        self._next_seqs: dict[tuple[str, str], int] = {}   # predict(): each stream's next seq

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, method: str, request, timeout: float | None = None, stream: bool = False,
              route: str | None = None):
        """One call; ``stream``: a server-streaming call, its responses read whole here. ``route``:
        the routing header (default: the request's model and stream_id)."""
        try:
            answer = getattr(self._stub, method)(request, timeout=timeout or self.timeout,
                                                 metadata=self.connection.metadata(route or route_of(request)))
            return list(answer) if stream else answer
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- models -----------------------------------------------------------------------------
    def create_model(self, spec: ModelSpec | None = None, **fields: Any) -> convert.ModelInfo:
        """Create a model from a :class:`clients.ModelSpec` and/or its fields as keywords
        (keywords win). Fields left out take the server's defaults, which are ModelSpec's."""
        msg = self._call("CreateModel", pb.CreateModelRequest(spec=convert.spec_to_proto(merged(spec, fields))))
        return convert.ModelInfo.from_proto(msg)

    create_model.__signature__ = create_model_signature(create_model)
    create_model.__doc__ += "\n" + ModelSpec.__doc__

    def get_model(self, name: str) -> convert.ModelInfo:
        return convert.ModelInfo.from_proto(self._call("GetModel", pb.GetModelRequest(name=name)))

    def list_models(self) -> list[convert.ModelInfo]:
        return [convert.ModelInfo.from_proto(m) for m in self._call("ListModels", pb.ListModelsRequest()).models]

    def delete_model(self, name: str) -> None:
        self._models.pop(name, None)
        self._call("DeleteModel", pb.DeleteModelRequest(name=name))

    def export_weights(self, model: str, stream_id: str | None = None, *,
                       statistics: bool = False) -> dict[str, np.ndarray]:
        """The weights as a PyTorch-style state dict of numpy arrays (``stream_id`` for PER_STREAM).
        They come in pieces (``ExportWeightsStream``), so a model of any size fits.
        ``statistics=True`` adds the normalisation statistics (``input_norm.*``,
        ``target_norm.*``), which ``import_weights`` takes back."""
        request = pb.ExportWeightsRequest(model=model, stream_id=stream_id or "", with_statistics=statistics)
        return pieces.from_pieces(self._call("ExportWeightsStream", request, stream=True))

    def import_weights(self, model: str, weights: Mapping[str, Any], stream_id: str | None = None) -> None:
        """Load a state dict (numpy arrays or torch tensors) into the model (or one stream's weights),
        in pieces (``ImportWeightsStream``)."""
        self._call("ImportWeightsStream", pieces.to_pieces(model, stream_id or "", weights),
                   route=route(model, stream_id or ""))

    # -- streams ----------------------------------------------------------------------------
    def get_stream(self, model: str, stream_id: str) -> convert.StreamInfo:
        return convert.StreamInfo.from_proto(
            self._call("GetStream", pb.GetStreamRequest(model=model, stream_id=stream_id)))

    def reset_stream(self, model: str, stream_id: str) -> convert.StreamInfo:
        return convert.StreamInfo.from_proto(
            self._call("ResetStream", pb.ResetStreamRequest(model=model, stream_id=stream_id)))

    def close_stream(self, model: str, stream_id: str) -> None:
        self._call("CloseStream", pb.CloseStreamRequest(model=model, stream_id=stream_id))

    def delete_stream(self, model: str, stream_id: str) -> None:
        """Forget a stream on the server, in memory and in its store."""
        self._call("DeleteStream", pb.DeleteStreamRequest(model=model, stream_id=stream_id))

    def predict(self, model: str, stream_id: str, inputs=None, *, tokens=None, targets=None,
                horizon: int = 0, predict_only: bool = False, seq: int | None = None) -> convert.StreamResult:
        """Send one chunk with a unary call. ``seq`` defaults to the stream's acked_seq + 1.

        One RPC per chunk: the model's spec and the stream's next seq are remembered from the
        first call (and asked again only when the server says the remembered seq was stale)."""
        key = (model, stream_id)
        info = self._models.get(model) or self._models.setdefault(model, self.get_model(model))
        remembered = seq is None and key in self._next_seqs
        auto_seq = seq is None
        if auto_seq:
            seq = self._next_seqs.get(key) or _next_seq(lambda: self.get_stream(model, stream_id))
        req, steps = chunk_request(info, model, stream_id, inputs, tokens, targets, predict_only, horizon)
        req.seq = seq
        try:
            result = convert.StreamResult.from_proto(self._call("Predict", req), steps)
        except (NotFound, FailedPrecondition, InvalidArgument):
            self._models.pop(model, None)  # perhaps deleted or re-created elsewhere: ask next time
            self._next_seqs.pop(key, None)
            raise
        if remembered and result.duplicate:  # another writer moved the stream on: ask, send once more
            self._next_seqs.pop(key, None)
            return self.predict(model, stream_id, inputs, tokens=tokens, targets=targets, horizon=horizon,
                                predict_only=predict_only)
        if not predict_only:
            self._next_seqs[key] = max(result.acked_seq, seq) + 1
        return raise_if_refused(result)

    def stream(self, model: str, stream_id: str, *, window: int = 8,
               predict_only: bool = False, ephemeral: bool = False) -> "StreamSession":
        """Open a stream session (use it as a context manager). ``ephemeral``: a new stream the
        server never stores and drops when the session ends (e.g. for generation)."""
        return StreamSession(self, model, stream_id, window=window, predict_only=predict_only,
                             ephemeral=ephemeral)


def _next_seq(get_stream) -> int:
    try:
        return get_stream().acked_seq + 1
    except NotFound:
        return 1


class StreamSession:
    """One stream of one model over one long-lived gRPC call.

    ``send`` pushes a chunk and returns its :class:`StreamResult`; ``pipeline`` takes an
    iterable of chunks and yields their results in order while keeping up to ``window``
    chunks in flight. Chunks are numbered here (continuing from the server's acked_seq), and
    every chunk after the server's ``durable_seq`` is kept until a checkpoint holds it.

    Retry policy. When the call ends for a passing reason -- UNAVAILABLE (a restart, a crash,
    a drain), CANCELLED or DEADLINE_EXCEEDED from the server or a proxy, ABORTED, or a chunk
    refused UNAVAILABLE/ABORTED -- the session waits (exponential backoff with full jitter,
    see :class:`Backoff`), reconnects and replays the kept chunks; the server skips seqs it
    has applied, so the caller sees one answer per chunk, in order, and nothing trains twice.
    It gives up with ``Unavailable`` after ``Backoff.give_up_after_s``. INTERNAL and UNKNOWN
    get ``Backoff.quick_retries`` tries, then are raised; any other code is raised at once.
    Opening the session retries UNAVAILABLE the same way, so a session can start while the
    server restarts.

    A ``send`` that raises (anything but :class:`ChunkRefused`) leaves the session usable:
    its chunk stays kept, and the next ``send`` replays it first on a fresh call. ``close()``
    waits until the server has checkpointed every chunk (``flush``), so a crash right after
    cannot lose acknowledged chunks; ``close(durable=False)`` does not wait.
    """

    def __init__(self, client: Client, model: str, stream_id: str, *, window: int = 8,
                 predict_only: bool = False, ephemeral: bool = False):
        self.client, self.model, self.stream_id = client, model, stream_id
        self.window = max(1, int(window))
        self.predict_only = predict_only
        self.ephemeral = ephemeral
        self.reconnects = 0
        # called as on_reconnect(attempt, why) before each reconnect (the CLI shows it on its bar)
        self.on_reconnect = None
        self.disconnects: list[grpc.StatusCode | None] = []  # what ended each call (None: plain EOF)
        self._queue: queue.SimpleQueue | None = None
        self._responses = None
        self._pipeline: object | None = None  # the pipeline() generator now sending
        self._closed = False
        self.info, known = _retry_open(lambda: (client.get_model(model), _stream_or_none(client, model, stream_id)),
                                       client.backoff, f"open stream {stream_id!r} of {model!r}")
        self._log = ChunkLog(known.acked_seq + 1, known.durable_seq) if known else ChunkLog()
        self._connect()

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> None:
        q: queue.SimpleQueue = queue.SimpleQueue()

        def requests():
            while (item := q.get()) is not None:
                yield item

        metadata = self.client.connection.metadata(route(self.model, self.stream_id)) + (("x-stream-id", self.stream_id),)
        self._responses = self.client._stub.Stream(requests(), metadata=metadata)
        self._queue = q
        for req in self._log.replay():
            q.put(req)

    def _hang_up(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
        if self._responses is not None:
            self._responses.cancel()
        self._queue = self._responses = None

    def _reconnect(self, cause: BaseException | None, started: float) -> None:
        self._hang_up()
        waited = time.monotonic() - started
        if waited > self.client.backoff.give_up_after_s:
            raise Unavailable(gave_up_message(self, waited, cause)) from None
        self.reconnects += 1
        if self.on_reconnect is not None:
            self.on_reconnect(self.reconnects, describe_cause(cause))
        log.info("stream %s/%s: reconnecting and replaying %d chunk(s) after %s",
                 self.model, self.stream_id, self._log.kept, cause)
        self._connect()

    def _next_result(self) -> convert.StreamResult:
        backoff = self.client.backoff
        delays, started, quick = backoff.delays(), None, 0
        while True:
            if self._closed:
                raise RuntimeError(f"stream session {self.stream_id!r} is closed")
            try:
                response = next(self._responses)
                steps = self._log.accept(response)
            except StopIteration:
                cause: BaseException | None = None
            except TransientRefusal as refusal:
                cause = refusal
            except grpc.RpcError as err:
                code = err.code()
                if self._closed:
                    raise from_rpc_error(err) from None
                if code in QUICK_RETRY_CODES and quick < backoff.quick_retries:
                    quick += 1
                elif code not in RECONNECT_CODES:
                    raise from_rpc_error(err) from None
                cause = err
            else:
                if steps is not None:
                    return convert.StreamResult.from_proto(response, steps)
                continue
            self.disconnects.append(_code_of(cause))
            started = started or time.monotonic()
            time.sleep(next(delays))
            self._reconnect(cause, started)

    def _give_up_owed(self) -> None:
        """The caller stopped waiting (an error, an interrupt, a pipeline left early): drop the
        answers it is owed when they come; their chunks stay kept, and the next chunk goes out
        on a fresh call, after a replay."""
        if self._log.in_flight:
            self._log.abandon()
            self._hang_up()

    # -- sending ----------------------------------------------------------------------------
    def _submit(self, inputs=None, *, tokens=None, targets=None, horizon: int = 0,
                predict_only: bool | None = None, labels=None, reset_after: bool = False) -> None:
        if self._closed:
            raise RuntimeError(f"stream session {self.stream_id!r} is closed")
        only = self.predict_only if predict_only is None else predict_only
        req, steps = chunk_request(self.info, self.model, self.stream_id, inputs, tokens, targets, only, horizon,
                                   labels, reset_after)
        req.ephemeral = self.ephemeral
        if self._responses is None:
            self._connect()
        self._queue.put(self._log.add(req, steps))

    def send(self, inputs=None, *, tokens=None, targets=None, horizon: int = 0,
             predict_only: bool | None = None, labels=None, reset_after: bool = False) -> convert.StreamResult:
        """Push one chunk and wait for its answer. Raises :class:`ChunkRefused` if refused."""
        if self._log.in_flight:
            raise RuntimeError("send() while pipeline() chunks are in flight: finish that loop (or close it) first")
        self._pipeline = None  # a pipeline left suspended, closed later, must not touch this chunk
        try:
            self._submit(inputs, tokens=tokens, targets=targets, horizon=horizon, predict_only=predict_only,
                         labels=labels, reset_after=reset_after)
            result = self._next_result()
        except BaseException:
            self._give_up_owed()
            raise
        return raise_if_refused(result)

    def pipeline(self, chunks: Iterable, *, window: int | None = None,
                 raise_refused: bool = True) -> Iterator[convert.StreamResult]:
        """Send chunks ahead (at most ``window`` unanswered) and yield their answers in order.

        With ``raise_refused=False`` a refused chunk's result is yielded with ``error`` set.
        Leaving the loop early (``break``, an exception) gives up the answers still in flight;
        their chunks stay kept and are replayed before the next chunk.
        """
        if self._log.in_flight:
            raise RuntimeError("pipeline() while another pipeline()'s chunks are in flight: finish that loop first")
        window = max(1, int(window or self.window))
        check = raise_if_refused if raise_refused else (lambda r: r)
        chunks = iter(chunks)
        self._pipeline = owner = object()
        try:
            while True:
                for chunk in itertools.islice(chunks, window - self._log.in_flight):
                    self._submit(**chunk_kwargs(chunk))
                if not self._log.in_flight:
                    return
                yield check(self._next_result())
        finally:
            if self._pipeline is owner:  # not a stale pipeline closed after a newer one began
                self._pipeline = None
                self._give_up_owed()

    # -- durability -------------------------------------------------------------------------
    @property
    def durable_seq(self) -> int:
        """The last chunk the server has checkpointed; later chunks are kept for a replay."""
        return self._log.durable_seq

    def flush(self, *, durable: bool = True, timeout: float | None = None) -> int:
        """Wait until the server holds every chunk sent so far, and return its ``durable_seq``.

        ``durable=True``: until a checkpoint holds them, so no crash can lose them;
        ``durable=False``: until they are applied (after a ``send`` that raised, say). Chunks
        the server lost meanwhile (it crashed after acknowledging them) are sent again.
        Raises ``DeadlineExceeded`` after ``timeout`` s (default ``FLUSH_TIMEOUT_S``).
        """
        if self._log.in_flight:
            raise RuntimeError("flush() while pipeline() chunks are in flight: finish that loop (or close it) first")
        limit = FLUSH_TIMEOUT_S if timeout is None else timeout
        deadline, polls = time.monotonic() + limit, FLUSH_POLL.delays()
        while True:
            position = _server_position(self.client, self.model, self.stream_id)
            if position is not None:
                missing = self._log.settle(*position, durable)
                if missing is None:
                    return position[1]
                for req in missing:  # the server lost them (a crash): send them again
                    if not self._resend(req):
                        break
            if time.monotonic() > deadline:
                raise self._log.flush_timeout(f"stream {self.stream_id!r} of {self.model!r}", durable, limit)
            time.sleep(min(next(polls), max(0.0, deadline - time.monotonic())))

    def _resend(self, req: pb.StreamRequest) -> bool:
        """Send one kept chunk again (unary); False if the server cannot take it now."""
        try:
            self._log.accept(self.client._call("Predict", req))
            return True
        except (Unavailable, DeadlineExceeded, TransientRefusal):
            return False

    def close(self, *, durable: bool = True, timeout: float | None = None) -> None:
        """Wait until every chunk is durable (see ``flush``), then finish the call.

        The server keeps the stream's state (``Client.close_stream`` drops it). With
        ``durable=False`` the kept chunks are given up at once.
        """
        try:
            if durable and not self._closed and self._log.kept and not self.ephemeral:  # never durable
                self.flush(durable=True, timeout=timeout)
        finally:
            self._closed = True
            self._hang_up()

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # After an error, do not hold the caller up waiting for a checkpoint.
        self.close(durable=exc_type is None)


def _code_of(cause: BaseException | None) -> grpc.StatusCode | None:
    if isinstance(cause, grpc.RpcError):
        return cause.code()
    if isinstance(cause, TransientRefusal):
        return cause.code
    return None


def _stream_or_none(client, model: str, stream_id: str):
    """GetStream, or None for a stream the server does not know."""
    try:
        return client.get_stream(model, stream_id)
    except NotFound:
        return None


def _server_position(client, model: str, stream_id: str) -> tuple[int, int] | None:
    """The server's (acked_seq, durable_seq) of a stream (0, 0 if it holds nothing of it), or
    None while it cannot be reached."""
    try:
        try:
            info = client.get_stream(model, stream_id)
            return info.acked_seq, info.durable_seq
        except NotFound:
            client.get_model(model)  # NotFound if the model is gone, not just the stream
            return 0, 0
    except (Unavailable, DeadlineExceeded):
        return None


def _retry_open(call, backoff: Backoff, what: str):
    """``call()``, retried while the server is unreachable (a restart), paced by ``backoff``."""
    delays, started = backoff.delays(), time.monotonic()
    while True:
        try:
            return call()
        except (Unavailable, DeadlineExceeded) as err:
            if time.monotonic() - started > backoff.give_up_after_s:
                raise Unavailable(f"{what}: gave up after {backoff.give_up_after_s:g}s ({err})") from None
            time.sleep(next(delays))
