"""docker-compose, Prometheus and Grafana files, checked with the real tools where they run here.

Docker itself cannot run on these machines; the PromQL of the dashboard is run against a
real Prometheus in test_dashboard_promql.py.
"""
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/rnnstream.json"


def load_generator():
    spec = importlib.util.spec_from_file_location("make_dashboard", ROOT / "deploy/grafana/make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool(name):
    path = shutil.which(name)
    if path is None:  # .ci/run installs them; a bare checkout says what to install
        pytest.fail(f"{name} is not installed (apt-get install docker-compose prometheus)")
    return path


def test_compose_file_validates():
    proc = subprocess.run([tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert set(config["services"]) == {"rnnstream", "prometheus", "grafana"}
    server = config["services"]["rnnstream"]
    assert "rnnstream-data:/data:rw" in server["volumes"] and "rnnstream-data" in config["volumes"]
    assert "rnnstream" in server["healthcheck"]["test"] and "health" in server["healthcheck"]["test"]


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


def test_stop_grace_period_outlasts_the_drain():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["rnnstream"]
    drain = float(server["environment"]["RNNSTREAM_SHUTDOWN_GRACE_S"])
    assert seconds(server["stop_grace_period"]) >= 2 * drain


def test_prometheus_config_is_valid_and_scrapes_the_server():
    path = ROOT / "deploy/prometheus/prometheus.yml"
    proc = subprocess.run([tool("promtool"), "check", "config", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    targets = yaml.safe_load(path.read_text())["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["rnnstream:9464"]


def test_grafana_is_provisioned_with_the_datasource_the_panels_name():
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/rnnstream.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


def test_dashboard_json_is_what_the_generator_writes():
    assert DASHBOARD.read_text() == load_generator().render(), \
        "stale dashboard: run python deploy/grafana/make_dashboard.py"


def test_dashboard_covers_the_metrics_the_issue_asks_for():
    board = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in ("rnnstream_steps_total", "rnnstream_updates_total", "rnnstream_loss_bucket",
                   "rnnstream_gradient_norm_bucket", "rnnstream_gradient_clipped_total",
                   "rnnstream_weight_norm", "rnnstream_chunk_seconds_bucket", "rnnstream_step_seconds_bucket",
                   "rnnstream_batch_streams", "rnnstream_active_streams", "rnnstream_stream_evictions_total",
                   "rnnstream_checkpoint_seconds_bucket", "grpc_server_handled_total"):
        assert metric in exprs
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["templating"]["list"][0]["name"] == "model"


def test_dockerfile_installs_as_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    runs = re.findall(r"^RUN (.+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert runs
    for command in runs:
        assert command in readme, f"Dockerfile step {command!r} is not in README.md"
    copied = re.findall(r"^COPY (\S+) ", (ROOT / "Dockerfile").read_text(), flags=re.M)
    for package in ("kernels", "service", "protos", "clients"):
        assert package in copied


def test_image_compiles_the_kernels_at_build_time_into_its_own_numba_cache():
    # No docker daemon here, so the image is not built: its steps are checked in order instead.
    lines = [l.strip() for l in (ROOT / "Dockerfile").read_text().splitlines()]
    step = {key: next(i for i, l in enumerate(lines) if l.startswith(key)) for key in
            ("RUN pip install '.", "ENV NUMBA_CACHE_DIR=/var/cache/numba", "WORKDIR /data",
             'RUN python -c "from rnnstream.service.engine import warm_up; warm_up()"')}
    order = list(step.values())
    assert order == sorted(order), step  # install, cache dir, leave /src, compile
    assert not any(l.startswith("VOLUME") and "numba" in l for l in lines)  # a volume would outlive rebuilds


def test_dockerignore_keeps_the_build_context_to_the_sources():
    ignored = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")}
    assert {".git", ".venv", "rnnstream-data", "**/__pycache__", "**/*.pyc", "bench/results"} <= ignored


def test_healthcheck_start_period_covers_a_load_that_turns_into_a_compile():
    from rnnstream.service.coldstart import LOAD_PATIENCE_S
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    health = compose["services"]["rnnstream"]["healthcheck"]
    assert health["start_period"] == "30s" and LOAD_PATIENCE_S < 30  # then it serves, interpreted
    assert "--start-period=30s" in (ROOT / "Dockerfile").read_text()


def test_the_healthchecks_ask_the_health_port_the_image_and_compose_turn_on():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["rnnstream"]
    port = service["environment"]["RNNSTREAM_HEALTH_PORT"]
    assert f"127.0.0.1:{port}" in service["healthcheck"]["test"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"RNNSTREAM_HEALTH_PORT={port}" in dockerfile and f'"127.0.0.1:{port}"' in dockerfile.split("HEALTHCHECK")[1]
