"""A real rnnstream server on loopback, started as a child process (``python -m rnnstream.service``).

No mocks: the SDK, the CLI, the examples and the dashboard are tested against the service
itself. These tests fail (they do not skip) where the service cannot start.
"""
from __future__ import annotations

import uuid

import pytest

from rnnstream.clients import Client
from rnnstream.clients.local import LocalServer


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One plain server for the suite: fast checkpoints, so durable_seq moves during a test."""
    with LocalServer(tmp_path_factory.mktemp("server"), args=("--checkpoint-interval-s", "0.5")) as s:
        yield s


@pytest.fixture
def client(server):
    with Client(server.address, timeout=30) as c:
        yield c


@pytest.fixture
def name(request):
    """A model name unique to the test."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")


TLS_TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory):
    """A server that wants TLS and a bearer token; its certificate is for 127.0.0.1."""
    from tests.service.test_server import _self_signed  # the service tests' throwaway certificate

    d = tmp_path_factory.mktemp("tls")
    _self_signed(d)
    cert, key = d / "cert.pem", d / "key.pem"
    server = LocalServer(d / "data", token=TLS_TOKEN, tls_ca=str(cert),
                         args=("--tls-cert", str(cert), "--tls-key", str(key), "--checkpoint-interval-s", "0.5"))
    with server:
        yield server
