"""A replica whose lease was taken cannot write: two real replicas on one PostgreSQL.

Replica A serves a stream and hands it to B when B is asked for it; B is paused (SIGSTOP)
past its lease and A takes the stream over from the store. When B wakes up, its stale copy is
fenced off: the stored stream stays A's, and the stream goes on bit for bit as if B's stale
chunk never happened.
"""
from __future__ import annotations

import signal
import time

import grpc
import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.store_postgres import PostgresStore
from tests.scaleout.cluster import start_replicas, stop
from tests.scaleout.test_store_postgres import _fresh_db
from tests.service.conftest import engine_run, make_chunks, make_spec, request, weights

LEASE_TTL_S = 1.5


def _wait_durable(stub, seq: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s"), timeout=10).durable_seq < seq:
        assert time.monotonic() < deadline, f"no checkpoint reached seq {seq}"
        time.sleep(0.05)


def test_a_replica_whose_lease_was_taken_cannot_write(postgres, tmp_path):
    url = _fresh_db(postgres)
    spec = make_spec("m", hidden_sizes=[4], sharing=pb.SHARING_PER_STREAM)
    chunks = make_chunks(8, 4)
    other = make_chunks(8, 4, seed=99)
    parts = []
    try:
        parts += start_replicas(2, url, tmp_path, "--checkpoint-interval-s", "0.2", "--lease-ttl-s", str(LEASE_TTL_S),
                                "--workers", "1")
        a, b = parts
        a.stub.CreateModel(pb.CreateModelRequest(spec=spec), timeout=30)  # b loads it from the store on first use
        for seq in range(1, 5):
            a.stub.Predict(request("m", "s", seq, *chunks[seq - 1]), timeout=30)
        _wait_durable(a.stub, 4)

        # the proxy sends the stream to B now (A came back, or B joined): A hands it over
        resp = b.stub.Predict(request("m", "s", 5, *chunks[4]), timeout=30)
        assert resp.acked_seq == 5 and not resp.duplicate
        assert not a.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s"), timeout=10).in_memory
        _wait_durable(b.stub, 5)

        b.proc.send_signal(signal.SIGSTOP)  # paused past its lease: A takes the stream over
        time.sleep(LEASE_TTL_S + 0.5)
        for seq in range(6, 8):
            resp = a.stub.Predict(request("m", "s", seq, *chunks[seq - 1]), timeout=30)
            assert resp.acked_seq == seq and not resp.duplicate
        _wait_durable(a.stub, 7)

        b.proc.send_signal(signal.SIGCONT)
        # B still holds its stale copy at seq 5, unless its renewal already dropped it: a
        # different chunk 6 is applied there and fenced off at B's checkpoint, or (B asked A
        # for the stream back and got the true state at seq 7) answered as a duplicate
        try:
            b.stub.Predict(request("m", "s", 6, *other[5]), timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        time.sleep(3 * 0.2 + LEASE_TTL_S)  # B's checkpoints and renewals had their chance
        log = (tmp_path / "replica1.log").read_text()
        assert "taken over" in log or "lease lost" in log

        reader = PostgresStore(url, owner="test-reader")
        try:
            stored = reader.run(reader.load_stream, "m", "s")
        finally:
            reader.close()
        assert stored.acked_seq == 7 and stored.stats["steps"] == 28  # never B's stale chunk 6

        # the stream goes on from the true state wherever it is: bit for bit chunks 1..8
        resp = a.stub.Predict(request("m", "s", 8, *chunks[7]), timeout=30)
        assert resp.acked_seq == 8 and not resp.duplicate
        engine, _ = engine_run(spec, {"s": chunks})
        want = engine.state_dict("s")
        got = weights(a.stub, "m", "s")
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)

        # a model deleted on one replica leaves the others too (within a lease renewal)
        b.stub.DeleteModel(pb.DeleteModelRequest(name="m"), timeout=30)
        deadline = time.monotonic() + 10
        while True:
            try:
                a.stub.GetModel(pb.GetModelRequest(name="m"), timeout=10)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
                break
            assert time.monotonic() < deadline, "replica A still serves a model deleted on B"
            time.sleep(0.1)
    finally:
        for p in parts:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGCONT)
        stop(parts)


def test_every_replica_lists_the_models_of_the_shared_store(postgres, tmp_path):
    url = _fresh_db(postgres)
    parts = []
    try:
        parts += start_replicas(2, url, tmp_path, "--workers", "1")
        a, b = parts
        for name in ("first", "second"):
            a.stub.CreateModel(pb.CreateModelRequest(spec=make_spec(name, hidden_sizes=[4])), timeout=30)
        listed = b.stub.ListModels(pb.ListModelsRequest(), timeout=30).models
        assert sorted(m.spec.name for m in listed) == ["first", "second"]
        b.stub.DeleteModel(pb.DeleteModelRequest(name="first"), timeout=30)
        assert [m.spec.name for m in b.stub.ListModels(pb.ListModelsRequest(), timeout=30).models] == ["second"]
    finally:
        stop(parts)
