"""The session's replay bookkeeping: one answer per chunk, in order, across reconnects."""
import pytest

from rnnstream.clients.replay import ChunkLog, TransientRefusal
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb


def answer(seq, durable=0, **kw):
    return pb.StreamResponse(seq=seq, acked_seq=seq, durable_seq=durable, **kw)


def test_chunks_are_numbered_from_the_servers_next_seq():
    log = ChunkLog(next_seq=8, durable_seq=5)
    assert [log.add(pb.StreamRequest(), 1).seq for _ in range(3)] == [8, 9, 10]
    assert log.in_flight == 3 and log.kept == 3


def test_durable_chunks_are_dropped_and_the_rest_replayed_in_order():
    log = ChunkLog()
    for _ in range(4):
        log.add(pb.StreamRequest(), 2)
    assert log.accept(answer(1)) == 2
    assert log.accept(answer(2, durable=1)) == 2
    assert [r.seq for r in log.replay()] == [2, 3, 4]
    assert log.in_flight == 2


def test_answers_to_replayed_chunks_the_caller_has_are_dropped():
    log = ChunkLog()
    for _ in range(3):
        log.add(pb.StreamRequest(), 1)
    assert log.accept(answer(1)) == 1
    # reconnect: the server restarted from durable_seq 0 and re-applies 1, 2, 3
    assert [r.seq for r in log.replay()] == [1, 2, 3]
    assert log.accept(answer(1)) is None
    assert log.accept(answer(2, durable=2)) == 1
    assert log.accept(answer(3)) == 1
    assert log.in_flight == 0 and [r.seq for r in log.replay()] == [3]


def test_a_refused_chunk_is_never_replayed():
    log = ChunkLog()
    log.add(pb.StreamRequest(), 1)
    refused = answer(1)
    refused.error.code = 3
    assert log.accept(refused) == 1
    assert log.replay() == []


def test_an_answer_out_of_order_is_an_error():
    log = ChunkLog()
    log.add(pb.StreamRequest(), 1)
    log.add(pb.StreamRequest(), 1)
    with pytest.raises(RuntimeError, match="chunk 2"):
        log.accept(answer(2))


def test_a_chunk_refused_for_a_passing_reason_is_kept_and_still_owed():
    log = ChunkLog()
    log.add(pb.StreamRequest(), 1)
    draining = answer(1)
    draining.error.code = 14  # UNAVAILABLE: the server is shutting down
    with pytest.raises(TransientRefusal):
        log.accept(draining)
    assert log.in_flight == 1 and [r.seq for r in log.replay()] == [1]
    assert log.accept(answer(1)) == 1


def test_answers_the_caller_gave_up_on_are_dropped_but_their_chunks_replayed():
    log = ChunkLog()
    for _ in range(3):
        log.add(pb.StreamRequest(), 1)
    assert log.accept(answer(1)) == 1
    log.abandon()  # e.g. the send waiting for chunk 2 was cancelled
    assert log.in_flight == 0 and [r.seq for r in log.replay()] == [1, 2, 3]
    assert log.add(pb.StreamRequest(), 1).seq == 4
    assert [log.accept(answer(seq)) for seq in (2, 3, 4)] == [None, None, 1]


def test_a_replayed_chunk_refused_for_a_passing_reason_is_sent_again():
    log = ChunkLog()
    log.add(pb.StreamRequest(), 1)
    log.add(pb.StreamRequest(), 1)
    assert log.accept(answer(1)) == 1
    # after a reconnect, the replay of chunk 1 (answered already, not durable) meets a drain
    draining = answer(1)
    draining.error.code = 14
    with pytest.raises(TransientRefusal):  # else chunk 2 could be applied without chunk 1
        log.accept(draining)
    assert [r.seq for r in log.replay()] == [1, 2]
    log.advance_durable(1)
    assert [r.seq for r in log.replay()] == [2] and log.durable_seq == 1
