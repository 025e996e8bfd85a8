"""The first start: what can fail fast fails before the kernels compile, the server answers at
once (interpreted) while a child process compiles them, and Ctrl-C stops it.

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

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _service(tmp_path, *flags):
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # and the caller's (a worktree's .dev)
    env = {**os.environ, "PYTHONPATH": pythonpath, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    return subprocess.Popen([sys.executable, "-m", "rnnstream.service", "--port", "0", "--metrics-port", "-1",
                             "--data-dir", str(tmp_path / "data"), *flags], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("flag, says", [("--port", "cannot listen on 127.0.0.1:"),
                                         ("--health-port", "cannot serve health on 127.0.0.1:")])
def test_a_taken_port_is_reported_before_any_compile(tmp_path, flag, says):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _service(tmp_path, flag, str(taken.getsockname()[1]))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert says in out and flag in out and "compiling" not in out and "Traceback" not in out


def test_an_unreadable_tls_file_is_reported_before_any_compile(tmp_path):
    (tmp_path / "key.pem").write_text("a key\n")
    proc = _service(tmp_path, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "key.pem"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "cannot read" in out and "missing.pem" in out and "compiling" not in out


def _compile_children(cache_dir) -> list[int]:
    """Pids of the background compile processes working for the server that uses cache_dir."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            if (b"compile_in_child" in (proc / "cmdline").read_bytes()
                    and f"NUMBA_CACHE_DIR={cache_dir}".encode() in (proc / "environ").read_bytes()):
                pids.append(int(proc.name))
        except (OSError, ValueError):
            pass
    return pids


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_cold_start_answers_at_once_with_the_interpreted_kernels(tmp_path):
    import numpy as np

    from rnnstream.clients import Client
    from rnnstream.clients.local import free_port
    metrics_port = free_port()
    proc = _service(tmp_path, "--metrics-port", str(metrics_port))
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "rnnstream serving on" in line:
                break
        text = "".join(lines)
        assert "serving now with the kernels run by the interpreter" in text, text
        port = int(text.split("rnnstream serving on 127.0.0.1:")[1].split()[0])
        started = time.monotonic()
        with Client(f"127.0.0.1:{port}", timeout=60) as client:
            client.create_model(name="m", input_size=2, output_size=1)
            x = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
            with client.stream("m", "s") as stream:
                answer = stream.send(x, targets=x[:, :1])
        assert np.isfinite(answer.predictions).all() and time.monotonic() - started < 60
        import urllib.request
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert "rnnstream_kernels_interpreted 1.0" in scrape
        assert _compile_children(tmp_path / "numba-cache"), "no background compile is running"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        # the child goes with the server (SIGTERM: the server's stop kills it)
        _wait_for(lambda: not _compile_children(tmp_path / "numba-cache"), 10, "the compile child outlived the server")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_compile_child_ends_when_the_server_is_killed(tmp_path):
    proc = _service(tmp_path)
    try:
        for line in proc.stdout:
            if "rnnstream serving on" in line:
                break
        _wait_for(lambda: _compile_children(tmp_path / "numba-cache"), 30, "no background compile started")
        proc.kill()  # kill -9: no stop() runs; the child sees its parent gone
        proc.wait(10)
        _wait_for(lambda: not _compile_children(tmp_path / "numba-cache"), 10, "the compile child outlived the server")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_first_ctrl_c_during_the_compile_stops_at_once_without_a_traceback(tmp_path):
    proc = _service(tmp_path, "--cold-start", "wait")
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
    from rnnstream.clients import local
    monkeypatch.setattr(local, "COMPILE_TIMEOUT_S", 15.0)  # instead of 15 minutes
    # 10 s: time enough, even on a busy machine, to import and say "compiling" (which takes minutes)
    server = local.LocalServer(tmp_path / "data", startup_timeout_s=10.0, args=("--cold-start", "wait"),
                               env={"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="still compiling its kernels after") as info:
        server.start()
    assert 14.5 < time.monotonic() - started < 90  # past startup_timeout_s: the compile was waited for
    assert "compiling the kernels with numba" in str(info.value)  # the log tail comes along
    assert server.process is None  # stopped
