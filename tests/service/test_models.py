"""The model registry over gRPC: validation, ALREADY_EXISTS, NOT_FOUND, weights in and out."""
import grpc
import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import code_of, make_spec, weights


@pytest.mark.parametrize("change, words", [
    (dict(hidden_sizes=[8, 0]), "hidden_sizes"),
    (dict(output_taps=[0, 1]), "output_taps"),
    (dict(input_size=0), "input_size"),
    (dict(output_size=0), "output_size"),
    (dict(num_classes=3), "exactly one"),
    (dict(tbptt_k1=8, tbptt_k2=4), "tbptt_k1"),
    (dict(optimizer=pb.Optimizer(kind=pb.OPTIMIZER_KIND_SGD, lr=-0.1)), "lr"),
    (dict(cell=42), "cell"),
    (dict(algorithm=9), "algorithm"),
    (dict(name="bad name!"), "name"),
])
def test_create_model_refuses_bad_specs(server, change, words):
    with pytest.raises(grpc.RpcError) as info:
        server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec(**change)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
    assert not server.stub.ListModels(pb.ListModelsRequest()).models


def test_create_get_list_delete(server):
    stub = server.stub
    model = stub.CreateModel(pb.CreateModelRequest(spec=make_spec("a")))
    assert model.spec.name == "a" and model.num_parameters > 0
    names = [p.name for p in model.parameters]
    assert "weight_ih_l0" in names and "head.weight" in names
    assert model.spec.optimizer.lr == pytest.approx(0.01) and model.spec.tbptt_k2 == 4
    assert code_of(stub.CreateModel, pb.CreateModelRequest(spec=make_spec("a"))) == grpc.StatusCode.ALREADY_EXISTS
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("b")))
    assert [m.spec.name for m in stub.ListModels(pb.ListModelsRequest()).models] == ["a", "b"]
    assert stub.GetModel(pb.GetModelRequest(name="b")).spec.name == "b"
    stub.DeleteModel(pb.DeleteModelRequest(name="a"))
    assert code_of(stub.GetModel, pb.GetModelRequest(name="a")) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.DeleteModel, pb.DeleteModelRequest(name="a")) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.ExportWeights, pb.ExportWeightsRequest(model="a")) == grpc.StatusCode.NOT_FOUND


def test_rtrl_over_the_memory_limit_is_refused_with_a_way_out(start_server):
    srv = start_server(max_stream_memory_bytes=1_000_000)
    spec = make_spec("big", algorithm=pb.ALGORITHM_RTRL, hidden_sizes=[64])
    with pytest.raises(grpc.RpcError) as info:
        srv.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_stream_memory_bytes" in info.value.details() and "SNAP1" in info.value.details()
    srv.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("big", algorithm=pb.ALGORITHM_SNAP1, hidden_sizes=[64])))


def test_weights_round_trip_and_bad_imports(server):
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")))
    before = weights(stub, "m")
    changed = {k: (v + 0.5).astype(np.float32) for k, v in before.items()}
    tensors = [pb.Tensor(name=k, shape=list(v.shape), data=v.ravel().tolist()) for k, v in changed.items()]
    stub.ImportWeights(pb.ImportWeightsRequest(model="m", tensors=tensors))
    after = weights(stub, "m")
    assert all(np.array_equal(after[k], changed[k]) for k in before)
    bad_shape = list(tensors)
    bad_shape[0] = pb.Tensor(name=tensors[0].name, shape=[1, 1], data=[0.0])
    for bad in (bad_shape, tensors[1:], tensors + [pb.Tensor(name="nope", shape=[1], data=[1.0])],
                [pb.Tensor(name=t.name, shape=t.shape, data=[float("nan")] * len(t.data)) for t in tensors]):
        assert code_of(stub.ImportWeights, pb.ImportWeightsRequest(model="m", tensors=bad)) \
            == grpc.StatusCode.INVALID_ARGUMENT
    assert all(np.array_equal(weights(stub, "m")[k], changed[k]) for k in before)


def test_models_and_weights_survive_a_restart(start_server, tmp_path):
    srv = start_server()
    srv.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("keep")))
    w = weights(srv.stub, "keep")
    srv.stop()
    srv2 = start_server()
    assert srv2.stub.GetModel(pb.GetModelRequest(name="keep")).spec.name == "keep"
    assert all(np.array_equal(weights(srv2.stub, "keep")[k], w[k]) for k in w)


@pytest.mark.parametrize("algorithm", [v for v in pb.Algorithm.values() if v])
@pytest.mark.parametrize("cell", [v for v in pb.Cell.values() if v], ids=pb.Cell.Name)
def test_every_cell_and_rule_serves_over_the_wire(server, cell, algorithm):
    """Each cell of the proto (the registry's, tests/kernels/test_registry.py) with each rule:
    created, streamed and exported over gRPC, answering what the engine answers, its weights
    in the registry's shapes (an IndRNN's weight_hh is a vector)."""
    from rnnstream.kernels import registry
    from tests.service.conftest import engine_run, make_chunks, request

    spec = make_spec("m", cell=cell, algorithm=algorithm, hidden_sizes=[4], tbptt_k1=2, tbptt_k2=2)
    server.stub.CreateModel(pb.CreateModelRequest(spec=spec))
    chunks = make_chunks(2, 3)
    responses = list(server.stub.Stream(iter(
        [request("m", "s", i + 1, x, y) for i, (x, y) in enumerate(chunks)])))
    _, outs = engine_run(spec, {"s": chunks})
    for resp, (preds, _) in zip(responses, outs["s"]):
        assert not resp.HasField("error")
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds[0].ravel())
    exported = weights(server.stub, "m")
    c = registry.CELLS[pb.Cell.Name(cell)[len("CELL_"):].lower()]
    recurrent_in = 1 if c.feeds_back_output else 4  # Jordan's layer 0 feeds back the output
    assert exported["weight_hh_l0"].shape == ((4 * c.n_gates,) if c.diagonal
                                              else (4 * c.n_gates, recurrent_in))
