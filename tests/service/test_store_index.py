"""The embedded store knows which streams it holds, so a new stream opens without a trip
through the store thread (which may be busy writing a checkpoint of thousands of streams),
while a stream that was stored is still read from the store, in order behind its writes."""
from __future__ import annotations

import threading

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.store import Store, StreamRecord

from .conftest import make_chunks, make_spec, request


def _record(model, stream_id, seq=1):
    return StreamRecord(model, stream_id, seq, {"steps": seq}, {"h": np.full(3, seq, np.float32)})


def test_the_index_follows_every_write_and_survives_a_reopen(tmp_path):
    store = Store(str(tmp_path))
    try:
        assert store.run(store.insert_model, "m", {"name": "m"}, 0, {"w": np.zeros(2, np.float32)})
        assert not store.may_hold_stream("m", "a")
        assert store.run(store.checkpoint, [], [_record("m", "a"), _record("m", "b")]) == []
        assert store.may_hold_stream("m", "a") and store.may_hold_stream("m", "b")
        assert not store.may_hold_stream("m", "c") and not store.may_hold_stream("other", "a")
        store.run(store.delete_stream, "m", "a")
        assert not store.may_hold_stream("m", "a") and store.run(store.load_stream, "m", "a") is None
    finally:
        store.close()
    store = Store(str(tmp_path))  # the index is rebuilt from the file
    try:
        assert store.may_hold_stream("m", "b") and not store.may_hold_stream("m", "a")
        assert store.run(store.load_stream, "m", "b").acked_seq == 1
        store.run(store.delete_model, "m")
        assert not store.may_hold_stream("m", "b")
    finally:
        store.close()


def _opens(server, source):
    return server.server.registry.metrics.stream_opens.labels(source)._value.get()


def test_a_new_stream_is_answered_while_the_store_thread_is_busy(server):
    server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")))
    store = server.server.registry.store
    release = threading.Event()
    blocked = store._executor.submit(release.wait, 60)  # a long checkpoint, as far as opens can tell
    try:
        (x, y), = make_chunks(1, 4)
        resp = server.stub.Predict(request("m", "fresh", 1, x, y), timeout=20)
        assert resp.acked_seq == 1 and not blocked.done()
        assert _opens(server, "new") == 1 and _opens(server, "store") == 0
    finally:
        release.set()
    blocked.result(10)


def test_a_stored_stream_reopened_reads_what_was_written(server):
    server.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")))
    chunks = make_chunks(3, 4)
    for seq, (x, y) in enumerate(chunks[:2], 1):
        assert server.stub.Predict(request("m", "s", seq, x, y)).acked_seq == seq
    # evicted to the store, then reopened by the next chunk: read from the store, not made anew
    server.stub.CloseStream(pb.CloseStreamRequest(model="m", stream_id="s"))
    info = server.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s"))
    assert not info.in_memory and info.durable_seq == 2
    x, y = chunks[2]
    resp = server.stub.Predict(request("m", "s", 3, x, y))
    assert resp.acked_seq == 3 and not resp.duplicate
    assert _opens(server, "store") == 1 and _opens(server, "new") == 1
    # a deleted stream starts over without a store read
    server.stub.DeleteStream(pb.DeleteStreamRequest(model="m", stream_id="s"))
    assert server.stub.Predict(request("m", "s", 1, *chunks[0])).acked_seq == 1
    assert _opens(server, "new") == 2
