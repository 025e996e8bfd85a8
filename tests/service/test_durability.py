"""Nothing lost: the real server as a subprocess, killed with SIGKILL mid-stream, restarted on
the same data dir; the client replays after durable_seq and ends bit-for-bit where an
uninterrupted run ends. SIGTERM checkpoints everything and exits 0."""
import signal
import time

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import engine_run, make_chunks, make_spec, request, weights


def _info(stub, model="m", sid="s"):
    return stub.GetStream(pb.GetStreamRequest(model=model, stream_id=sid))


def _wait_durable(stub, seq, timeout=15.0):
    deadline = time.monotonic() + timeout
    while _info(stub).durable_seq < seq:
        assert time.monotonic() < deadline, f"no checkpoint reached seq {seq}"
        time.sleep(0.05)


def test_kill9_then_replay_after_durable_seq_equals_an_uninterrupted_run(spawn, tmp_path):
    data = tmp_path / "data"
    spec = make_spec("m", sharing=pb.SHARING_PER_STREAM)
    chunks = make_chunks(24, 4)
    srv = spawn(data, "--checkpoint-interval-s", "0.2")
    srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    for seq in range(1, 11):
        srv.stub.Predict(request("m", "s", seq, *chunks[seq - 1]))
    _wait_durable(srv.stub, 10)
    # Chunks 11..16 are applied, then the process dies before (most of) them are checkpointed.
    responses = list(srv.stub.Stream(iter([request("m", "s", seq, *chunks[seq - 1]) for seq in range(11, 17)])))
    assert responses[-1].acked_seq == 16
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)

    srv = spawn(data, "--checkpoint-interval-s", "0.2")
    durable = _info(srv.stub).durable_seq
    assert 10 <= durable <= 16 and _info(srv.stub).acked_seq == durable
    # The client replays everything it kept; what the server already has is skipped.
    replay = list(srv.stub.Stream(iter([request("m", "s", seq, *chunks[seq - 1]) for seq in range(9, 25)])))
    assert [r.duplicate for r in replay] == [seq <= durable for seq in range(9, 25)]
    assert replay[-1].acked_seq == 24
    engine, _ = engine_run(spec, {"s": chunks})
    got, want = weights(srv.stub, "m", "s"), engine.state_dict("s")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    assert srv.signal(signal.SIGTERM) == 0  # graceful: checkpoints everything, exits 0
    srv = spawn(data)
    info = _info(srv.stub)
    assert (info.acked_seq, info.durable_seq, info.stats.steps) == (24, 24, 96)
    got = weights(srv.stub, "m", "s")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_every_chunk_durability_commits_before_acknowledging(spawn, tmp_path):
    data = tmp_path / "data"
    srv = spawn(data, "--durability", "every-chunk", "--checkpoint-interval-s", "600")
    srv.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")))
    chunks = make_chunks(5, 3)
    responses = list(srv.stub.Stream(iter([request("m", "s", i + 1, *c) for i, c in enumerate(chunks)])))
    assert [(r.acked_seq, r.durable_seq) for r in responses] == [(i, i) for i in range(1, 6)]
    before = weights(srv.stub, "m")
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    srv = spawn(data)
    info = _info(srv.stub)
    assert (info.acked_seq, info.durable_seq) == (5, 5)
    after = weights(srv.stub, "m")
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
