"""A chunk refused for a passing reason holds back its call's later chunks until it comes again
(the SDK replays it first): otherwise a later seq is applied first and the replay of the
refused one is answered as a duplicate, and its data is lost."""
import collections
import types

import grpc
import numpy as np

from rnnstream.service import batcher
from rnnstream.service.session import Chunk, StreamLedger


def _job(session, seq):
    x = np.zeros((1, 1), np.float32)
    return batcher.Job(session, Chunk(seq, 1, x, None, x, None, True, 0), None)


def _host(session, jobs):
    return types.SimpleNamespace(name="m", queue=collections.deque(jobs),
                                 sessions={session.stream_id: session})


def test_later_chunks_wait_for_the_refused_one_then_flow_again():
    session = StreamLedger("m", "s", acked_seq=4, attached=1)
    session.resend_from = 5  # chunk 5 was refused UNAVAILABLE/ABORTED/INTERNAL/UNKNOWN
    later = _job(session, 6)
    host = _host(session, [later])
    assert batcher._take(host, 8) == []
    assert later.response.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "resend from it" in later.response.error.message and session.acked_seq == 4
    again = _job(session, 5)
    host = _host(session, [again, _job(session, 6)])
    taken = batcher._take(host, 8)
    assert [job.chunk.seq for job in taken] == [5] and session.resend_from == 0
    assert [job.chunk.seq for job in host.queue] == [6]  # one chunk per stream per batch


def test_only_passing_refusals_hold_back_and_only_in_a_stream_call():
    assert grpc.StatusCode.INVALID_ARGUMENT.value[0] not in batcher._RESEND_CODES
    assert {c.value[0] for c in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)} <= batcher._RESEND_CODES
