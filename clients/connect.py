"""How the SDK reaches the server: address, TLS, bearer token, keepalive, reconnect pacing.

Shared by the sync and asyncio clients; nothing here opens a connection by itself.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import urllib.parse

import grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_ENV = "RNNSTREAM_ADDRESS"
TOKEN_ENV = "RNNSTREAM_TOKEN"

# Every call carries the model and stream it is about in this header, so that an L7 proxy in
# front of several replicas (nginx: ``hash $http_x_rnnstream_route consistent``) sends all of
# a stream's calls to the replica that holds it. The value is ``<model>/<stream_id>``, each
# part percent-encoded (metadata values are printable ASCII); model-level calls send
# ``<model>/`` and ListModels sends ``/``.
ROUTE_HEADER = "x-rnnstream-route"


def route(model: str = "", stream_id: str = "") -> str:
    """The routing header's value for a call about ``model`` (and ``stream_id``)."""
    return f"{urllib.parse.quote(model, safe='')}/{urllib.parse.quote(stream_id, safe='')}"


def route_of(request) -> str:
    """The route of a unary request message: its model (``spec.name`` or ``name`` for the
    model calls) and its stream_id, where it has them."""
    model = getattr(request, "model", "") or getattr(request, "name", "")
    if not model and hasattr(request, "spec"):
        model = request.spec.name
    return route(model, getattr(request, "stream_id", ""))


# Read-only unary calls are safe to retry when the server is briefly unreachable.
_RETRY_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "rnnstream.v1.RnnStream", "method": m}
                 for m in ("GetModel", "ListModels", "ExportWeights", "GetStream")],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }]
})


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where and how to connect.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call. ``tls`` turns on
    TLS with the system roots, or with ``tls_ca`` (a PEM path or bytes) when given.
    ``keepalive_s`` paces HTTP/2 pings on open streams so that a dead peer is noticed;
    rnnstream's server accepts them every 10 s or more. Other gRPC servers (a proxy in
    between, say) may refuse pings more often than every 5 minutes: raise it to 300 there.
    """

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    tls: bool = False
    tls_ca: str | bytes | None = None
    tls_server_name: str | None = None
    keepalive_s: float = 30.0

    @classmethod
    def resolve(cls, address: str | None = None, *, token: str | None = None,
                token_file: str | os.PathLike | None = None, tls: bool = False,
                tls_ca: str | bytes | None = None, **kwargs) -> "Connection":
        """Fill the gaps from the environment: ``RNNSTREAM_ADDRESS``, ``RNNSTREAM_TOKEN``."""
        address = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
        if token is None and token_file is not None:
            token = pathlib.Path(token_file).read_text().strip()
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        return cls(address=address, token=token, tls=bool(tls or tls_ca), tls_ca=tls_ca, **kwargs)

    def metadata(self, route: str | None = None) -> tuple[tuple[str, str], ...]:
        """The bearer token, and the routing header when ``route`` is given (every SDK call gives it)."""
        auth = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return auth + ((ROUTE_HEADER, route),) if route is not None else auth

    def options(self) -> list[tuple[str, object]]:
        keepalive_ms = int(self.keepalive_s * 1000)
        opts: list[tuple[str, object]] = [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", min(keepalive_ms, 20_000)),
            ("grpc.http2.max_pings_without_data", 0),
            # After a server restart, come back within a second or two, not a minute.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_CONFIG),
        ]
        if self.tls_server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return opts

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        ca = self.tls_ca
        if isinstance(ca, (str, os.PathLike)):
            ca = pathlib.Path(ca).read_bytes()
        return grpc.ssl_channel_credentials(root_certificates=ca)

    def channel(self) -> grpc.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.insecure_channel(self.address, options=self.options())
        return grpc.secure_channel(self.address, creds, options=self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self.address, options=self.options())
        return grpc.aio.secure_channel(self.address, creds, options=self.options())


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Retry pacing of a stream session: exponential, capped, with full jitter, bounded in time.

    The n-th wait is drawn uniformly from [0, min(max_s, initial_s * multiplier**n)] ("full
    jitter"), so the clients one server restart cut off come back spread out, not in
    lockstep. A session gives up (raising ``Unavailable``) once it has been trying for
    ``give_up_after_s``. INTERNAL and UNKNOWN are not outages: they get ``quick_retries``
    tries at this pace and are then raised. ``jitter=False`` waits the full ceiling each time.
    """

    initial_s: float = 0.1
    max_s: float = 2.0
    multiplier: float = 2.0
    give_up_after_s: float = 60.0
    quick_retries: int = 2
    jitter: bool = True

    def delays(self, rng: random.Random | None = None):
        """The waits before each retry, endless; ``rng`` makes them reproducible."""
        uniform = (rng or random).uniform
        ceiling = self.initial_s
        while True:
            yield uniform(0.0, ceiling) if self.jitter else ceiling
            ceiling = min(ceiling * self.multiplier, self.max_s)
