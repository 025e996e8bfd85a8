"""A two-member ensemble over the real server on loopback: created with its members, streamed
exactly like the engine, member stats in GetStream and the metrics, resumed after a restart
and after kill -9 with a replay, weights imported by member name; bad member specs refused
with INVALID_ARGUMENT."""
import math
import signal
import time
import urllib.request

import grpc
import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.convert import spec_kwargs
from rnnstream.service.engine import EnsembleEngine, Spec, make_engine
from tests.service.conftest import code_of, make_chunks, make_spec, request, weights

MEMBERS = [pb.MemberSpec(), pb.MemberSpec(cell=pb.CELL_GRU, hidden_sizes=[4], optimizer=pb.Optimizer(lr=0.05))]


def _info(stub, sid="s"):
    return stub.GetStream(pb.GetStreamRequest(model="ens", stream_id=sid))


def _member_stats(stats):
    return [(m.index, m.running_loss, m.weight) for m in stats.members]


def test_two_members_stream_report_and_resume_after_a_restart(start_server):
    spec = make_spec("ens", members=MEMBERS)
    chunks = make_chunks(12, 4)
    engine = make_engine(Spec(**spec_kwargs(spec)))
    assert isinstance(engine, EnsembleEngine)
    expected = [engine.step(["s"], inputs=x[None], targets=y[None]) for x, y in chunks]

    srv = start_server()
    model = srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    assert [m.cell for m in model.spec.members] == [pb.CELL_UNSPECIFIED, pb.CELL_GRU]
    assert model.spec.members[1].optimizer.lr == pytest.approx(0.05)
    assert {p.name.split(".")[1] for p in model.parameters} == {"0", "1"}
    assert model.num_parameters == engine.num_parameters
    responses = list(srv.stub.Stream(iter([request("ens", "s", i + 1, *c) for i, c in enumerate(chunks[:8])])))
    for resp, (preds, losses) in zip(responses, expected[:8]):
        assert not resp.HasField("error")
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds.ravel())
        np.testing.assert_array_equal(np.asarray(resp.losses, np.float32), losses.ravel())
    info = _info(srv.stub)
    assert [m.index for m in info.stats.members] == [0, 1]
    assert sum(m.weight for m in info.stats.members) == pytest.approx(1.0)
    assert all(math.isfinite(m.running_loss) and 0 < m.weight < 1 for m in info.stats.members)
    assert _member_stats(responses[-1].stats) == _member_stats(info.stats)
    text = _scrape(srv)
    for member in ("0", "1"):
        assert f'rnnstream_member_loss_count{{member="{member}",model="ens"}} 32.0' in text
        assert f'rnnstream_member_weight_count{{member="{member}",model="ens"}} 8.0' in text
    assert "stream_id" not in text
    srv.stop()  # graceful: everything checkpointed

    srv = start_server()
    before = _info(srv.stub)  # from the store: the stream is not in memory yet
    assert not before.in_memory and before.acked_seq == 8
    assert _member_stats(before.stats) == _member_stats(info.stats)
    responses = list(srv.stub.Stream(iter([request("ens", "s", i + 1, *c) for i, c in enumerate(chunks)])))
    assert [r.duplicate for r in responses] == [True] * 8 + [False] * 4
    for resp, (preds, losses) in zip(responses[8:], expected[8:]):
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds.ravel())
        np.testing.assert_array_equal(np.asarray(resp.losses, np.float32), losses.ravel())
    got, want = weights(srv.stub, "ens"), engine.state_dict()
    assert set(got) == set(want) and all(name.startswith("members.") for name in got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    stats = engine.stream_stats("s")
    assert _member_stats(_info(srv.stub).stats) == [
        (m["index"], m["running_loss"], m["weight"]) for m in stats["members"]]


@pytest.mark.parametrize("change,words", [
    (dict(members=[pb.MemberSpec(), pb.MemberSpec(hidden_sizes=[0])]), "members[1].hidden_sizes"),
    (dict(members=[pb.MemberSpec()] * 9), "at most 8"),
    (dict(members=[pb.MemberSpec(), pb.MemberSpec(tbptt_k1=8, tbptt_k2=4)]), "members[1]: tbptt_k1"),
    (dict(members=[pb.MemberSpec(), pb.MemberSpec(optimizer=pb.Optimizer(lr=-1.0))]), "members[1].optimizer.lr"),
    (dict(members=[pb.MemberSpec(), pb.MemberSpec()], hedge_rate=-1.0), "hedge_rate"),
])
def test_bad_member_specs_are_refused(server, change, words):
    with pytest.raises(grpc.RpcError) as info:
        server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("bad", **change)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
    assert code_of(server.stub.GetModel, pb.GetModelRequest(name="bad")) == grpc.StatusCode.NOT_FOUND


def test_kill9_then_replay_continues_the_members_and_their_weights_exactly(spawn, tmp_path):
    data = tmp_path / "data"
    spec = make_spec("ens", members=MEMBERS, sharing=pb.SHARING_PER_STREAM)
    chunks = make_chunks(16, 4)
    srv = spawn(data, "--checkpoint-interval-s", "0.2")
    srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    for seq in range(1, 7):
        srv.stub.Predict(request("ens", "s", seq, *chunks[seq - 1]))
    deadline = time.monotonic() + 15
    while _info(srv.stub).durable_seq < 6:
        assert time.monotonic() < deadline, "no checkpoint reached seq 6"
        time.sleep(0.05)
    list(srv.stub.Stream(iter([request("ens", "s", seq, *chunks[seq - 1]) for seq in range(7, 11)])))
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)

    srv = spawn(data, "--checkpoint-interval-s", "0.2")
    durable = _info(srv.stub).durable_seq
    assert 6 <= durable <= 10
    replay = list(srv.stub.Stream(iter([request("ens", "s", seq, *chunks[seq - 1]) for seq in range(1, 17)])))
    assert [r.duplicate for r in replay] == [seq <= durable for seq in range(1, 17)]
    engine = make_engine(Spec(**spec_kwargs(spec)))
    expected = [engine.step(["s"], inputs=x[None], targets=y[None]) for x, y in chunks]
    for resp, (preds, _) in zip(replay[durable:], expected[durable:]):
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds.ravel())
    got, want = weights(srv.stub, "ens", "s"), engine.state_dict("s")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert _member_stats(_info(srv.stub).stats) == [
        (m["index"], m["running_loss"], m["weight"]) for m in engine.stream_stats("s")["members"]]


def test_import_weights_by_member_name_and_delete(server):
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("ens", members=MEMBERS)))
    w = weights(stub, "ens")
    changed = {name: a * 0.5 for name, a in w.items()}
    tensors = [pb.Tensor(name=n, shape=list(a.shape), data=a.ravel().tolist()) for n, a in changed.items()]
    stub.ImportWeights(pb.ImportWeightsRequest(model="ens", tensors=tensors))
    assert all(np.array_equal(weights(stub, "ens")[n], a) for n, a in changed.items())
    plain_names = [pb.Tensor(name=n.split(".", 2)[2], shape=t.shape, data=t.data) for n, t in zip(changed, tensors)]
    assert code_of(stub.ImportWeights, pb.ImportWeightsRequest(model="ens", tensors=plain_names)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert all(np.array_equal(weights(stub, "ens")[n], a) for n, a in changed.items())
    # a deleted model's member series stop being exported
    stub.Predict(request("ens", "s", 1, *make_chunks(1, 3)[0]))
    assert 'rnnstream_member_weight_count{member="1",model="ens"} 1.0' in _scrape(server)
    stub.DeleteModel(pb.DeleteModelRequest(name="ens"))
    assert "rnnstream_member_weight_count{" not in _scrape(server)


def _scrape(server) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()
