"""Engine calls run on worker threads: the event loop keeps answering while a kernel runs,
and a call that writes without reading its answers is held to its byte window."""
from __future__ import annotations

import threading
import time

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import make_chunks, make_spec, request

SLOW_STEPS = 2048  # an RTRL LSTM-32 chunk of 2048 steps takes about 2 s here


def _buffered(srv) -> float:
    return srv.server.metrics.buffered_request_bytes._value.get()


def test_health_new_calls_and_other_models_answer_while_a_long_chunk_runs(start_server):
    srv = start_server(workers=2)
    stub = srv.stub
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("slow", hidden_sizes=[32], algorithm=pb.ALGORITHM_RTRL)))
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("fast")))
    (x, y), = make_chunks(1, SLOW_STEPS)
    stub.Predict(request("slow", "s", 1, x[:4], y[:4]))  # the stream exists before the long chunk
    slow_host = srv.server.registry.hosts["slow"]

    events: list[str] = []
    lock = threading.Lock()

    def note(what):
        with lock:
            events.append(what)

    def long_chunk():
        resp = stub.Predict(request("slow", "s", 2, x, y), timeout=120)
        assert len(resp.losses) == SLOW_STEPS
        note("slow answered")

    runner = threading.Thread(target=long_chunk)
    runner.start()
    deadline = time.monotonic() + 30
    while not slow_host.busy and time.monotonic() < deadline:  # the long chunk is on a worker now
        time.sleep(0.002)
    assert slow_host.busy, "the long chunk never started"

    health = health_pb2_grpc.HealthStub(srv.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    note("health answered")
    for seq, (cx, cy) in enumerate(make_chunks(5, 4), start=1):  # another model's chunks, one after another
        resp = stub.Predict(request("fast", "f", seq, cx, cy), timeout=10)
        assert resp.acked_seq == seq and not resp.HasField("error")
    note("other model answered")
    answers = list(stub.Stream(iter([request("fast", "new", 1, *make_chunks(1, 4)[0])]), timeout=10))
    assert [a.acked_seq for a in answers] == [1]  # a new call, opened while the kernel runs
    note("new call answered")
    assert stub.GetModel(pb.GetModelRequest(name="fast"), timeout=10).spec.name == "fast"
    note("model info answered")
    runner.join(120)
    assert events == ["health answered", "other model answered", "new call answered", "model info answered",
                      "slow answered"]
    # the long chunk applied once, in order, and the stream goes on from it
    resp = stub.Predict(request("slow", "s", 3, x[:4], y[:4]))
    assert resp.acked_seq == 3 and resp.first_step == 4 + SLOW_STEPS


def test_a_call_that_does_not_read_its_answers_is_held_to_its_byte_window(start_server):
    limit = 4 * 1024 * 1024
    srv = start_server(max_inflight_bytes_per_call=limit, max_message_bytes=2 * 1024 * 1024,
                       max_inflight_per_call=64)
    # 1 MiB requests and 0.5 MiB answers: an unread call soon fills the transport and the window.
    # No linear skip: its 3M weights (inputs x outputs) would make this a 40 s test of Adam
    spec = make_spec("big", input_size=2048, output_size=1024, linear_skip=False)
    srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    steps, chunks = 128, 48
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, 2048)).astype(np.float32)
    y = rng.standard_normal((steps, 1024)).astype(np.float32)
    template = request("big", "b", 1, x, y)
    assert template.ByteSize() > 1024 * 1024
    produced = []

    def requests():
        for seq in range(1, chunks + 1):
            req = pb.StreamRequest()
            req.CopyFrom(template)
            req.seq = seq
            produced.append(seq)
            yield req

    # a guard against a hang, not a speed limit: 48 MiB through the server takes seconds of CPU,
    # and minutes where the tests run in parallel on a busy machine
    answers = srv.stub.Stream(requests(), timeout=600)
    peak, deadline = 0.0, time.monotonic() + 3.0
    while time.monotonic() < deadline:  # nothing read yet: the server must stop reading this call
        peak = max(peak, _buffered(srv))
        time.sleep(0.01)
    assert 0 < peak <= limit
    assert len(produced) < chunks, "every request was taken although no answer was read"
    got = [a.seq for a in answers]  # now read: everything is answered, in order, and released
    assert got == list(range(1, chunks + 1))
    assert len(produced) == chunks
    deadline = time.monotonic() + 5
    while _buffered(srv) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _buffered(srv) == 0
