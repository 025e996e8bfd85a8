"""Server interceptors: go-grpc-prometheus style RPC metrics, bearer-token auth, and safe
decoding (an undecodable message is the caller's mistake: INVALID_ARGUMENT, no traceback).

Order (outermost first): metrics, auth, decoding. Auth decides from the call's metadata
alone, before any message is parsed; a refused call's messages are never decoded.
"""
from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time

import grpc

from rnnstream.service.metrics import Metrics

log = logging.getLogger(__name__)
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _split(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _grpc_type(handler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code_name(context, exc: BaseException | None) -> str:
    code = context.code()  # set by abort() or set_code(); an int or a StatusCode
    if isinstance(code, grpc.StatusCode):
        return code.name
    if code:
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN" if exc is not None else "OK"


def _rebuild(handler, behavior, request_deserializer=None):
    """A handler like ``handler`` (same kind, same (de)serializers) that runs ``behavior``."""
    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
        (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
        (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
        (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
    }
    make, _ = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(behavior, request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _behavior(handler):
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)


class _PerHandler:
    """Wrapped handlers kept per wrapped handler (one per method), so a new call costs a lookup
    rather than new closures and a new handler: calls are accepted one at a time on the loop.
    Bounded, since a refusal's handler is new on every call."""

    def __init__(self, wrap, limit: int = 512):
        self._wrap, self._limit, self._done = wrap, limit, {}

    def get(self, handler, details):
        key = (details.method, handler)
        wrapped = self._done.get(key)
        if wrapped is None:
            if len(self._done) >= self._limit:
                self._done.clear()
            wrapped = self._done[key] = self._wrap(handler, details)
        return wrapped


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """grpc_server_started_total, _handled_total{grpc_code}, _msg_received/_sent_total, _handling_seconds."""

    def __init__(self, metrics: Metrics):
        self.m = metrics
        self._handlers = _PerHandler(self._wrap)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        return self._handlers.get(handler, details)

    def _wrap(self, handler, details):
        labels = (_grpc_type(handler),) + _split(details.method)
        inner, m = _behavior(handler), self.m
        received, sent = m.grpc_msg_received.labels(*labels), m.grpc_msg_sent.labels(*labels)
        started, seconds = m.grpc_started.labels(*labels), m.grpc_handling_seconds.labels(*labels)
        parse = handler.request_deserializer or _unparsed

        def counted(data: bytes):  # every message received is parsed once: count it there
            received.inc()
            return parse(data)

        def done(context, exc, t0):
            m.grpc_handled.labels(*labels, _code_name(context, exc)).inc()
            seconds.observe(time.perf_counter() - t0)

        if inspect.isasyncgenfunction(inner):
            async def behavior(request, context):
                t0, exc = time.perf_counter(), None
                started.inc()
                try:
                    async for resp in inner(request, context):
                        sent.inc()
                        yield resp
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    done(context, exc, t0)
        else:
            async def behavior(request, context):
                t0, exc = time.perf_counter(), None
                started.inc()
                try:
                    resp = await inner(request, context)
                    if not handler.response_streaming:  # streaming by context.write(): not counted
                        sent.inc()
                    return resp
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    done(context, exc, t0)
        return _rebuild(handler, behavior, request_deserializer=counted)


def _unparsed(data: bytes) -> bytes:
    return data


def _denied(handler, code: grpc.StatusCode, message: str):
    """A handler like ``handler`` that answers ``code`` without decoding any message."""
    if handler.response_streaming:
        async def deny(request, context):
            await context.abort(code, message)
            yield  # an async generator, like the handler it replaces
    else:
        async def deny(request, context):
            await context.abort(code, message)
    return _rebuild(handler, deny, request_deserializer=_unparsed)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health checking needs exactly one ``authorization: Bearer <token>``."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        if details.method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        given = [value for key, value in details.invocation_metadata or () if key == "authorization"]
        if len(given) > 1:
            refusal = f"send one 'authorization' header, not {len(given)}"
        elif given and hmac.compare_digest(str(given[0]).encode(), self._expected):
            return await continuation(details)
        else:
            refusal = "missing or wrong 'authorization: Bearer' token"
        handler = await continuation(details)  # only its kind is used: nothing is decoded
        if handler is None:
            return None
        return _denied(handler, grpc.StatusCode.UNAUTHENTICATED, refusal)


class Undecodable:
    """Stands for a message that did not parse; the streaming handlers answer it themselves."""

    def __init__(self, type_name: str, error: Exception):
        self.message = (f"the message is not a valid {type_name}: {str(error)[:200] or type(error).__name__}")


class DecodeInterceptor(grpc.aio.ServerInterceptor):
    """Parse messages without grpc's logged traceback: a unary call with an undecodable request
    gets INVALID_ARGUMENT; streaming handlers receive an :class:`Undecodable` and refuse it."""

    def __init__(self):
        self._handlers = _PerHandler(self._wrap)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._handlers.get(handler, details)

    @staticmethod
    def _wrap(handler, details):
        parse = handler.request_deserializer
        type_name = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        type_name = type_name.full_name if type_name is not None else "request"

        def safe_parse(data: bytes):
            try:
                return parse(data)
            except Exception as exc:  # DecodeError, or a field that is not valid UTF-8
                log.debug("undecodable %s on %s (%d bytes)", type_name, details.method, len(data))
                return Undecodable(type_name, exc)

        if handler.request_streaming:
            return _rebuild(handler, _behavior(handler), request_deserializer=safe_parse)
        inner = _behavior(handler)
        if inspect.isasyncgenfunction(inner):
            async def behavior(request, context):
                if isinstance(request, Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                async for resp in inner(request, context):
                    yield resp
        else:  # unary, or streaming by context.write() (health's Watch)
            async def behavior(request, context):
                if isinstance(request, Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                return await inner(request, context)
        return _rebuild(handler, behavior, request_deserializer=safe_parse)
