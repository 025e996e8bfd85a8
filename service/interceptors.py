"""Server interceptors: go-grpc-prometheus style RPC metrics, and bearer-token auth."""
from __future__ import annotations

import asyncio
import hmac
import inspect
import time

import grpc

from service.metrics import Metrics

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


def _rebuild(handler, behavior):
    """A handler like ``handler`` (same kind, same (de)serializers) that runs ``behavior``."""
    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
        (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
        (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
        (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
    }
    make, _ = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _behavior(handler):
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """grpc_server_started_total, _handled_total{grpc_code}, _msg_received/_sent_total, _handling_seconds."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        labels = (_grpc_type(handler),) + _split(details.method)
        inner, m = _behavior(handler), self.m
        received, sent = m.grpc_msg_received.labels(*labels), m.grpc_msg_sent.labels(*labels)

        def done(context, exc, t0):
            m.grpc_handled.labels(*labels, _code_name(context, exc)).inc()
            m.grpc_handling_seconds.labels(*labels).observe(time.perf_counter() - t0)

        async def counted(requests):
            async for req in requests:
                received.inc()
                yield req

        if inspect.isasyncgenfunction(inner):
            async def behavior(request, context):
                t0, exc = time.perf_counter(), None
                m.grpc_started.labels(*labels).inc()
                if handler.request_streaming:
                    request = counted(request)
                else:
                    received.inc()
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
                m.grpc_started.labels(*labels).inc()
                if handler.request_streaming:
                    request = counted(request)
                else:
                    received.inc()
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
        return _rebuild(handler, behavior)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health checking needs ``authorization: Bearer <token>``."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        given = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value
        if hmac.compare_digest(str(given).encode(), self._expected):
            return handler

        if handler.response_streaming:
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer' token")
                yield  # an async generator, like the handler it replaces
        else:
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong 'authorization: Bearer' token")
        return _rebuild(handler, deny)
