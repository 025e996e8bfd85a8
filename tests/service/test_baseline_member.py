"""The persistence member over the real server on loopback: created with it, streamed exactly
like the engine, listed in GetStream's member stats, no weights exported for it, resumed
after a restart; bad baseline members refused with INVALID_ARGUMENT; the SDK converts it."""
import grpc
import numpy as np
import pytest

from rnnstream.clients.convert import _member_from_proto, _member_to_proto
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.convert import spec_kwargs
from rnnstream.service.engine import EnsembleEngine, Spec, make_engine
from tests.service.conftest import code_of, make_chunks, make_spec, request, weights

MEMBERS = [pb.MemberSpec(), pb.MemberSpec(baseline="last_target")]


def _stats(stub):
    info = stub.GetStream(pb.GetStreamRequest(model="p", stream_id="s"))
    return [(m.index, m.running_loss, m.weight) for m in info.stats.members]


def test_persistence_member_streams_reports_and_resumes(start_server):
    spec = make_spec("p", members=MEMBERS)
    chunks = make_chunks(10, 4)
    engine = make_engine(Spec(**spec_kwargs(spec)))
    assert isinstance(engine, EnsembleEngine)
    expected = [engine.step(["s"], inputs=x[None], targets=y[None]) for x, y in chunks]

    srv = start_server()
    model = srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    assert [m.baseline for m in model.spec.members] == ["", "last_target"]
    assert {p.name.split(".")[1] for p in model.parameters} == {"0"}
    responses = list(srv.stub.Stream(iter([request("p", "s", i + 1, *c)
                                           for i, c in enumerate(chunks[:6])])))
    for resp, (preds, losses) in zip(responses, expected[:6]):
        assert not resp.HasField("error")
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds.ravel())
        np.testing.assert_array_equal(np.asarray(resp.losses, np.float32), losses.ravel())
    stats = _stats(srv.stub)
    assert [k for k, _, _ in stats] == [0, 1] and sum(w for _, _, w in stats) == pytest.approx(1)
    assert set(weights(srv.stub, "p")) == set(engine.state_dict())
    srv.stop()  # graceful: everything checkpointed

    srv = start_server()
    assert _stats(srv.stub) == stats
    responses = list(srv.stub.Stream(iter([request("p", "s", i + 7, *c)
                                           for i, c in enumerate(chunks[6:])])))
    for resp, (preds, losses) in zip(responses, expected[6:]):
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds.ravel())
        np.testing.assert_array_equal(np.asarray(resp.losses, np.float32), losses.ravel())
    want = engine.stream_stats("s")["members"]
    assert _stats(srv.stub) == [(m["index"], m["running_loss"], m["weight"]) for m in want]


@pytest.mark.parametrize("change,words", [
    (dict(members=[pb.MemberSpec(baseline="last_target")]), "at least one network member"),
    (dict(members=[pb.MemberSpec(), pb.MemberSpec(baseline="median")]), "members[1].baseline"),
    (dict(members=[pb.MemberSpec(), pb.MemberSpec(baseline="last_target", tbptt_k1=2)]),
     "it sets nothing else, got tbptt_k1"),
    (dict(members=MEMBERS, output_size=0, num_classes=3), "regression model"),
    (dict(members=[pb.MemberSpec(), pb.MemberSpec(baseline="tree")]),
     "members[1]: the baseline tree splits on labelled dense inputs"),
])
def test_bad_baseline_members_are_refused(server, change, words):
    with pytest.raises(grpc.RpcError) as info:
        server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("bad", **change)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
    assert code_of(server.stub.GetModel, pb.GetModelRequest(name="bad")) == grpc.StatusCode.NOT_FOUND


def test_sdk_converts_the_baseline_member():
    msg = _member_to_proto({"baseline": "last_target"}, 1)
    assert msg.baseline == "last_target"
    assert _member_from_proto(msg) == {"baseline": "last_target"}
    assert _member_from_proto(_member_to_proto({"lr": 0.1}, 0)).get("baseline") is None
