"""A real Prometheus (Debian package ``prometheus``, installed by .ci/run) scrapes the running
server on loopback; PromQL finds the gradient-norm and latency series."""
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import make_chunks, make_spec, request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())["data"]["result"]
    except OSError:
        return []  # not up yet


@contextlib.contextmanager
def running_prometheus(tmp_path, job: str):
    """A real Prometheus scraping every 250 ms with one scrape job (``job``: the YAML of
    ``scrape_configs``' item, without its leading "- "); yields the port of its HTTP API."""
    binary = shutil.which("prometheus")
    assert binary, "install Prometheus: apt-get install -y prometheus (.ci/run does)"
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 250ms\nscrape_configs:\n  - " + job.strip() + "\n")
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def test_prometheus_scrapes_gradient_norm_and_latency(server, tmp_path):
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")))
    list(stub.Stream(iter([request("m", "s", i + 1, *c) for i, c in enumerate(make_chunks(8, 4))])))
    job = f"""
job_name: rnnstream
    static_configs:
      - targets: ["127.0.0.1:{server.server.metrics_port}"]
"""
    with running_prometheus(tmp_path, job) as port:
        queries = {
            "gradient norm": 'rnnstream_gradient_norm_count{model="m"} > 0',
            "p99 chunk latency": 'histogram_quantile(0.99, sum by (le) (rnnstream_chunk_seconds_bucket{model="m"}))',
            "grpc latency": 'grpc_server_handling_seconds_count{grpc_method="Stream"}',
            "handled codes": 'grpc_server_handled_total{grpc_code="OK"}',
        }
        found = {}
        deadline = time.monotonic() + 45
        while len(found) < len(queries) and time.monotonic() < deadline:
            for name, q in queries.items():
                if name not in found and (result := _query(port, q)):
                    found[name] = result
            time.sleep(0.25)
        assert set(found) == set(queries), (set(queries) - set(found),
                                            (tmp_path / "prometheus.log").read_text()[-2000:])
        assert 0 < float(found["p99 chunk latency"][0]["value"][1]) < 10
