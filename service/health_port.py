"""``grpc.health.v1`` on a port of its own (``--health-port``), answered from threads of its own.

A health check on the main port is a new gRPC call like any other: grpc.aio takes new calls
from the event loop one at a time, so with thousands of streams opening at once a probe there
waits behind all of them (seconds at 3000 streams on 2 cores), past an orchestrator's probe
timeout, and a busy but healthy server gets restarted. Here a synchronous gRPC server with
its own polling and handler threads answers; it needs only the GIL, which a busy event loop
hands over every switch interval (5 ms).

It does not simply say SERVING: the event loop stamps a heartbeat every ``BEAT_S`` and the
answer is NOT_SERVING once the stamp is older than ``stale_s`` (a loop wedged by a bug is
not healthy), or while the server shuts down. Check only: Watch answers UNIMPLEMENTED (probes
use Check; the main port's health service has both).
"""
from __future__ import annotations

import asyncio
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BEAT_S = 0.25  # how often the event loop stamps the heartbeat
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Check(health_pb2_grpc.HealthServicer):
    def __init__(self, port: "HealthPort"):
        self.port = port

    def Check(self, request, context):
        if request.service not in self.port.services:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}; ask for '' "
                          f"(the server) or one of {sorted(s for s in self.port.services if s)}")
        return health_pb2.HealthCheckResponse(status=self.port.status())


class HealthPort:
    """The health listener: ``start`` (fails fast), ``serving()`` once the main port serves,
    ``await beat()`` as a task of the event loop, ``shutting_down()``, ``stop()``."""

    def __init__(self, services: tuple[str, ...], stale_s: float):
        self.services = frozenset(("",) + tuple(services))
        self.stale_s = stale_s
        self._serving = False
        self._stamp = time.monotonic()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                                   options=[("grpc.so_reuseport", 0)])  # a taken port is an error, not shared
        health_pb2_grpc.add_HealthServicer_to_server(_Check(self), self._server)

    def start(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Answer on ``address`` (NOT_SERVING until ``serving()``); the port bound, or
        RuntimeError if it cannot be had."""
        if credentials is None:
            port = self._server.add_insecure_port(address)
        else:
            port = self._server.add_secure_port(address, credentials)
        self._server.start()
        return port

    def status(self) -> int:
        fresh = time.monotonic() - self._stamp <= self.stale_s
        return _SERVING if self._serving and fresh else _NOT_SERVING

    def serving(self) -> None:
        self._stamp = time.monotonic()
        self._serving = True

    def shutting_down(self) -> None:
        self._serving = False

    async def beat(self) -> None:
        while True:
            self._stamp = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def stop(self) -> None:
        self._server.stop(0)
