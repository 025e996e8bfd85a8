"""The memory budget: idle streams move to the store to make room; what still does not fit is
refused with RESOURCE_EXHAUSTED naming the budget, and changes nothing; a limit on models."""
from __future__ import annotations

import queue
import threading

import grpc
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import code_of, make_chunks, make_spec, request


def _open_call(stub, model, stream_id):
    """A Stream call kept open (its stream attached) until ``None`` is put on the queue."""
    q: queue.Queue = queue.Queue()
    answers = stub.Stream(iter(q.get, None), timeout=60)
    (x, y), = make_chunks(1, 4)
    q.put(request(model, stream_id, 1, x, y))
    first = next(answers)
    return q, answers, first


def test_idle_streams_make_room_and_what_does_not_fit_is_refused(start_server):
    srv = start_server()
    stub, registry = srv.stub, srv.server.registry
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m", hidden_sizes=[16], algorithm=pb.ALGORITHM_RTRL)))
    host = registry.hosts["m"]
    assert host.stream_bytes > 0 and host.model_bytes > 0
    # room for the model and exactly three streams
    registry.memory_budget = registry.memory_used() + 3 * host.stream_bytes + host.stream_bytes // 2
    (x, y), = make_chunks(1, 4)
    for sid in ("a", "b", "c"):
        assert not stub.Predict(request("m", sid, 1, x, y)).HasField("error")
    assert stub.Predict(request("m", "d", 1, x, y)).acked_seq == 1  # "a", the least recently used, went to the store
    assert not stub.GetStream(pb.GetStreamRequest(model="m", stream_id="a")).in_memory
    assert stub.GetStream(pb.GetStreamRequest(model="m", stream_id="d")).in_memory
    assert registry.memory_used() <= registry.memory_budget
    assert srv.server.metrics.registry.get_sample_value("rnnstream_memory_used_bytes") == registry.memory_used()

    # three streams held by open calls are not idle: a fourth is refused, naming the budget
    calls = [_open_call(stub, "m", sid) for sid in ("b", "c", "d")]
    for _, _, first in calls:
        assert not first.HasField("error")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request("m", "e", 1, x, y))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_memory_bytes" in info.value.details()
    assert code_of(stub.GetStream, pb.GetStreamRequest(model="m", stream_id="e")) == grpc.StatusCode.NOT_FOUND
    for q, answers, _ in calls:
        q.put(None)
        list(answers)
    # once the calls end, their streams are idle again and the new one fits
    assert stub.Predict(request("m", "e", 1, x, y)).acked_seq == 1
    # "a" comes back from the store with its seq
    assert stub.Predict(request("m", "a", 2, x, y)).acked_seq == 2


def test_a_model_that_does_not_fit_and_the_model_limit_are_refused(start_server):
    srv = start_server(max_models=2)
    stub, registry = srv.stub, srv.server.registry
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("small")))
    registry.memory_budget = registry.memory_used() + 100_000
    assert code_of(stub.CreateModel, pb.CreateModelRequest(spec=make_spec("huge", hidden_sizes=[512]))) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [m.spec.name for m in stub.ListModels(pb.ListModelsRequest()).models] == ["small"]
    registry.memory_budget = 1 << 40
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("second")))
    try:
        stub.CreateModel(pb.CreateModelRequest(spec=make_spec("third")))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_models" in exc.details()
    else:
        raise AssertionError("a third model was accepted with max_models=2")



def test_a_byte_models_context_table_counts_against_the_budget(start_server):
    # A shape-only byte model gets the context-mixing member, whose shared table (2^12 slots
    # here) is model memory beside the network's weights: counted at create and while held.
    srv = start_server()
    stub, registry = srv.stub, srv.server.registry
    byte_spec = dict(vocab_size=256, num_classes=256, target_mode=pb.TARGET_MODE_NEXT_INPUT, context_table_bits=12)
    stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(name="bytes", **byte_spec)))
    host = registry.hosts["bytes"]
    assert [m.get("baseline") for m in host.spec.members if m.get("baseline")] == ["context"]
    table = 4 * (1 << 12)
    assert host.model_bytes >= 4 * host.engine.num_parameters * 4 + table
    # room for everything but the table: refused, naming the budget; nothing created
    need_without_table = host.model_bytes - table + host.stream_bytes
    registry.memory_budget = registry.memory_used() + need_without_table + table // 2
    assert code_of(stub.CreateModel, pb.CreateModelRequest(spec=pb.ModelSpec(name="bytes-2", **byte_spec))) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "bytes-2" not in registry.hosts
    registry.memory_budget = registry.memory_used() + host.model_bytes + host.stream_bytes + table
    stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(name="bytes-2", **byte_spec)))
