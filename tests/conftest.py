"""System tools some tests start for real (Prometheus, promtool, docker-compose).

On a machine without them, those tests are deselected and the run says ONCE, plainly, what is
missing and the command that installs it, instead of failing each test on its own.
``RNNSTREAM_REQUIRE_TOOLS=1`` (set by ``.ci/run``-like setups that must run everything) turns
the missing tools into one error that stops the run before any test.
"""
from __future__ import annotations

import os
import shutil

import pytest

# tool -> the Debian/Ubuntu package that provides it
PACKAGE_OF = {"prometheus": "prometheus", "promtool": "prometheus", "docker-compose": "docker-compose"}

# test id prefix -> the tools it starts
NEEDS = {
    "tests/service/test_prometheus.py::": ("prometheus",),
    "tests/service/test_faults_metrics.py::test_real_prometheus_scrapes": ("prometheus",),
    "tests/clients/test_dashboard_promql.py::": ("prometheus",),
    "tests/clients/test_deploy.py::test_compose_file_validates": ("docker-compose",),
    "tests/clients/test_deploy.py::test_prometheus_config_is_valid": ("promtool",),
}


def missing_tools() -> list[str]:
    return sorted({tool for tools in NEEDS.values() for tool in tools if shutil.which(tool) is None})


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
