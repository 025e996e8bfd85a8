"""Stream sessions through a drain, a crash, a failed send and a restart, against the real server."""
from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest

from rnnstream.clients import AsyncClient, Backoff, Client, NotFound, Unavailable
from rnnstream.clients.local import LocalServer
from tests.clients.test_sdk_server import SPEC, sine_chunks

STEPS = 5


@pytest.fixture
def restartable(tmp_path):
    with LocalServer(tmp_path / "data", args=("--checkpoint-interval-s", "0.5")) as s:
        yield s


def drain_codes(disconnects) -> bool:
    """What a drain may end a call with: the server's UNAVAILABLE, at least once. In 2 of about
    10 full runs the async session's drained call ended INTERNAL instead ("Internal error from
    Core": grpc.aio's local stand-in for a failed write, not the server's status). Traced in
    stop 19 (3 of 70 sessions under -n 2 and load): the drain stops reading, the session's next
    large write waits on flow control while the SDK reads no answers, the server ends the call,
    the pending write fails, grpc.aio marks the call done and reads no further, so the server's
    UNAVAILABLE trailers, queued behind unread answers, never reach it. Keeping the server
    reading during a drain removed it in 28 sessions but brought one CANCELLED reconnect, so it
    was reverted. Reading answers in the async SDK while a write waits did not remove it (stop
    22: still 2 of 12 sessions under load), so the trace above is incomplete. The SDK reconnects
    on both codes, and the test's other checks see nothing lost or repeated."""
    codes = set(disconnects)
    return grpc.StatusCode.UNAVAILABLE in codes and codes <= {grpc.StatusCode.UNAVAILABLE,
                                                                grpc.StatusCode.INTERNAL}


def restart_in_background(server: LocalServer, how: str = "sigterm") -> threading.Thread:
    def restart():
        server.kill() if how == "sigkill" else server.stop()
        server.start()
    thread = threading.Thread(target=restart)
    thread.start()
    return thread


# Chunks of about 1 MB: after a drain stops the server reading, the session's next writes
# fill the HTTP/2 window and are still pending when the server ends the call -- the case in
# which grpc.aio reports a local INTERNAL (every time, without the session's care).
WIDE = dict(SPEC, input_size=64)


def wide_chunks(n: int, steps: int = 4096):
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(steps, 64)).astype(np.float32), rng.normal(size=(steps, 1)).astype(np.float32))
            for _ in range(n)]


def test_async_session_sees_unavailable_on_a_drain_and_reconnects(restartable):
    chunks = wide_chunks(30)

    async def main():
        async with AsyncClient(restartable.address, backoff=Backoff(give_up_after_s=120)) as client:
            await client.create_model(name="m", **WIDE)
            results, restarter = [], None
            async with client.stream("m", "s", window=4) as s:
                async for r in s.pipeline(chunks):
                    results.append(r)
                    if len(results) == 10:
                        restarter = restart_in_background(restartable, "sigterm")
                await asyncio.get_running_loop().run_in_executor(None, restarter.join)
            return results, s, await client.get_stream("m", "s")

    results, session, info = asyncio.run(main())
    assert session.reconnects >= 1 and session.disconnects
    assert drain_codes(session.disconnects), session.disconnects
    assert [r.seq for r in results] == list(range(1, 31))
    # A duplicate answer comes only with grpc.aio's local INTERNAL (drain_codes): the answers
    # queued behind the unread status are dropped with the call, so the replayed chunks they
    # answered are duplicates (seen once in stop 21's clean-clone run). Nothing is applied twice.
    duplicates = [r.seq for r in results if r.duplicate]
    assert not duplicates or grpc.StatusCode.INTERNAL in session.disconnects, (duplicates, session.disconnects)
    assert info.acked_seq == 30 and info.stats.steps == 30 * 4096
    assert session.durable_seq == 30  # leaving the block waited for a checkpoint


def test_sync_session_sees_unavailable_on_a_drain(restartable):
    chunks = wide_chunks(30)
    with Client(restartable.address, backoff=Backoff(give_up_after_s=120)) as client:
        client.create_model(name="m", **WIDE)
        results, restarter = [], None
        with client.stream("m", "s", window=4) as s:
            for r in s.pipeline(chunks):
                results.append(r)
                if len(results) == 10:
                    restarter = restart_in_background(restartable, "sigterm")
            restarter.join()
        assert s.reconnects >= 1 and drain_codes(s.disconnects), s.disconnects
        assert [r.seq for r in results] == list(range(1, 31)) and s.durable_seq == 30
        assert client.get_stream("m", "s").stats.steps == 30 * 4096


def test_send_after_a_send_that_raised_replays_it_and_carries_on(restartable):
    """A send that gave up (the server was down longer than give_up_after_s) must not wedge
    the session: the next send replays the lost chunk first, and nothing is applied twice."""
    chunks = sine_chunks(3, STEPS)
    with Client(restartable.address, backoff=Backoff(give_up_after_s=0.5)) as client:
        client.create_model(name="m", **SPEC)
        with client.stream("m", "s") as s:
            assert s.send(chunks[0][0], targets=chunks[0][1]).seq == 1
            restartable.stop()
            with pytest.raises(Unavailable):
                s.send(chunks[1][0], targets=chunks[1][1])
            restartable.start()
            third = s.send(chunks[2][0], targets=chunks[2][1])
            assert third.seq == 3 and not third.duplicate
        info = client.get_stream("m", "s")
    assert info.acked_seq == 3 and info.stats.steps == 3 * STEPS


def test_async_send_after_a_cancelled_send_carries_on(server, name):
    """A send cancelled while it waits for its answer (an asyncio timeout, say) leaves the
    session usable; the cancelled chunk is applied once and the next one gets its own answer."""
    chunks = sine_chunks(3, STEPS)

    async def main():
        async with AsyncClient(server.address) as client:
            await client.create_model(name=name, **SPEC)
            async with client.stream(name, "s") as s:
                await s.send(chunks[0][0], targets=chunks[0][1])
                waiting = asyncio.create_task(s.send(chunks[1][0], targets=chunks[1][1]))
                while not s._log.in_flight:  # written, now waiting for its answer
                    await asyncio.sleep(0)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                third = await s.send(chunks[2][0], targets=chunks[2][1])
            return third, await client.get_stream(name, "s")

    third, info = asyncio.run(main())
    assert third.seq == 3 and not third.duplicate
    assert info.acked_seq == 3 and info.stats.steps == 3 * STEPS


def test_leaving_a_pipeline_early_leaves_the_session_usable(client, name):
    chunks = sine_chunks(12, STEPS)
    client.create_model(name=name, **SPEC)
    with client.stream(name, "s", window=4) as s:
        for r in s.pipeline(chunks[:10]):
            break  # nine chunks sent or still to send; at most three of them in flight
        last = s.send(chunks[10][0], targets=chunks[10][1])
    info = client.get_stream(name, "s")
    assert last.seq == info.acked_seq and not last.duplicate
    assert info.stats.steps == last.seq * STEPS  # every chunk sent was applied exactly once


def test_close_waits_until_durable_so_a_crash_right_after_loses_nothing(tmp_path):
    chunks = sine_chunks(20, STEPS)
    with LocalServer(tmp_path / "data", args=("--checkpoint-interval-s", "1.5")) as server:
        with Client(server.address) as client:
            client.create_model(name="m", **SPEC)
            with client.stream("m", "s", window=4) as s:
                results = list(s.pipeline(chunks))
            assert results[-1].durable_seq < 20  # acknowledged long before a checkpoint holds it
            assert s.durable_seq == 20
            server.kill()
            server.start()
            info = client.get_stream("m", "s")
    assert info.acked_seq == 20 and info.stats.steps == 20 * STEPS


def test_flush_sends_again_what_a_crash_lost(tmp_path):
    chunks = sine_chunks(10, STEPS)
    with LocalServer(tmp_path / "data", args=("--checkpoint-interval-s", "600")) as server:
        with Client(server.address) as client:
            client.create_model(name="m", **SPEC)
            s = client.stream("m", "s")
            for x, y in chunks:
                s.send(x, targets=y)
            server.kill()  # no checkpoint yet: the server comes back without these chunks
            server.start()
            with pytest.raises(NotFound):  # never checkpointed: the restarted server does not know it
                client.get_stream("m", "s")
            s.flush(durable=False)
            s.close(durable=False)
            info = client.get_stream("m", "s")
    assert (info.acked_seq, info.stats.steps) == (10, 10 * STEPS)


def test_async_session_opens_while_the_server_restarts(restartable):
    chunks = sine_chunks(2, STEPS)

    async def main():
        async with AsyncClient(restartable.address, backoff=Backoff(give_up_after_s=120)) as client:
            await client.create_model(name="m", **SPEC)
            restartable.stop()  # Connection refused until the restart below is serving
            restarter = threading.Thread(target=restartable.start)
            restarter.start()
            try:
                async with client.stream("m", "s") as s:
                    results = [r async for r in s.pipeline(chunks)]
            finally:
                restarter.join()
            return results

    assert [r.seq for r in asyncio.run(main())] == [1, 2]


def test_sync_session_opens_while_the_server_restarts(restartable):
    chunks = sine_chunks(2, STEPS)
    with Client(restartable.address, backoff=Backoff(give_up_after_s=120)) as client:
        client.create_model(name="m", **SPEC)
        restartable.stop()
        restarter = threading.Thread(target=restartable.start)
        restarter.start()
        try:
            with client.stream("m", "s") as s:
                results = list(s.pipeline(chunks))
        finally:
            restarter.join()
    assert [r.seq for r in results] == [1, 2]
