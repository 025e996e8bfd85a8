"""The scale-out deploy files: the compose file validates, and nginx accepts its config and
hashes on the header the SDK sends."""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile

import yaml

from rnnstream.clients.connect import ROUTE_HEADER
from tests.scaleout.cluster import NGINX_CONF, render_nginx_conf

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_scaleout_compose_file_validates():
    proc = subprocess.run([shutil.which("docker-compose"), "-f", str(ROOT / "docker-compose.scaleout.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert set(services) == {"postgres", "nginx", "rnnstream-1", "rnnstream-2", "rnnstream-3"}
    for i in (1, 2, 3):
        env = services[f"rnnstream-{i}"]["environment"]
        assert env["RNNSTREAM_STORE"].startswith("postgresql://") and "@postgres:5432/" in env["RNNSTREAM_STORE"]
    upstreams = re.findall(r"server (rnnstream-\d+):50051", NGINX_CONF.read_text())
    assert sorted(upstreams) == ["rnnstream-1", "rnnstream-2", "rnnstream-3"]  # one per replica service


def test_nginx_hashes_on_the_sdk_routing_header():
    variable = "$http_" + ROUTE_HEADER.replace("-", "_")
    assert re.search(rf"hash {re.escape(variable)} consistent;", NGINX_CONF.read_text())
    assert "grpc_pass grpc://rnnstream;" in NGINX_CONF.read_text()


def test_nginx_accepts_the_config():
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="rnnstream-nginx-t-"))
    try:
        conf = workdir / "nginx.conf"
        conf.write_text(render_nginx_conf([50061, 50062, 50063], 50060, workdir))
        proc = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-t", "-p", str(workdir), "-c", str(conf)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
