"""What a fresh machine lacks, said once: system tools, and numba's cache of the kernels.

System tools some tests start for real (Prometheus, promtool, docker-compose): on a machine
without them, those tests are deselected and the run says ONCE, plainly, what is missing and
the command that installs it, instead of failing each test on its own.
``RNNSTREAM_REQUIRE_TOOLS=1`` (for setups that must run everything) turns the missing tools
into one error that stops the run before any test.

The kernels: when tests that start a server are selected, the kernels are loaded (or, on a
cold cache, compiled, with a line saying so) once before the first test, so that no server
start in a test waits minutes for numba and times out looking hung.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import time

import pytest

# tool -> the Debian/Ubuntu package that provides it
PACKAGE_OF = {"prometheus": "prometheus", "promtool": "prometheus", "docker-compose": "docker-compose",
              "nginx": "nginx", "initdb": "postgresql"}

# test id prefix -> the tools it starts
NEEDS = {
    "tests/service/test_prometheus.py::": ("prometheus",),
    "tests/service/test_faults_metrics.py::test_real_prometheus_scrapes": ("prometheus",),
    "tests/clients/test_dashboard_promql.py::": ("prometheus",),
    "tests/clients/test_deploy.py::test_compose_file_validates": ("docker-compose",),
    "tests/clients/test_deploy.py::test_prometheus_config_is_valid": ("promtool",),
    "tests/scaleout/test_store_postgres.py::": ("initdb",),
    "tests/scaleout/test_fencing.py::": ("initdb",),
    "tests/scaleout/test_failover.py::": ("initdb", "nginx"),
    "tests/scaleout/test_deploy_scaleout.py::test_nginx_accepts_the_config": ("nginx",),
    "tests/scaleout/test_deploy_scaleout.py::test_scaleout_compose_file_validates": ("docker-compose",),
}


def _have(tool: str) -> bool:
    # Debian puts nginx in /usr/sbin and keeps PostgreSQL's initdb off PATH, under
    # /usr/lib/postgresql/<version>/bin; tests/scaleout/cluster.py looks there too
    return (shutil.which(tool) is not None or pathlib.Path("/usr/sbin", tool).exists()
            or any(pathlib.Path("/usr/lib/postgresql").glob(f"*/bin/{tool}")))


def missing_tools() -> list[str]:
    return sorted({tool for tools in NEEDS.values() for tool in tools if not _have(tool)})


def install_line(tools) -> str:
    packages = sorted({PACKAGE_OF[t] for t in tools})
    return f"sudo apt-get install -y {' '.join(packages)}"


def _needs(nodeid: str) -> tuple[str, ...]:
    return tuple(t for prefix, tools in NEEDS.items() if nodeid.startswith(prefix) for t in tools)


def pytest_collection_modifyitems(session, config, items):
    missing = set(missing_tools())
    if not missing:
        return
    if os.environ.get("RNNSTREAM_REQUIRE_TOOLS") == "1":
        pytest.exit(f"missing system tools: {', '.join(sorted(missing))}; install them with: "
                    f"{install_line(missing)}", returncode=4)
    kept, dropped = [], []
    for item in items:
        (dropped if missing.intersection(_needs(item.nodeid)) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config._rnnstream_missing = (sorted(missing), len(dropped))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = getattr(config, "_rnnstream_missing", None)
    if missing:
        tools, count = missing
        terminalreporter.write_line(
            f"NOT RUN: {count} test(s) that need {', '.join(tools)} (not installed); "
            f"install with: {install_line(tools)}", yellow=True, bold=True)


# fixtures that start a server (in-process or as a child process)
SERVER_FIXTURES = {"server", "client", "start_server", "secure_server", "secure_metrics", "cluster", "postgres"}


def _kernel_cache_is_warm() -> bool:
    override = os.environ.get("NUMBA_CACHE_DIR")
    root = pathlib.Path(override) if override else pathlib.Path(__file__).resolve().parent.parent / "kernels" / "__pycache__"
    return root.is_dir() and next(root.rglob("*.nbi"), None) is not None


def pytest_collection_finish(session):
    if not any(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    warm = _kernel_cache_is_warm()
    if not warm and reporter is not None:
        reporter.write_line("numba's cache of the kernels is cold: compiling them once before the tests "
                            "(about 2-4 minutes on 2 cores; later runs load them in seconds)...", yellow=True)
    started = time.monotonic()
    from rnnstream.service.engine import warm_up
    warm_up()
    if not warm and reporter is not None:
        reporter.write_line(f"kernels compiled in {time.monotonic() - started:.0f} s")
