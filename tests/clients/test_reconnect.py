"""A server restart, graceful or a crash, is invisible to a stream session but for latency."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rnnstream.clients import Backoff, Client
from rnnstream.clients.local import LocalServer
from tests.clients.test_sdk_server import SPEC, sine_chunks


@pytest.fixture
def restartable(tmp_path):
    with LocalServer(tmp_path / "data", args=("--checkpoint-interval-s", "0.2")) as s:
        yield s


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_session_survives_a_server_restart(restartable, how):
    chunks = sine_chunks(60, 5)
    with Client(restartable.address, backoff=Backoff(give_up_after_s=120)) as client:
        client.create_model(name="m", **SPEC)
        client.create_model(name="reference", **SPEC)
        with client.stream("reference", "s") as s:
            reference = list(s.pipeline(chunks))
        with client.stream("m", "s", window=4) as s:
            results = []
            restarter = None
            for r in s.pipeline(chunks):
                results.append(r)
                if len(results) == 25:
                    def restart():
                        if how == "sigkill":
                            restartable.kill()
                        else:
                            restartable.stop()
                        restartable.start()
                    restarter = threading.Thread(target=restart)
                    restarter.start()
            restarter.join()
            assert s.reconnects >= 1
        info = client.get_stream("m", "s")
    # one answer per chunk, in order, none lost, none trained twice
    assert [r.seq for r in results] == list(range(1, 61))
    assert not any(r.duplicate for r in results)
    assert info.acked_seq == 60 and info.stats.steps == 60 * 5
    # and the same trajectory as a run that never saw a restart
    np.testing.assert_allclose(np.concatenate([r.predictions for r in results]),
                               np.concatenate([r.predictions for r in reference]), rtol=1e-5, atol=1e-6)


def test_async_session_survives_a_server_crash(restartable):
    import asyncio

    from rnnstream.clients import AsyncClient

    chunks = sine_chunks(40, 5)

    async def main():
        async with AsyncClient(restartable.address, backoff=Backoff(give_up_after_s=120)) as client:
            await client.create_model(name="m", **SPEC)
            results, crash = [], None
            async with client.stream("m", "s", window=4) as s:
                async for r in s.pipeline(chunks):
                    results.append(r)
                    if len(results) == 15:
                        crash = asyncio.get_running_loop().run_in_executor(
                            None, lambda: (restartable.kill(), restartable.start()))
                await crash
                reconnects = s.reconnects
            return results, reconnects, await client.get_stream("m", "s")

    results, reconnects, info = asyncio.run(main())
    assert reconnects >= 1
    assert [r.seq for r in results] == list(range(1, 41)) and not any(r.duplicate for r in results)
    assert info.acked_seq == 40 and info.stats.steps == 200


def test_keepalive_pings_keep_a_quiet_stream_open(server, name):
    """The SDK pings a quiet stream; the server accepts pings that often (a default gRPC
    server answers the third early ping with GOAWAY, which would force a reconnect)."""
    chunks = sine_chunks(2, 3)
    # pings every 2 s, not the SDK's 30: a server that refuses early pings sends GOAWAY on the
    # third (gRPC's default: two strikes), here after about 6 s
    with Client(server.address, keepalive_s=2) as client:
        client.create_model(name=name, **SPEC)
        with client.stream(name, "quiet") as s:
            first = s.send(chunks[0][0], targets=chunks[0][1])
            time.sleep(11)  # five pings with no data between them
            second = s.send(chunks[1][0], targets=chunks[1][1])
            assert s.reconnects == 0
    assert (first.seq, second.seq) == (1, 2)
    assert not second.duplicate and second.predictions.shape == (3, 1)
