"""Issue #10 item 6: the metrics endpoint has its own host (loopback by default), TLS and a
bearer token of its own; a real Prometheus scrapes it with ``authorization.credentials_file``."""
from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request

import pytest

from rnnstream.service.config import Config
from tests.service.test_prometheus import _query, running_prometheus
from tests.service.test_server import _self_signed


def _get(url: str, token: str | None, cafile) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ssl.create_default_context(cafile=str(cafile))) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_default_to_loopback_whatever_the_grpc_host():
    assert Config().metrics_host == "127.0.0.1"
    assert Config(host="0.0.0.0").metrics_host == "127.0.0.1"


@pytest.fixture
def secure_metrics(start_server, tmp_path):
    _self_signed(tmp_path)
    (tmp_path / "metrics-token").write_text("scrape-me\n")
    srv = start_server(metrics_tls_cert=str(tmp_path / "cert.pem"), metrics_tls_key=str(tmp_path / "key.pem"),
                       metrics_token_file=str(tmp_path / "metrics-token"))
    assert srv.server._http.server_address[0] == "127.0.0.1"
    return srv, f"https://127.0.0.1:{srv.server.metrics_port}/metrics", tmp_path / "cert.pem"


def test_metrics_need_tls_and_their_token(secure_metrics):
    srv, url, ca = secure_metrics
    assert _get(url, None, ca)[0] == 401
    assert _get(url, "wrong", ca)[0] == 401
    status, body = _get(url, "scrape-me", ca)
    assert status == 200 and "rnnstream_checkpoint_failures_total" in body
    with pytest.raises(OSError):  # plain HTTP is not spoken (reset, or a URLError)
        urllib.request.urlopen(url.replace("https", "http"), timeout=5).read()


def test_real_prometheus_scrapes_with_tls_and_credentials_file(secure_metrics, tmp_path):
    srv, _, ca = secure_metrics
    job = f"""
job_name: rnnstream
    scheme: https
    tls_config:
      ca_file: {ca}
    authorization:
      type: Bearer
      credentials_file: {tmp_path / 'metrics-token'}
    static_configs:
      - targets: ["127.0.0.1:{srv.server.metrics_port}"]
"""
    with running_prometheus(tmp_path, job) as port:
        deadline, result = time.monotonic() + 45, []
        while not result and time.monotonic() < deadline:
            result = _query(port, 'up{job="rnnstream"} == 1 and on() rnnstream_checkpoint_failures_total >= 0')
            time.sleep(0.25)
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]


def test_a_silent_tls_client_does_not_block_scrapes(secure_metrics):
    import socket
    srv, url, ca = secure_metrics
    with socket.create_connection(("127.0.0.1", srv.server.metrics_port)):  # connects, never says hello
        assert _get(url, "scrape-me", ca)[0] == 200
