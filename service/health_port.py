"""``grpc.health.v1`` on a port of its own (``--health-port``), answered by a process of its own.

A health check on the main port is a new gRPC call like any other: grpc.aio takes new calls
from the event loop one at a time, so with thousands of streams opening at once a probe there
waits behind all of them (seconds at 3000 streams on 2 cores), past an orchestrator's probe
timeout, and a busy but healthy server gets restarted. A thread of the server's own answered
in 26-63 ms at p99 under that load: it had to win the GIL from the busy loop several times per
call. So a small child process (grpc and this module only) answers, and needs nothing from
the server's process to do it.

It does not simply say SERVING: the server's event loop writes a heartbeat byte to the child's
stdin every ``BEAT_S`` (``S`` serving, ``N`` not: starting or shutting down), and the child
answers NOT_SERVING once the last beat is older than ``stale_s`` (a loop wedged by a bug is not
healthy). When the server's process ends, however it ends (kill -9 included), the pipe closes
and the child exits. Check only: Watch answers UNIMPLEMENTED (probes use Check; the main
port's health service has both).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BEAT_S = 0.25  # how often the event loop writes a heartbeat
START_TIMEOUT_S = 60.0  # the child's first line: it imports grpc only, normally well under a second
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthPort:
    """The server's side: ``start`` (spawns the child, fails fast), ``serving()`` once the
    main port serves, ``await beat()`` as a task of the event loop, ``shutting_down()``, ``stop()``."""

    def __init__(self, services: tuple[str, ...], stale_s: float):
        self.services = services
        self.stale_s = stale_s
        self._state = b"N"
        self._proc: subprocess.Popen | None = None

    def start(self, address: str, tls_cert: str = "", tls_key: str = "") -> int:
        """Answer on ``address`` (NOT_SERVING until ``serving()``); the port bound, or
        RuntimeError saying why not."""
        args = [sys.executable, "-m", "rnnstream.service.health_port", address, "--stale-s", str(self.stale_s),
                *(a for s in self.services for a in ("--service", s))]
        if tls_cert:
            args += ["--tls-cert", tls_cert, "--tls-key", tls_key]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        first = self._first_line()
        if not first.startswith("bound "):
            self.stop()
            raise RuntimeError(first.removeprefix("error ").strip() or "the health process exited")
        return int(first.split()[1])

    def _first_line(self) -> str:
        found: list[bytes] = []
        reader = threading.Thread(target=lambda: found.append(self._proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        return found[0].decode(errors="replace") if found else "error the health process did not start in time"

    def serving(self) -> None:
        self._state = b"S"
        self._write()

    def shutting_down(self) -> None:
        self._state = b"N"
        self._write()

    def _write(self) -> None:
        try:
            os.write(self._proc.stdin.fileno(), self._state)  # one byte into a pipe the child drains: never blocks
        except OSError:  # the child is gone; the health port then answers nothing, which a probe reports
            pass

    async def beat(self) -> None:
        while True:
            self._write()
            await asyncio.sleep(BEAT_S)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.stdin.close()  # the child sees the pipe end and exits
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc.stdout.close()
        self._proc = None


class _Check(health_pb2_grpc.HealthServicer):
    """The child's health service: the last heartbeat's state, if it is fresh."""

    def __init__(self, services, stale_s: float):
        self.services = frozenset(("",) + tuple(services))
        self.stale_s = stale_s
        self.state = b"N"
        self.stamp = time.monotonic()

    def Check(self, request, context):
        if request.service not in self.services:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}; ask for '' "
                          f"(the server) or one of {sorted(s for s in self.services if s)}")
        fresh = time.monotonic() - self.stamp <= self.stale_s
        return health_pb2.HealthCheckResponse(status=_SERVING if self.state == b"S" and fresh else _NOT_SERVING)


def _tell_parent(line: str) -> None:
    """One line of the start-up protocol on stdout, the pipe ``HealthPort._first_line`` reads
    (not a log message: those go to stderr, the server's log)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    """The child: serve Check on the address until stdin closes; report ``bound PORT`` or
    ``error ...`` as the first line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m rnnstream.service.health_port")
    parser.add_argument("address")
    parser.add_argument("--stale-s", type=float, required=True)
    parser.add_argument("--service", action="append", default=[])
    parser.add_argument("--tls-cert", default="")
    parser.add_argument("--tls-key", default="")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops us
    check = _Check(args.service, args.stale_s)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                         options=[("grpc.so_reuseport", 0)])  # a taken port is an error, not shared
    health_pb2_grpc.add_HealthServicer_to_server(check, server)
    try:
        if args.tls_cert:
            with open(args.tls_key, "rb") as key, open(args.tls_cert, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            port = server.add_secure_port(args.address, credentials)
        else:
            port = server.add_insecure_port(args.address)
    except (RuntimeError, OSError) as exc:
        _tell_parent(f"error {exc}")
        return 2
    server.start()
    _tell_parent(f"bound {port}")
    stdin = sys.stdin.buffer.raw
    while True:
        beat = stdin.read(64)
        if not beat:  # the server's process ended
            break
        check.state, check.stamp = beat[-1:], time.monotonic()
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
