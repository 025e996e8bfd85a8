"""The first start: what can fail fast fails before the kernels compile, and Ctrl-C stops it.

Each server here gets an empty NUMBA_CACHE_DIR, i.e. the cold start of a fresh install.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _service(tmp_path, *flags):
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # and the caller's (a worktree's .dev)
    env = {**os.environ, "PYTHONPATH": pythonpath, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    return subprocess.Popen([sys.executable, "-m", "rnnstream.service", "--port", "0", "--metrics-port", "-1",
                             "--data-dir", str(tmp_path / "data"), *flags], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_taken_port_is_reported_before_any_compile(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _service(tmp_path, "--port", str(taken.getsockname()[1]))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "cannot listen on 127.0.0.1:" in out and "compiling" not in out and "Traceback" not in out


def test_an_unreadable_tls_file_is_reported_before_any_compile(tmp_path):
    (tmp_path / "key.pem").write_text("a key\n")
    proc = _service(tmp_path, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "key.pem"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "cannot read" in out and "missing.pem" in out and "compiling" not in out


def test_the_first_ctrl_c_during_the_compile_stops_at_once_without_a_traceback(tmp_path):
    proc = _service(tmp_path)
    lines = []
    try:
        for line in proc.stdout:  # the server says what it compiles before it starts
            lines.append(line)
            if "compiling the kernels" in line:
                break
        assert any("about 2-4 minutes" in l for l in lines), lines
        time.sleep(1.0)  # inside numba now
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, 0), "".join(lines) + out
    assert stopped_after < 10, stopped_after
    assert "Traceback" not in out and "interrupted during start-up" in out, out


def test_local_server_waits_for_a_reported_compile_and_says_so_when_it_gives_up(tmp_path, monkeypatch):
    import pytest

    from rnnstream.clients import local
    monkeypatch.setattr(local, "COMPILE_TIMEOUT_S", 15.0)  # instead of 15 minutes
    # 10 s: time enough, even on a busy machine, to import and say "compiling" (which takes minutes)
    server = local.LocalServer(tmp_path / "data", startup_timeout_s=10.0,
                               env={"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="still compiling its kernels after") as info:
        server.start()
    assert 14.5 < time.monotonic() - started < 90  # past startup_timeout_s: the compile was waited for
    assert "compiling the kernels with numba" in str(info.value)  # the log tail comes along
    assert server.process is None  # stopped
