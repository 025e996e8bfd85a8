"""Run a real rnnstream server on loopback as a child process, and ask a server for its health.

``LocalServer`` is how the examples, the tests and a quick try-out start the service
without a second terminal: it runs ``python -m rnnstream.service`` (never imports it, so this module
stays numba-free), waits until ``grpc.health.v1`` says SERVING, and stops it with SIGTERM.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .connect import Connection


def health(connection: Connection, service: str = "", timeout: float = 5.0) -> str:
    """The server's ``grpc.health.v1`` status name (SERVING, NOT_SERVING, ...)."""
    with connection.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                           metadata=connection.metadata())
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# How long a start may take while the server reports that it is compiling its kernels.
COMPILE_TIMEOUT_S = 900.0


class LocalServer:
    """``python -m rnnstream.service`` on 127.0.0.1 with its own data directory and free ports.

    Use as a context manager. ``args`` are extra service flags; ``env`` extra variables;
    ``token`` turns on bearer-token auth (written to a file for ``--auth-token-file``);
    ``tls_ca`` is the CA to trust when ``args`` turn TLS on (``--tls-cert``/``--tls-key``).
    The server's output goes to ``<data_dir>/server.log`` (shown when it fails to start).
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, *, port: int | None = None,
                 metrics_port: int | None = None, args: tuple[str, ...] = (), env: dict | None = None,
                 token: str | None = None, tls_ca: str | None = None, startup_timeout_s: float = 180.0):
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="rnnstream-")
        self.data_dir = pathlib.Path(data_dir or self._tmp.name)
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.args = tuple(args)
        self.env = dict(env or {})
        self.token = token
        self.tls_ca = tls_ca
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> pathlib.Path:
        return self.data_dir / "server.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "rnnstream.service", "--host", "127.0.0.1", "--port", str(self.port),
               "--metrics-port", str(self.metrics_port), "--data-dir", str(self.data_dir)]
        if self.token:
            cmd += ["--auth-token-file", str(self.data_dir / "auth-token")]
        return cmd + list(self.args)

    def connection(self) -> Connection:
        """How a client reaches this server (its token and CA included)."""
        return Connection(address=self.address, token=self.token, tls=bool(self.tls_ca), tls_ca=self.tls_ca)

    def start(self) -> "LocalServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.token:
            (self.data_dir / "auth-token").write_text(self.token + "\n")
        env = {**os.environ, **self.env}
        # The service is started from the repository root, wherever the caller stands.
        root = str(pathlib.Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, cwd=root)
        self._wait_serving()
        return self

    def _compiling(self) -> bool:
        """The server said it is compiling its kernels and has not finished yet."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        start = text.rfind("compiling the kernels")
        return start >= 0 and "kernels loaded in" not in text[start:]

    def _wait_serving(self) -> None:
        connection = self.connection()
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                # a cold numba cache is not a hung server: wait for the compile it reports
                if not (self._compiling() and now < started + max(self.startup_timeout_s, COMPILE_TIMEOUT_S)):
                    break
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode} while starting:\n"
                                   + self.log_tail())
            try:
                if health(connection, timeout=1.0) == "SERVING":
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        compiling = self._compiling()
        self.stop()
        waited = time.monotonic() - started
        if compiling:
            raise RuntimeError(f"the server was still compiling its kernels after {waited:.0f}s (numba's "
                               "cache was cold and this machine is slow or busy; run `python -c \"from "
                               "rnnstream.service.engine import warm_up; warm_up()\"` once, then retry):\n" + self.log_tail())
        raise RuntimeError(f"the server did not become SERVING within {waited:.0f}s:\n" + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (a graceful drain), then SIGKILL if it does not exit in time."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, with no drain and no final checkpoint."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> "LocalServer":
        """Stop and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
