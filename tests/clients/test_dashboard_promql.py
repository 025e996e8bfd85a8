"""Every query of the Grafana dashboard, run by a real Prometheus scraping a real server under traffic.

Each must return at least one series with a finite value: a panel that stays empty, or a
metric name that drifted from what the service exports, fails here.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from rnnstream.clients import ChunkRefused, Client
from rnnstream.clients.local import LocalServer, free_port
from tests.clients.test_sdk_server import SPEC, sine_chunks

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRAPE_S = 0.5
RATE_WINDOW = "20s"


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((ROOT / "deploy/grafana/dashboards/rnnstream.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def as_prometheus_sees_it(expr: str) -> str:
    """What Grafana sends: the template variable at "All", the rate interval filled in."""
    return expr.replace('"$model"', '".*"').replace("$__rate_interval", RATE_WINDOW)


def query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"]


def traffic(address: str, rounds: int = 8) -> None:
    """Enough of everything for every panel, spread over several scrapes so that rates move:
    steps, clipped updates, several streams at once, skipped updates (an Adagrad model whose
    squared gradient overflows float32: the largest target the server admits), a refused chunk,
    a closed stream (an eviction), checkpoints."""
    with Client(address) as client:
        client.create_model(name="dash", **{**SPEC, "clip_norm": 1e-4})
        client.create_model(name="dash-skip", **{**SPEC, "optimizer": "adagrad", "normalize": "off"})
        sessions = [client.stream("dash", f"s{i}", window=4) for i in range(4)]
        chunks = sine_chunks(5, 8)
        for _ in range(rounds):
            iters = [s.pipeline(chunks) for s in sessions]
            for _ in range(len(chunks)):  # interleaved, so steps of several streams batch together
                for it in iters:
                    next(it)
            x, _ = chunks[0]
            client.predict("dash-skip", "s", x, targets=np.full((len(x), 1), 1.8e19, np.float32))
            client.get_stream("dash", "s0")  # unary calls all along, for the gRPC latency panel
            time.sleep(SCRAPE_S)
        with pytest.raises(ChunkRefused):
            sessions[0].send(np.ones((2, 5), np.float32), targets=np.ones((2, 1), np.float32))
        for s in sessions:
            s.close()
        client.close_stream("dash", "s3")
        client.list_models()


def wait_for(base: str, expr: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not query(base, expr):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus has no {expr} after {timeout_s}s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus)")
    d = tmp_path_factory.mktemp("prom")
    server = LocalServer(d / "rnnstream", args=("--checkpoint-interval-s", "0.3"))
    server.start()
    config = d / "prometheus.yml"
    ms = int(SCRAPE_S * 1000)
    config.write_text(f"global:\n  scrape_interval: {ms}ms\n  evaluation_interval: {ms}ms\n"
                      "scrape_configs:\n  - job_name: rnnstream\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{server.metrics_port}']\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={d / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(d / "prometheus.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((d / "prometheus.log").read_text()[-2000:])
                time.sleep(0.2)
        wait_for(base, 'up{job="rnnstream"} == 1')  # scraping has begun
        traffic(server.address)
        time.sleep(3 * SCRAPE_S)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        server.stop()


@pytest.mark.parametrize("title, expr", dashboard_queries(), ids=[f"{t}: {e[:60]}" for t, e in dashboard_queries()])
def test_dashboard_query_returns_series(prometheus, title, expr):
    result = query(prometheus, as_prometheus_sees_it(expr))
    assert result, f"panel {title!r}: no series for {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(np.isfinite(v) for v in values), f"panel {title!r}: only NaN for {expr}: {result}"
