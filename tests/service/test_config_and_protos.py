"""Flags, environment variables and defaults; the generated modules are importable and fresh;
the kernels are loaded before the server serves."""
import dataclasses
import pathlib
import subprocess
import sys

import pytest

from rnnstream.protos import generate
from rnnstream.service.config import Config, build_parser, env_var, from_args

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_modules_import_and_are_fresh():
    from rnnstream.protos.rnnstream.v1 import rnnstream_pb2, rnnstream_pb2_grpc

    assert "RnnStream" in rnnstream_pb2.DESCRIPTOR.services_by_name
    assert hasattr(rnnstream_pb2_grpc, "RnnStreamStub")
    assert generate.main(["--check"]) == 0, "run: python -m rnnstream.protos.generate"


def test_defaults():
    c = from_args([], environ={})
    assert (c.host, c.port, c.metrics_port, c.data_dir) == ("127.0.0.1", 50051, 9464, "./rnnstream-data")
    assert c.durability == "periodic" and 0 < c.batch_window_s <= 0.001


def test_every_flag_has_an_environment_variable_and_flags_win():
    parser_flags = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert parser_flags == {f.name for f in dataclasses.fields(Config)}
    env = {env_var("port"): "7000", env_var("data_dir"): "/tmp/x", env_var("batch_window_s"): "0.0002"}
    c = from_args(["--port", "7001", "--durability", "every-chunk"], environ=env)
    assert (c.port, c.data_dir, c.batch_window_s, c.durability) == (7001, "/tmp/x", 0.0002, "every-chunk")
    assert env_var("metrics_port") == "RNNSTREAM_METRICS_PORT"


@pytest.mark.parametrize("argv, env", [
    (["--durability", "sometimes"], {}),
    (["--tls-cert", "c.pem"], {}),
    ([], {"RNNSTREAM_PORT": "eighty"}),
    (["--max-chunk-steps", "0"], {}),
])
def test_bad_settings_are_refused(argv, env):
    with pytest.raises(SystemExit):
        from_args(argv, environ=env)


def test_warm_up_loads_the_kernels_a_server_serves_with():
    """Server.start calls warm_up before it serves: after it, the chunk and forecast kernels
    have their compiled code (in a fresh process, where nothing else loaded them)."""
    code = ("from rnnstream.kernels.chunk import forecast, run_chunk\n"
            "from rnnstream.service.engine import warm_up\n"
            "assert not run_chunk.signatures and not forecast.signatures\n"
            "seconds = warm_up()\n"
            "assert seconds > 0 and run_chunk.signatures and forecast.signatures\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_kernel_load_that_fails_is_raised_at_start_not_waited_for(monkeypatch):
    import asyncio

    from rnnstream.service import coldstart

    def broken():
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(coldstart, "warm_up", broken)
    with pytest.raises(RuntimeError, match="no compiler here"):
        asyncio.run(asyncio.wait_for(coldstart.load_before_serving(report_every_s=0.2), 30))


@pytest.mark.parametrize("which", ["grpc", "metrics"])
def test_a_taken_port_is_one_clear_line_and_exit_status_2(tmp_path, which):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--port", str(port), "--metrics-port", "-1"] if which == "grpc" else \
            ["--port", "0", "--metrics-port", str(port)]
        proc = subprocess.run([sys.executable, "-m", "rnnstream.service", "--data-dir", str(tmp_path), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    flag = "--port" if which == "grpc" else "--metrics-port"
    assert f"127.0.0.1:{port}" in proc.stderr and flag in proc.stderr, proc.stderr[-3000:]
