"""Late labels and segment resets through the real gRPC server: the same learning as the
engine driven directly, first_step in every response, refusals that change nothing, and the
spec field round-tripping."""
import grpc
import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import make_chunks, make_spec, request, weights


def _labels(steps, ys):
    return [pb.Label(step=int(s), target=np.ravel(y).tolist()) for s, y in zip(steps, ys)]


def test_late_labels_learn_like_the_engine(server):
    from rnnstream.service.convert import spec_kwargs
    from rnnstream.service.engine import Engine, Spec

    spec = make_spec("m", max_label_delay=6, tbptt_k1=2, tbptt_k2=3)
    model = server.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    assert model.spec.max_label_delay == 6
    chunks = make_chunks(4, 3)
    # chunk i's steps come without targets; their labels ride on chunk i + 1, out of order;
    # a last request carries only labels and ends the segment
    msgs, calls = [], []
    for i, (x, _) in enumerate(chunks):
        steps, ys = [], []
        if i:
            steps = [3 * (i - 1) + 2, 3 * (i - 1), 3 * (i - 1) + 1]
            ys = [chunks[i - 1][1][s - 3 * (i - 1)] for s in steps]
        msgs.append(request("m", "s", i + 1, x, labels=_labels(steps, ys)))
        calls.append(dict(inputs=x[None], labels=[(np.array(steps), np.array(ys))] if steps else None))
    last = [(9 + j, chunks[3][1][j]) for j in range(3)]
    msgs.append(pb.StreamRequest(model="m", stream_id="s", seq=5, reset_after=True,
                                 labels=_labels(*zip(*last))))
    calls.append(dict(labels=[(np.array([s for s, _ in last]), np.array([y for _, y in last]))],
                      reset_after=True))
    responses = list(server.stub.Stream(iter(msgs)))

    engine = Engine(Spec(**spec_kwargs(spec)))
    for i, (resp, kw) in enumerate(zip(responses, calls)):
        assert not resp.HasField("error"), resp.error.message
        preds, losses = engine.step(["s"], **kw)
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds[0].ravel())
        assert resp.first_step == 3 * i
        assert len(resp.losses) == (3 if i < 4 else 0)
        assert np.isnan(resp.losses).all()  # these steps wait for their labels
    assert responses[-1].stats.steps == 12 and responses[-1].stats.updates == engine.stream_stats("s")["updates"] > 0
    got = weights(server.stub, "m")
    for k, v in engine.state_dict().items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    # after the reset the stream's steps run on from step 12, from a zero state
    more = server.stub.Predict(request("m", "s", 6, chunks[0][0]))
    assert more.first_step == 12
    np.testing.assert_array_equal(np.asarray(more.predictions, np.float32),
                                  engine.step(["s"], inputs=chunks[0][0][None])[0][0].ravel())


def _refusal(server, req) -> str:
    """The message of an INVALID_ARGUMENT answer to a Predict call."""
    try:
        server.stub.Predict(req)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        return err.details()
    raise AssertionError(f"accepted: {req}")


def test_bad_labels_are_refused_and_change_nothing(server):
    server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m", max_label_delay=2)))
    server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("plain")))
    (x, y), = make_chunks(1, 5)
    first = server.stub.Predict(request("m", "s", 1, x))
    assert first.first_step == 0 and not first.HasField("error")
    before = weights(server.stub, "m")
    bad = [
        ([1], [y[1]], "too late"),
        ([7], [y[1]], "in the future"),
        ([4, 4], [y[4], y[4]], "twice"),
        ([4], [np.zeros(3)], "number of target values"),
    ]
    for steps, ys, msg in bad:
        assert msg in _refusal(server, pb.StreamRequest(model="m", stream_id="s", seq=2,
                                                        labels=_labels(steps, ys)))
    assert server.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s")).acked_seq == 1
    for k, v in weights(server.stub, "m").items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    ok = server.stub.Predict(pb.StreamRequest(model="m", stream_id="s", seq=2, labels=_labels([4], [y[4]])))
    assert not ok.HasField("error") and ok.acked_seq == 2 and ok.stats.steps == 5
    assert "already has its target" in _refusal(server, pb.StreamRequest(
        model="m", stream_id="s", seq=3, labels=_labels([4], [y[4]])))
    assert "max_label_delay" in _refusal(server, pb.StreamRequest(
        model="plain", stream_id="s", seq=1, inputs=x.ravel().tolist(), labels=_labels([0], [y[0]])))
    rtrl = make_spec("r", algorithm=pb.ALGORITHM_RTRL, max_label_delay=2)
    try:
        server.stub.CreateModel(pb.CreateModelRequest(spec=rtrl))
        raise AssertionError("RTRL with max_label_delay was accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "RTRL" in err.details()


def test_waiting_steps_survive_a_restart(start_server):
    """Steps still waiting for labels, and a pending TBPTT loss, are part of the stream's
    checkpoint: after a graceful restart their labels are learned as if nothing happened."""
    from rnnstream.service.convert import spec_kwargs
    from rnnstream.service.engine import Engine, Spec

    spec = make_spec("m", max_label_delay=8, tbptt_k1=2, tbptt_k2=2)
    srv = start_server()
    srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    (x, y), = make_chunks(1, 6)
    srv.stub.Predict(request("m", "s", 1, x))
    srv.stub.Predict(pb.StreamRequest(model="m", stream_id="s", seq=2, labels=_labels([0], [y[0]])))
    srv.stop()
    srv = start_server()
    resp = srv.stub.Predict(pb.StreamRequest(model="m", stream_id="s", seq=3,
                                             labels=_labels([5, 3, 1], [y[5], y[3], y[1]])))
    assert not resp.HasField("error") and resp.stats.steps == 6

    engine = Engine(Spec(**spec_kwargs(spec)))
    engine.step(["s"], inputs=x[None])
    engine.step(["s"], labels=[([0], y[[0]])])
    engine.step(["s"], labels=[([5, 3, 1], y[[5, 3, 1]])])
    assert resp.stats.updates == engine.stream_stats("s")["updates"] == 2
    got = weights(srv.stub, "m")
    for k, v in engine.state_dict().items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
