"""A fresh machine: missing system tools are reported once, with the command that installs them."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _pytest(tmp_path, *args, **env):
    empty_bin = tmp_path / "bin"  # a PATH on which none of the system tools exists
    empty_bin.mkdir()
    # the outer run's RNNSTREAM_REQUIRE_TOOLS (.ci/run sets it) is not this inner run's
    environ = {k: v for k, v in os.environ.items() if k != "RNNSTREAM_REQUIRE_TOOLS"}
    environ.update(PATH=str(empty_bin), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/clients/test_deploy.py"], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=300)


def test_missing_tools_deselect_their_tests_with_one_line(tmp_path):
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("NOT RUN:")]
    assert len(lines) == 1, proc.stdout
    assert "2 test(s)" in lines[0] and "apt-get install -y docker-compose prometheus" in lines[0]
    assert "2 deselected" in proc.stdout and "failed" not in proc.stdout and "error" not in proc.stdout


def test_missing_tools_stop_the_run_when_every_test_must_run(tmp_path):
    proc = _pytest(tmp_path, RNNSTREAM_REQUIRE_TOOLS="1")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "missing system tools: docker-compose, prometheus, promtool" in proc.stdout + proc.stderr
