"""The cheap paths of a chunk (issue 11, item 5) do what the long ones do: a small batch run on
the loop answers exactly as one run on a worker thread, the counts the batcher keeps as calls
come and go return to zero, and the few-value checks refuse what the numpy checks refuse."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.convert import MAX_ABS_VALUE, check_values, float_array
from rnnstream.service.errors import ServiceError
from tests.service.conftest import make_chunks, make_spec, request


def _answers(srv, inline_below_s, monkeypatch) -> tuple[list, set]:
    """Predictions and losses of 12 one-step chunks, and the threads the engine ran them on."""
    monkeypatch.setattr(srv.server.registry.config, "inline_below_s", inline_below_s)
    srv.stub.CreateModel(pb.CreateModelRequest(spec=make_spec(f"m{inline_below_s > 0}")))
    host = srv.server.registry.hosts[f"m{inline_below_s > 0}"]
    threads = set()
    step = host.engine.step

    def spy(*args, **kw):  # the real engine call, noting where it ran
        threads.add(threading.current_thread().name)
        return step(*args, **kw)

    monkeypatch.setattr(host.engine, "step", spy)
    out = []
    for seq, (x, y) in enumerate(make_chunks(12, 1), start=1):
        resp = srv.stub.Predict(request(host.name, "s", seq, x, y), timeout=30)
        assert not resp.HasField("error") and resp.acked_seq == seq
        out.append((list(resp.predictions), list(resp.losses), resp.stats.steps, resp.stats.updates))
    return out, threads


def test_a_small_batch_on_the_loop_answers_as_on_a_worker(start_server, monkeypatch):
    srv = start_server(workers=1)
    on_workers, worker_threads = _answers(srv, 0.0, monkeypatch)
    inline, inline_threads = _answers(srv, 10.0, monkeypatch)
    assert inline == on_workers  # same model, seed and chunks: the same numbers, bit for bit
    assert all(name.startswith("engine") for name in worker_threads)
    loop_thread = srv.thread.name
    # the model's first batch goes to a worker (its cost is not known yet); later ones stay on the loop
    assert loop_thread in inline_threads and any(name.startswith("engine") for name in inline_threads)


def test_attached_and_queued_counts_follow_the_calls(start_server):
    srv = start_server()
    srv.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("c")))
    host = srv.server.registry.hosts["c"]
    chunks = make_chunks(3, 2)
    gate = threading.Event()

    def call(stream_id):
        def requests():
            for seq, (x, y) in enumerate(chunks, start=1):
                yield request("c", stream_id, seq, x, y)
            gate.wait(30)  # the call stays open until the counts are read
        return list(srv.stub.Stream(requests(), timeout=60))

    results = {}
    calls = [threading.Thread(target=lambda s=s: results.__setitem__(s, call(s))) for s in ("a", "b", "a")]
    for t in calls:
        t.start()
    deadline = time.monotonic() + 30
    while host.attached != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host.attached_streams() == 2  # streams a and b, a held by two calls
    gate.set()
    for t in calls:
        t.join(60)
    assert host.attached == 0 and host.queued_streams == 0
    assert all(s.pending == 0 and s.attached == 0 for s in host.sessions.values())
    assert [r.acked_seq for r in results["b"]] == [1, 2, 3]


@pytest.mark.parametrize("size", [1, 8, 32, 33, 500])
def test_few_value_checks_refuse_what_numpy_refuses(size):
    rng = np.random.default_rng(size)
    good = rng.standard_normal(size).astype(np.float32)
    good[0] = MAX_ABS_VALUE  # the largest magnitude allowed, both signs
    good[-1] = -MAX_ABS_VALUE
    check_values(good, "inputs")
    for bad, words in ((np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"), (-np.inf, "NaN or Inf"),
                       (np.float32(3e19), "magnitude")):
        values = good.copy()
        values[size // 2] = bad
        with pytest.raises(ServiceError, match=words):
            check_values(values, "inputs")
    grid = np.zeros((size, 2), np.float32)  # label targets come as [n, O]
    grid[-1, 1] = np.nan
    with pytest.raises(ServiceError, match="NaN or Inf"):
        check_values(grid, "label targets")


@pytest.mark.parametrize("size", [0, 1, 4, 32, 33, 256])
def test_float_array_reads_a_repeated_field_as_numpy_does(size):
    values = np.random.default_rng(0).standard_normal(size).astype(np.float32).tolist()
    req = pb.StreamRequest(inputs=values)
    got = float_array(req.inputs)
    assert got.dtype == np.float32 and np.array_equal(got, np.asarray(req.inputs, dtype=np.float32))


def test_by_default_every_batch_runs_on_a_worker_thread(start_server, monkeypatch):
    srv = start_server(workers=1)
    assert srv.server.registry.config.inline_below_s == 0  # the loop does I/O only
    _, threads = _answers(srv, srv.server.registry.config.inline_below_s, monkeypatch)
    assert threads and all(name.startswith("engine") for name in threads)
