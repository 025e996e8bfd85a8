"""Shared helpers: a real server on loopback (in a thread, or as a subprocess), specs, chunks."""
from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc
from rnnstream.service.config import Config

REPO = pathlib.Path(__file__).resolve().parents[2]


def make_spec(name="m", **kw) -> pb.ModelSpec:
    """A small LSTM regression model, TBPTT(4, 4), Adam; keyword arguments override fields."""
    opt = kw.pop("optimizer", pb.Optimizer(kind=pb.OPTIMIZER_KIND_ADAM, lr=0.01))
    fields = dict(name=name, cell=pb.CELL_LSTM, hidden_sizes=[8], input_size=2, output_size=1, algorithm=pb.ALGORITHM_TBPTT,
                  tbptt_k1=4, tbptt_k2=4, optimizer=opt, seed=7)
    fields.update(kw)
    return pb.ModelSpec(**fields)


def make_chunks(n: int, steps: int, input_size: int = 2, output_size: int = 1, seed: int = 0):
    """``n`` chunks of (inputs [T, I], targets [T, O]) from a noisy sine."""
    rng = np.random.default_rng(seed)
    t = np.arange(n * steps + 1, dtype=np.float64) * 0.3 + rng.uniform(0, 6)
    x = np.stack([np.sin(t + k) for k in range(input_size)], axis=1).astype(np.float32)
    y = np.stack([np.sin(t + 0.3 + k) for k in range(output_size)], axis=1).astype(np.float32)
    return [(x[i * steps:(i + 1) * steps], y[i * steps:(i + 1) * steps]) for i in range(n)]


def request(model, stream_id, seq, x, y=None, **kw) -> pb.StreamRequest:
    req = pb.StreamRequest(model=model, stream_id=stream_id, seq=seq, inputs=np.ravel(x).tolist(), **kw)
    if y is not None:
        req.targets.extend(np.ravel(y).tolist())
    return req


def weights(stub, model, stream_id="") -> dict[str, np.ndarray]:
    w = stub.ExportWeights(pb.ExportWeightsRequest(model=model, stream_id=stream_id))
    return {t.name: np.asarray(t.data, np.float32).reshape(tuple(t.shape)) for t in w.tensors}


def code_of(call, *args, **kw) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value.code()


def test_config(tmp_path, **kw) -> Config:
    """Loopback, free ports, fast batching; tests override what they exercise."""
    base = dict(host="127.0.0.1", port=0, metrics_port=0, data_dir=str(tmp_path / "data"),
                checkpoint_interval_s=60.0, shutdown_grace_s=2.0)
    base.update(kw)
    return Config(**base)


test_config.__test__ = False  # a helper, not a test


class ServerThread:
    """A real server in a thread with its own event loop; the test talks to it over loopback."""

    def __init__(self, config: Config):
        from rnnstream.service.server import Server

        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(config)
        self.run(self.server.start())
        self.address = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.RnnStreamStub(self.channel)
        self.stopped = False

    def run(self, coro, timeout: float = 60.0):
        """Run a coroutine on the server's loop (e.g. ``registry.checkpoint()``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.run(self.server.stop())
        self.channel.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def start_server(tmp_path):
    """``start_server(**config_overrides)`` -> a running ServerThread, stopped after the test."""
    started = []

    def start(**kw):
        srv = ServerThread(test_config(tmp_path, **kw))
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def server(start_server):
    return start_server()


class ServerProcess:
    """``python -m rnnstream.service`` as a subprocess; the bound ports are read from its log."""

    def __init__(self, data_dir, *flags, log_path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        args = [sys.executable, "-m", "rnnstream.service", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                "--data-dir", str(data_dir), *flags]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        self.port, self.metrics_port = self._wait_ready()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.RnnStreamStub(self.channel)

    def _wait_ready(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        marker = b"rnnstream serving on 127.0.0.1:"
        while time.monotonic() < deadline:
            text = pathlib.Path(self.log_path).read_bytes()
            start = text.rfind(marker)
            if start >= 0:
                line = text[start:].split(b"\n")[0].decode()
                port = int(line[len(marker):].split()[0])
                metrics = line.split("metrics on port ")[1].split(",")[0]
                return port, int(metrics) if metrics.isdigit() else -1
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{text.decode()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError("server did not start:\n" + pathlib.Path(self.log_path).read_text()[-3000:])

    def signal(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        self.channel.close()
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def spawn(tmp_path):
    """``spawn(data_dir, *flags)`` -> ServerProcess, killed after the test if still running."""
    procs = []

    def start(data_dir, *flags):
        p = ServerProcess(data_dir, *flags, log_path=tmp_path / f"server{len(procs)}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


def engine_run(spec_msg, chunks_by_stream: dict, learn=True):
    """``service.engine`` driven directly, one stream per call: the reference the server must equal."""
    from rnnstream.service.convert import spec_kwargs
    from rnnstream.service.engine import Engine, Spec

    engine = Engine(Spec(**spec_kwargs(spec_msg)))
    outs = {}
    for sid, chunks in chunks_by_stream.items():
        for x, y in chunks:
            outs.setdefault(sid, []).append(engine.step([sid], inputs=x[None], targets=y[None], learn=learn))
    return engine, outs
