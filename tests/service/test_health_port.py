"""``--health-port``: grpc.health.v1 answered by a child process, so that a probe does not
queue behind the main port's calls, and NOT_SERVING when the event loop stalls or stops."""
from __future__ import annotations

import pathlib
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnnstream.service.config import Config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health_stub(srv):
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.server.health_port}")
    return channel, health_pb2_grpc.HealthStub(channel)


def _status(stub, service="") -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _until(stub, want: int) -> None:
    """Poll until the health port says ``want`` (bounded: 10 s)."""
    for _ in range(200):
        if _status(stub) == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"the health port never said {health_pb2.HealthCheckResponse.ServingStatus.Name(want)}")


def test_the_health_port_answers_while_the_event_loop_is_held_and_not_serving_once_it_stalls(start_server):
    srv = start_server(health_port=0, health_stale_s=1.0)
    channel, stub = _health_stub(srv)
    released = threading.Event()
    try:
        assert srv.server.health_port not in (0, srv.server.port)
        assert _status(stub) == SERVING and _status(stub, "rnnstream.v1.RnnStream") == SERVING
        with pytest.raises(grpc.RpcError) as info:
            _status(stub, "no.such.Service")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "rnnstream.v1.RnnStream" in info.value.details()

        srv.loop.call_soon_threadsafe(released.wait, 30)  # the event loop is stuck in this call
        assert _status(stub) == SERVING  # answered while the loop cannot take a call
        main_health = health_pb2_grpc.HealthStub(srv.channel)
        with pytest.raises(grpc.RpcError) as info:  # the main port's health waits for the loop
            main_health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        _until(stub, NOT_SERVING)  # stuck past health_stale_s: not healthy
        released.set()
        _until(stub, SERVING)  # the loop turns again

        srv.stop()  # a stopped server answers nothing there
        with pytest.raises(grpc.RpcError) as info:
            _status(stub)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        released.set()
        channel.close()


def test_the_health_port_is_off_by_default(start_server):
    assert Config().health_port == -1 and start_server().server.health_port == 0
    with pytest.raises(ValueError, match="health_port"):
        Config(health_port=-2).validate()


def _children(pid: int, marker: bytes) -> list[int]:
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def test_the_health_process_ends_with_the_server_even_after_kill_9(spawn, tmp_path):
    srv = spawn(tmp_path / "data", "--health-port", "0")
    [child] = _children(srv.proc.pid, b"rnnstream.service.health_port")
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(30)
    for _ in range(200):  # bounded: 10 s
        if not pathlib.Path(f"/proc/{child}").exists() or b"Z" in pathlib.Path(f"/proc/{child}/stat").read_bytes().split(b")")[1][:3]:
            return
        time.sleep(0.05)
    raise AssertionError("the health process outlived the server")
