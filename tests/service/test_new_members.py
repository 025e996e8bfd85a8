"""The scaled seasonal, nearest-neighbour, Hoeffding tree and context-mixing members over the real server on
loopback: a model given only its shape gets them, streams exactly like the engine, and after a
graceful restart (checkpoint in SQLite) continues exactly where it was."""
import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.convert import spec_kwargs
from rnnstream.service.engine import Spec, make_engine

TEXT = np.frombuffer(b"the cat sat on the mat; the cat sat on the hat. " * 6, np.uint8).astype(np.int64)


def _case(kind):
    rng = np.random.default_rng(1)
    if kind == "seasonal_scaled":
        spec = pb.ModelSpec(name="m", input_size=2, output_size=1)
        y = np.tile(rng.standard_normal(12), 12)[:, None].astype(np.float32)
        x = rng.standard_normal((len(y), 2)).astype(np.float32)
        chunks = [dict(inputs=x[a:a + 16], targets=y[a:a + 16]) for a in range(0, 144, 16)]
    elif kind == "knn":
        spec = pb.ModelSpec(name="m", input_size=2, num_classes=2)
        x = rng.uniform(-2, 2, (120, 2)).astype(np.float32)
        c = (np.hypot(x[:, 0], x[:, 1]) > 1.2).astype(np.int64)
        chunks = [dict(inputs=x[a:a + 15], target_classes=c[a:a + 15]) for a in range(0, 120, 15)]
    elif kind == "tree":  # 1200 steps: the tree splits at step 600, before the restart, and at 920
        spec = pb.ModelSpec(name="m", input_size=3, num_classes=3)
        x = (rng.standard_normal((1200, 3)) * [1.0, 100.0, 5.0]).astype(np.float32)
        c = np.where(x[:, 1] > 30.0, 2, (x[:, 0] > 0.2).astype(np.int64))
        chunks = [dict(inputs=x[a:a + 40], target_classes=c[a:a + 40]) for a in range(0, 1200, 40)]
    else:
        spec = pb.ModelSpec(name="m", vocab_size=256, num_classes=256,
                            target_mode=pb.TARGET_MODE_NEXT_INPUT)
        chunks = [dict(tokens=TEXT[a:a + 32]) for a in range(0, len(TEXT), 32)]
    return spec, chunks


def _request(seq, chunk):
    req = pb.StreamRequest(model="m", stream_id="s", seq=seq)
    if "inputs" in chunk:
        req.inputs.extend(np.ravel(chunk["inputs"]).tolist())
    if "tokens" in chunk:
        req.tokens.extend(chunk["tokens"].tolist())
    if "targets" in chunk:
        req.targets.extend(np.ravel(chunk["targets"]).tolist())
    if "target_classes" in chunk:
        req.target_classes.extend(chunk["target_classes"].tolist())
    return req


@pytest.mark.parametrize("kind", ["seasonal_scaled", "knn", "context", "tree"])
def test_shape_only_model_gets_the_member_streams_and_resumes(start_server, kind):
    spec, chunks = _case(kind)
    engine = make_engine(Spec(**spec_kwargs(spec)))
    expected = [engine.step(["s"], **{k: v[None] for k, v in c.items()}) for c in chunks]
    if kind == "tree":
        assert engine.members[-1]._model["nodes"] == 5
    half = len(chunks) // 2

    srv = start_server()
    model = srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    assert kind in [m.baseline for m in model.spec.members]
    assert ("knn_wide" in [m.baseline for m in model.spec.members]) == (kind in ("knn", "tree"))
    got = list(srv.stub.Stream(iter([_request(i + 1, c) for i, c in enumerate(chunks[:half])])))
    stats = srv.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s")).stats
    srv.stop()  # graceful: everything checkpointed

    srv = start_server()
    again = srv.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s")).stats
    assert [(m.index, m.running_loss, m.weight) for m in again.members] == \
        [(m.index, m.running_loss, m.weight) for m in stats.members]
    got += list(srv.stub.Stream(iter([_request(half + i + 1, c)
                                      for i, c in enumerate(chunks[half:])])))
    for resp, (preds, losses) in zip(got, expected):
        assert not resp.HasField("error")
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds.ravel())
        np.testing.assert_array_equal(np.asarray(resp.losses, np.float32), losses.ravel())
    assert len(got) == len(chunks)


def test_context_table_bits_round_trips_the_wire_and_bad_values_are_refused(server):
    import grpc
    from rnnstream.clients.convert import spec_from_proto, spec_to_proto
    from rnnstream.service.convert import spec_to_proto as server_to_proto
    spec = pb.ModelSpec(name="m", vocab_size=256, num_classes=256,
                        target_mode=pb.TARGET_MODE_NEXT_INPUT, context_table_bits=16)
    model = server.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    assert model.spec.context_table_bits == 16
    shape_only = pb.ModelSpec(name="d", vocab_size=256, num_classes=256,
                              target_mode=pb.TARGET_MODE_NEXT_INPUT)
    assert server.stub.CreateModel(pb.CreateModelRequest(spec=shape_only)).spec.context_table_bits == 22
    back = Spec(**spec_kwargs(server_to_proto(Spec(**spec_kwargs(spec)))))
    assert back.context_table_bits == 16
    assert spec_to_proto(spec_from_proto(model.spec)).context_table_bits == 16
    with pytest.raises(grpc.RpcError) as info:
        server.stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(
            name="bad", vocab_size=256, num_classes=256, target_mode=pb.TARGET_MODE_NEXT_INPUT,
            context_table_bits=40)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context_table_bits must be in 10..26" in info.value.details()
