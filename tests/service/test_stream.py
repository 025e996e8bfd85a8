"""Stream and Predict against a real server: learning equals the engine run directly, bad
chunks change nothing, replays are skipped, limits and idle eviction."""
import threading
import time

import grpc
import numpy as np
import pytest

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.service.conftest import code_of, engine_run, make_chunks, make_spec, request, weights


def _create(stub, spec):
    stub.CreateModel(pb.CreateModelRequest(spec=spec))


def _same_weights(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], np.asarray(want[k], np.float32), err_msg=k)


def test_stream_learns_exactly_like_the_engine(server):
    spec = make_spec("m")
    _create(server.stub, spec)
    chunks = make_chunks(6, 5)
    responses = list(server.stub.Stream(iter(
        [request("m", "s1", i + 1, x, y) for i, (x, y) in enumerate(chunks)])))
    engine, outs = engine_run(spec, {"s1": chunks})
    for i, resp in enumerate(responses):
        preds, losses = outs["s1"][i]
        assert (resp.seq, resp.acked_seq, resp.duplicate, resp.HasField("error")) == (i + 1, i + 1, False, False)
        np.testing.assert_array_equal(np.asarray(resp.predictions, np.float32), preds[0].ravel())
        np.testing.assert_array_equal(np.asarray(resp.losses, np.float32), losses[0].ravel())
    assert responses[-1].stats.steps == 30 and responses[-1].stats.updates > 0
    _same_weights(weights(server.stub, "m"), engine.state_dict())


def test_bad_chunks_are_answered_in_the_stream_and_change_nothing(start_server):
    srv = start_server(max_chunk_steps=16)
    spec = make_spec("m")
    _create(srv.stub, spec)
    (x1, y1), (x2, y2), (x3, y3) = make_chunks(3, 4)
    nan = x2.copy()
    nan[1, 0] = np.nan
    long_x, long_y = make_chunks(1, 17)[0]
    msgs = [
        request("m", "s", 1, x1, y1),
        (request("m", "s", 2, x2[:, :1], y2), grpc.StatusCode.INVALID_ARGUMENT),  # wrong shape
        (request("m", "s", 2, nan, y2), grpc.StatusCode.INVALID_ARGUMENT),         # NaN input
        (request("m", "s", 2, x2, y2[:3]), grpc.StatusCode.INVALID_ARGUMENT),      # targets too short
        (request("m", "s", 2, x2), grpc.StatusCode.INVALID_ARGUMENT),              # learning without targets
        (request("nope", "s", 2, x2, y2), grpc.StatusCode.NOT_FOUND),              # unknown model
        (request("m", "s", 0, x2, y2), grpc.StatusCode.INVALID_ARGUMENT),          # seq 0
        (request("m", "s", 2, long_x, long_y), grpc.StatusCode.RESOURCE_EXHAUSTED),  # over max_chunk_steps
        request("m", "s", 2, x2, y2),
        request("m", "s", 3, x3, y3),
    ]
    expected = [m[1] if isinstance(m, tuple) else None for m in msgs]
    reqs = [m[0] if isinstance(m, tuple) else m for m in msgs]
    responses = list(srv.stub.Stream(iter(reqs)))
    assert len(responses) == len(reqs)
    for resp, code in zip(responses, expected):
        if code is None:
            assert not resp.HasField("error")
        else:
            assert resp.error.code == code.value[0], resp.error.message
            assert resp.error.message and not resp.predictions
    assert responses[-1].acked_seq == 3 and responses[-1].stats.steps == 12
    engine, _ = engine_run(spec, {"s": [(x1, y1), (x2, y2), (x3, y3)]})
    _same_weights(weights(srv.stub, "m"), engine.state_dict())
    assert srv.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s")).acked_seq == 3
    # Later messages may leave model and stream_id empty; a call's first message may not.
    first, = srv.stub.Stream(iter([request("m", "", 1, x1, y1)]))
    assert first.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "stream_id" in first.error.message


def test_replays_are_duplicates_and_gaps_are_fine(server):
    spec = make_spec("m")
    _create(server.stub, spec)
    c = make_chunks(4, 3)
    seqs = [1, 2, 2, 1, 5, 3, 9]
    data = {1: c[0], 2: c[1], 5: c[2], 9: c[3], 3: c[3]}
    responses = list(server.stub.Stream(iter([request("m", "s", s, *data[s]) for s in seqs])))
    assert [r.duplicate for r in responses] == [False, False, True, True, False, True, False]
    assert [r.acked_seq for r in responses] == [1, 2, 2, 2, 5, 5, 9]
    assert not responses[2].predictions
    engine, _ = engine_run(spec, {"s": [c[0], c[1], c[2], c[3]]})
    _same_weights(weights(server.stub, "m"), engine.state_dict())


def test_forecast_feeds_predictions_back(server):
    spec = make_spec("f", output_size=2)
    _create(server.stub, spec)
    (x, _), = make_chunks(1, 5)
    y = np.roll(x, -1, axis=0)
    resp = next(server.stub.Stream(iter([request("f", "s", 1, x, y, horizon=7)])))
    engine, _ = engine_run(spec, {"s": [(x, y)]})
    assert len(resp.forecast) == 7 * 2
    np.testing.assert_array_equal(np.asarray(resp.forecast, np.float32), engine.forecast("s", 7).ravel())
    bad = server.stub.Predict
    _create(server.stub, make_spec("g"))  # output 1, input 2: cannot feed back
    assert code_of(bad, request("g", "s", 1, x, x[:, :1], horizon=3)) == grpc.StatusCode.INVALID_ARGUMENT


def test_tokens_and_classes(server):
    spec = make_spec("lm", vocab_size=5, input_size=3, output_size=0, num_classes=5, target_mode=pb.TARGET_MODE_NEXT_INPUT)
    _create(server.stub, spec)
    ok = pb.StreamRequest(model="lm", stream_id="t", seq=1, tokens=[0, 1, 2, 3, 4, 0], horizon=2)
    bad = pb.StreamRequest(model="lm", stream_id="t", seq=2, tokens=[1, 5])
    floats = pb.StreamRequest(model="lm", stream_id="t", seq=2, inputs=[0.1, 0.2, 0.3])
    first, out_of_range, wrong_kind = server.stub.Stream(iter([ok, bad, floats]))
    assert len(first.predictions) == 6 * 5 and len(first.forecast) == 2 * 5 and np.isnan(first.losses[0])
    np.testing.assert_allclose(np.asarray(first.predictions).reshape(6, 5).sum(axis=1), 1.0, rtol=1e-5)
    assert out_of_range.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "range" in out_of_range.error.message
    assert wrong_kind.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server.stub.GetStream(pb.GetStreamRequest(model="lm", stream_id="t")).acked_seq == 1


def test_predict_is_one_chunk_with_status_codes(start_server):
    srv = start_server(max_chunk_steps=8)
    spec = make_spec("m")
    _create(srv.stub, spec)
    (x, y), = make_chunks(1, 4)
    before = weights(srv.stub, "m")
    resp = srv.stub.Predict(request("m", "p", 1, x, predict_only=True))
    assert len(resp.predictions) == 4 and resp.acked_seq == 1
    _same_weights(weights(srv.stub, "m"), before)  # predict_only trains nothing
    assert srv.stub.Predict(request("m", "p", 1, x, y)).duplicate
    assert code_of(srv.stub.Predict, request("zz", "p", 2, x, y)) == grpc.StatusCode.NOT_FOUND
    assert code_of(srv.stub.Predict, request("m", "p", 2, x[:, :1], y)) == grpc.StatusCode.INVALID_ARGUMENT
    long_x, long_y = make_chunks(1, 9)[0]
    assert code_of(srv.stub.Predict, request("m", "p", 2, long_x, long_y)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert srv.stub.Predict(request("m", "p", 2, x, y)).acked_seq == 2


def test_stream_limits_and_message_size(start_server):
    srv = start_server(max_streams_per_model=2, max_streams_total=3, max_message_bytes=4096)
    _create(srv.stub, make_spec("a"))
    _create(srv.stub, make_spec("b"))
    (x, y), = make_chunks(1, 2)
    for model, sid in (("a", "1"), ("a", "2"), ("b", "1")):
        assert not srv.stub.Predict(request(model, sid, 1, x, y)).HasField("error")
    with pytest.raises(grpc.RpcError) as info:
        srv.stub.Predict(request("a", "3", 1, x, y))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams_per_model" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        srv.stub.Predict(request("b", "2", 1, x, y))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams_total" in info.value.details()
    big_x, big_y = make_chunks(1, 400)[0]
    assert code_of(srv.stub.Predict, request("a", "1", 2, big_x, big_y)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    srv.stub.CloseStream(pb.CloseStreamRequest(model="a", stream_id="2"))  # frees a slot
    assert not srv.stub.Predict(request("a", "3", 1, x, y)).HasField("error")


def test_idle_streams_are_stored_dropped_and_resume_exactly(start_server):
    srv = start_server(stream_idle_ttl_s=0.2)
    spec = make_spec("m", sharing=pb.SHARING_PER_STREAM)
    _create(srv.stub, spec)
    chunks = make_chunks(4, 3)
    list(srv.stub.Stream(iter([request("m", "s", i + 1, *c) for i, c in enumerate(chunks[:2])])))
    deadline = time.monotonic() + 5
    while srv.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s")).in_memory:
        assert time.monotonic() < deadline, "idle stream was not evicted"
        time.sleep(0.05)
    info = srv.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s"))
    assert info.acked_seq == info.durable_seq == 2 and info.stats.steps == 6
    last = list(srv.stub.Stream(iter([request("m", "s", i + 3, *c) for i, c in enumerate(chunks[2:])])))[-1]
    assert last.acked_seq == 4 and last.stats.steps == 12
    engine, _ = engine_run(spec, {"s": chunks})
    _same_weights(weights(srv.stub, "m", "s"), engine.state_dict("s"))
    text = _scrape(srv)
    assert 'rnnstream_stream_evictions_total{reason="idle"}' in text


def test_get_reset_close_stream(server):
    stub = server.stub
    _create(stub, make_spec("m"))
    get = lambda sid="s": stub.GetStream(pb.GetStreamRequest(model="m", stream_id=sid))  # noqa: E731
    assert code_of(get) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.ResetStream, pb.ResetStreamRequest(model="m", stream_id="s")) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.CloseStream, pb.CloseStreamRequest(model="m", stream_id="s")) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.GetStream, pb.GetStreamRequest(model="x", stream_id="s")) == grpc.StatusCode.NOT_FOUND
    list(stub.Stream(iter([request("m", "s", i + 1, *c) for i, c in enumerate(make_chunks(3, 2))])))
    info = get()
    assert (info.acked_seq, info.stats.steps, info.in_memory) == (3, 6, True)
    stub.CloseStream(pb.CloseStreamRequest(model="m", stream_id="s"))
    info = get()
    assert (info.acked_seq, info.durable_seq, info.stats.steps, info.in_memory) == (3, 3, 6, False)
    info = stub.ResetStream(pb.ResetStreamRequest(model="m", stream_id="s"))
    assert (info.acked_seq, info.stats.steps) == (0, 0)
    assert stub.Predict(request("m", "s", 1, *make_chunks(1, 2)[0])).acked_seq == 1


def test_concurrent_streams_are_batched_and_each_learns_its_own_weights(start_server):
    srv = start_server(batch_window_s=0.02)
    spec = make_spec("ps", sharing=pb.SHARING_PER_STREAM)
    _create(srv.stub, spec)
    data = {f"s{i}": make_chunks(5, 2 + i % 3, seed=i) for i in range(6)}  # ragged chunk lengths
    barrier = threading.Barrier(len(data))
    results, errors = {}, []

    def run(sid):
        try:
            def gen():
                barrier.wait(10)
                for i, c in enumerate(data[sid]):
                    yield request("ps", sid, i + 1, *c)
            results[sid] = list(srv.stub.Stream(gen()))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(sid,)) for sid in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    engine, _ = engine_run(spec, data)
    for sid in data:
        assert [r.acked_seq for r in results[sid]] == [1, 2, 3, 4, 5]
        got, want = weights(srv.stub, "ps", sid), engine.state_dict(sid)
        for k in want:  # a batched call may sum in another order than a single-stream one
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)
    text = _scrape(srv)
    count = _value(text, 'rnnstream_batch_streams_count{model="ps"}')
    total = _value(text, 'rnnstream_batch_streams_sum{model="ps"}')
    assert total == 30 and count < total, "no engine call ran more than one stream"


def _scrape(srv) -> str:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.server.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not exported")
