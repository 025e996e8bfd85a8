"""Assembling the server: gRPC (health, reflection, interceptors, TLS), metrics endpoint, health port,
the store, and the background loop that checkpoints and evicts idle streams."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc
from rnnstream.service import coldstart, metrics_http, rounds
from rnnstream.service.config import Config
from rnnstream.service.engine import shards
from rnnstream.service.health_port import HealthPort
from rnnstream.service.interceptors import AuthInterceptor, DecodeInterceptor, MetricsInterceptor
from rnnstream.service.metrics import Metrics
from rnnstream.service.registry import Registry
from rnnstream.service.servicer import RnnStreamServicer
from rnnstream.service.store import SchemaTooNew, open_store
from rnnstream.service.workers import WorkerPool

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RnnStream"].full_name


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise StartupError(f"cannot read {path}: {e.strerror}") from None


class StartupError(Exception):
    """The server cannot start as configured; the message says what to change."""


def read_token(path: str, flag: str) -> str:
    """The bearer token in ``path``: one line of printable, non-blank text."""
    try:
        token = _read(path).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise StartupError(f"{flag} {path}: the token file is not UTF-8 text") from None
    if not token:
        raise StartupError(f"{flag} {path}: the token file is empty or only whitespace; put the token in it")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise StartupError(f"{flag} {path}: the token must be one word of printable characters")
    return token


class Server:
    """One rnnstream server. ``await start()``, then ``await stop()`` (graceful, checkpoints)."""

    def __init__(self, config: Config):
        config.validate()
        self.config = config
        self.port = 0
        self.metrics_port = 0
        self.health_port = 0
        self._tasks: list[asyncio.Task] = []
        self._http = None
        self._health_process: HealthPort | None = None

    async def start(self) -> None:
        """Everything that can fail fast (token and TLS files, the store, both ports) is checked
        and bound first; only then are the kernels loaded or compiled (minutes, on a cold numba
        cache), in a thread, so that SIGINT/SIGTERM stop the process at once meanwhile."""
        config = self.config
        token = read_token(config.auth_token_file, "--auth-token-file") if config.auth_token_file else ""
        self._metrics_token = (read_token(config.metrics_token_file, "--metrics-token-file")
                               if config.metrics_token_file else "")
        tls = (_read(config.tls_key), _read(config.tls_cert)) if config.tls_cert else None
        try:
            self.store = open_store(config.store, config.data_dir)
        except SchemaTooNew as e:
            raise StartupError(str(e)) from None
        except ImportError as e:
            raise StartupError(f"--store {config.store.split('://')[0]}://: needs psycopg ({e}); install it "
                               "with: pip install 'rnnstream[postgres]'") from None
        except (sqlite3.DatabaseError, OSError) as e:
            raise StartupError(f"cannot open the store in {config.data_dir}: {e}") from None
        except Exception as e:  # psycopg's errors: a server that is down, a wrong password or database
            raise StartupError(f"cannot open the store {config.store.split('@')[-1]}: {e}") from None
        self.metrics = Metrics()
        self.pool = WorkerPool(config.workers or shards.cores())
        shards.set_threads(self.pool.workers)  # a PER_STREAM model's large batch, split this many ways
        log.info("engine calls run on %d worker threads", self.pool.workers)
        self.registry = Registry(config, self.store, self.metrics, self.pool)
        interceptors = [MetricsInterceptor(self.metrics)]
        if token:
            interceptors.append(AuthInterceptor(token))
        interceptors.append(DecodeInterceptor())  # innermost: only authorised calls are parsed
        options = [("grpc.max_receive_message_length", config.max_message_bytes),
                   ("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.so_reuseport", 0),
                   # Notice vanished clients within about 80 s, so their streams are closed
                   # and checkpointed, not held open for gRPC's default two hours.
                   ("grpc.keepalive_time_ms", 60_000),
                   ("grpc.keepalive_timeout_ms", 20_000),
                   # Accept the SDK's 30 s pings on quiet streams (the default refuses pings
                   # more often than every 5 minutes and answers them with GOAWAY).
                   ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                   ("grpc.http2.max_ping_strikes", 0),
                   # Calls that arrived and wait for the loop to take them: gRPC core starts
                   # refusing them at random past 1000 and always past 3000 (its defaults), so
                   # thousands of streams opening at once saw INTERNAL. Let them wait instead.
                   ("grpc.server.max_pending_requests", 20_000),
                   ("grpc.server.max_pending_requests_hard_limit", 50_000)]
        self.grpc = grpc.aio.server(interceptors=interceptors, options=options)
        self.servicer = RnnStreamServicer(self.registry)
        pb_grpc.add_RnnStreamServicer_to_server(self.servicer, self.grpc)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self.grpc)
        address = _address(config.host, config.port)
        try:
            if tls:
                self.port = self.grpc.add_secure_port(address, grpc.ssl_server_credentials([tls]))
            else:
                self.port = self.grpc.add_insecure_port(address)
        except RuntimeError:
            raise StartupError(f"cannot listen on {address}: the address is in use or not "
                               "available here (another rnnstream running? set --port / "
                               "RNNSTREAM_PORT)") from None
        if config.health_port >= 0:
            self.health_port = self._serve_health()
        if config.metrics_port >= 0:  # bound now: a refused port stops everything before the compile
            self._http = self._serve_metrics()
            self.metrics_port = self._http.server_port
        # before anything is served: the first chunk should not wait for the kernels to load;
        # with none compiled yet, it runs interpreted while a child process compiles them
        self._compile = await coldstart.start_kernels(config.cold_start, self.metrics.kernels_interpreted.set)
        self.registry.load()
        log.info("memory budget %d bytes (--max-memory-bytes), %d in use after loading the models",
                 self.registry.memory_budget, self.registry.memory_used())
        await self.grpc.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        loop = asyncio.get_running_loop()
        if self._health_process is not None:
            self._health_process.serving()
            self._tasks.append(loop.create_task(self._health_process.beat(), name="health-heartbeat"))
        self._tasks.append(loop.create_task(self._housekeeping(), name="housekeeping"))
        if self._compile is not None:
            self._tasks.append(loop.create_task(self._compile.run(), name="kernel-compile"))
        if self.registry.leases is not None:
            self._tasks.append(loop.create_task(self._renew_leases(), name="leases"))
            if config.share_interval_s > 0:
                self._tasks.append(loop.create_task(rounds.run(self.registry, config.share_interval_s), name="rounds"))
        log.info("rnnstream serving on %s (%s), metrics on port %s, data in %s, durability %s",
                 _address(config.host, self.port), "tls" if config.tls_cert else "plaintext",
                 self.metrics_port if self._http else "off", self.store.where, config.durability)
        if self._health_process is not None:
            log.info("health (grpc.health.v1, Check) also on port %d (answered by a process of its own)",
                     self.health_port)
        if self._http:
            log.info("metrics endpoint: %s://%s/metrics%s", "https" if config.metrics_tls_cert else "http",
                     _address(config.metrics_host, self.metrics_port),
                     " (bearer token required)" if self._metrics_token else "")

    def _serve_health(self) -> int:
        config = self.config
        where = _address(config.host, config.health_port)
        self._health_process = HealthPort((SERVICE_NAME,), config.health_stale_s)
        try:
            return self._health_process.start(where, config.tls_cert, config.tls_key)
        except RuntimeError as exc:
            self._health_process = None
            raise StartupError(f"cannot serve health on {where}: the address is in use or not available "
                               f"here ({exc}; set --health-port, or -1 to turn it off)") from None

    def _serve_metrics(self):
        config = self.config
        where = _address(config.metrics_host, config.metrics_port)
        if config.metrics_tls_cert:  # an unreadable file: its own clear line
            _read(config.metrics_tls_cert), _read(config.metrics_tls_key)
        try:
            return metrics_http.serve(self.metrics.registry, config.metrics_host, config.metrics_port,
                                      token=self._metrics_token, certfile=config.metrics_tls_cert,
                                      keyfile=config.metrics_tls_key)
        except ssl.SSLError as e:
            raise StartupError(f"--metrics-tls-cert/--metrics-tls-key: not a usable certificate and key "
                               f"({e.reason or e})") from None
        except OSError as e:
            raise StartupError(f"cannot serve metrics on {where}: {e.strerror or e} (set --metrics-port and "
                               "--metrics-host, or --metrics-port -1 to turn the endpoint off)") from None

    async def _housekeeping(self) -> None:
        """Checkpoint every ``checkpoint_interval_s``; evict streams idle for ``stream_idle_ttl_s``."""
        config = self.config
        tick = min(config.checkpoint_interval_s, config.stream_idle_ttl_s / 4)
        next_checkpoint = time.monotonic() + config.checkpoint_interval_s
        while True:
            await asyncio.sleep(tick)
            try:
                await self.registry.evict_idle()
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + config.checkpoint_interval_s
                    await self.registry.checkpoint()
            except Exception:
                log.exception("checkpoint failed; will retry")

    async def _renew_leases(self) -> None:
        """Every third of the lease time: extend this replica's leases; drop the streams whose
        lease another replica took (a pause or a partition outlived it); hand over the streams
        another replica asked for; drop the models another replica deleted."""
        while True:
            await asyncio.sleep(self.config.lease_ttl_s / 3)
            try:
                lost, wanted = await self.registry.leases.renew()
                if lost:
                    log.warning("%d stream lease(s) were taken over by other replicas; dropping those streams",
                                len(lost))
                    self.registry.lease_lost(lost)
                if wanted:
                    await self.registry.hand_off(wanted)
                await self.registry.drop_deleted_models()
            except Exception:
                log.exception("renewing the stream leases failed; will retry")

    async def stop(self) -> None:
        """NOT_SERVING, let queued chunks finish, end the calls, checkpoint everything, close."""
        log.info("shutting down")
        await self.health.enter_graceful_shutdown()
        if self._health_process is not None:
            self._health_process.shutting_down()
        await self.servicer.drain(self.config.shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        if self._compile is not None:
            self._compile.stop()
        await self.grpc.stop(self.config.shutdown_grace_s)
        try:
            await self.registry.checkpoint()  # a row that cannot be written is logged there, alone
        except Exception:
            log.exception("final checkpoint failed; streams after their durable_seq are lost")
        if self.registry.leases is not None:
            try:  # the other replicas take these streams at once, not after the lease time
                await self.registry.leases.release_all()
            except Exception:
                log.exception("releasing the stream leases failed; they expire in %s s", self.config.lease_ttl_s)
        for host in self.registry.hosts.values():
            host.closed = True
            host.wake.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._health_process is not None:
            self._health_process.stop()
        self.store.close()
        self.pool.executor.shutdown(wait=False)
        log.info("stopped; every stream is checkpointed")
