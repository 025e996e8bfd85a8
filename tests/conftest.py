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
import subprocess
import sys
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


def _exit_if_a_required_tool_is_missing(missing) -> None:
    if missing and os.environ.get("RNNSTREAM_REQUIRE_TOOLS") == "1":
        pytest.exit(f"missing system tools: {', '.join(sorted(missing))}; install them with: "
                    f"{install_line(missing)}", returncode=4)


def pytest_collection_modifyitems(session, config, items):
    missing = set(missing_tools())
    if not missing:
        return
    _exit_if_a_required_tool_is_missing(missing)
    kept, dropped = [], []
    for item in items:
        (dropped if missing.intersection(_needs(item.nodeid)) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config._rnnstream_missing = (sorted(missing), len(dropped))


# fixtures that start a server (in-process or as a child process)
SERVER_FIXTURES = {"server", "client", "start_server", "secure_server", "secure_metrics", "cluster", "postgres"}
# tests that drive the kernels in this process
KERNEL_PATHS = ("tests/kernels/", "tests/service/", "tests/bench/", "tests/scaleout/")


def compile_kernels() -> None:
    """Compile (cold cache) or load (warm cache) every kernel signature the suite runs
    (``tests/kernel_signatures.py``, the one place to list them). On a cold cache the float32
    and float64 halves compile in two processes side by side (numba compiles under one lock
    per process); this process then loads them, compiling here only what a race between the
    two writers left out of the cache."""
    from tests import kernel_signatures
    if not _cached_kernels():
        root = pathlib.Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
        children = [subprocess.Popen([sys.executable, "-m", "tests.kernel_signatures", half], cwd=root, env=env)
                    for half in kernel_signatures.HALVES]
        for child in children:
            child.wait()
    for half in kernel_signatures.HALVES.values():
        half()


def _cached_kernels(since: float = 0.0) -> int:
    """How many compiled kernel signatures numba's on-disk cache holds (written since ``since``)."""
    from rnnstream.service.coldstart import kernel_cache
    root = kernel_cache()[0]
    return sum(1 for f in root.rglob("*.nbc") if f.stat().st_mtime >= since) if root.is_dir() else 0


def _needs_kernels(item) -> bool:
    return item.nodeid.startswith(KERNEL_PATHS) or bool(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def _compile_once(config, reporter) -> None:
    """Compile or load the kernels, say so, and keep what happened for the summary."""
    cached = _cached_kernels()
    if not cached and reporter is not None:
        reporter.write_line("numba's cache of the kernels is cold: compiling them once before the tests "
                            "(about 2-4 minutes on 2 cores; later runs load them in seconds)...", yellow=True)
    started, wall = time.monotonic(), time.time()
    compile_kernels()
    seconds, compiled = time.monotonic() - started, _cached_kernels(since=wall - 1)
    how = f"compiled ({compiled} signatures written to numba's cache)" if compiled else "loaded from numba's cache"
    config._rnnstream_kernels = (how, seconds)
    if not cached and reporter is not None:
        reporter.write_line(f"kernels compiled in {seconds:.0f} s")


def _is_xdist_controller(config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None) not in (None, 0)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    # With pytest-xdist (-n N) the controller compiles before it starts the workers (xdist's own
    # sessionstart runs last), so that the workers load numba's on-disk cache instead of each
    # compiling the same kernels at once.
    if _is_xdist_controller(session.config):
        _exit_if_a_required_tool_is_missing(missing_tools())  # before minutes of compiling, not after
        _compile_once(session.config, session.config.pluginmanager.get_plugin("terminalreporter"))


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels(request):
    """The kernels, compiled or loaded once per process before the first test that needs them,
    so that their minutes show as this fixture's setup and not in a test's call (or a server
    start that times out looking hung)."""
    if any(_needs_kernels(item) for item in request.session.items):
        _compile_once(request.config, request.config.pluginmanager.get_plugin("terminalreporter"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = getattr(config, "_rnnstream_missing", None)
    if missing:
        tools, count = missing
        terminalreporter.write_line(
            f"NOT RUN: {count} test(s) that need {', '.join(tools)} (not installed); "
            f"install with: {install_line(tools)}", yellow=True, bold=True)
    kernels = getattr(config, "_rnnstream_kernels", None)
    if kernels:
        how, seconds = kernels
        terminalreporter.write_line(f"kernels: {how} in {seconds:.1f} s, once, before the first test")
