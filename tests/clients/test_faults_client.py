"""Issue #10, the SDK/CLI side: weights move in pieces (any size), generation leaves no
stream in the store, and streams can be deleted — against a real server process."""
from __future__ import annotations

import asyncio

import numpy as np

from rnnstream.clients import cli
from rnnstream.clients.aio import AsyncClient


def test_generate_leaves_no_stream_and_streams_delete(server, client, name, capsys):
    def rn(*args):
        code = cli.main([*args, "--address", server.address])
        out = capsys.readouterr()
        return code, out.out, out.err

    rn("models", "create", name, "--cell", "gru", "--hidden", "8", "--vocab-size", "16", "--input-size", "4",
       "--num-classes", "16", "--target-mode", "next_input")
    client.predict(name, "kept", tokens=[1, 2, 3])
    client.close_stream(name, "kept")
    for _ in range(3):
        code, _, err = rn("generate", name, "--prime", "\x01\x02", "--length", "4", "--seed", "1")
        assert code == 0, err
    assert client.get_model(name).stored_streams == 1  # was 4: every run left its scratch stream
    code, out, err = rn("streams", "delete", name, "kept")
    assert code == 0 and out.startswith(f"deleted {name}/kept"), err
    assert client.get_model(name).stored_streams == 0
    code, _, err = rn("streams", "delete", name, "kept")
    assert code == 1 and "NOT_FOUND" in err


def test_weights_over_the_message_limit_round_trip_in_pieces(client, name):
    """LSTM H=512 with 256 inputs: 1.6 M parameters, 6.3 MB of floats, over gRPC's 4 MiB."""
    client.create_model(name=name, cell="lstm", hidden_sizes=[512], input_size=256, output_size=1)
    weights = client.export_weights(name)
    assert sum(a.size for a in weights.values()) > 1_500_000
    changed = {k: np.full(a.shape, 0.25, np.float32) for k, a in weights.items()}
    client.import_weights(name, changed)
    back = client.export_weights(name)
    assert all((back[k] == 0.25).all() for k in changed)


def test_async_client_moves_weights_in_pieces_and_deletes_streams(server, name):
    asyncio.run(_async_round_trip(server.address, name))


async def _async_round_trip(address, name):
    async with AsyncClient(address) as client:
        await client.create_model(name=name, cell="elman", hidden_sizes=[4], input_size=2, output_size=1,
                                  sharing="per_stream")
        await client.predict(name, "s", [[0.1, 0.2]], targets=[[0.3]])
        weights = await client.export_weights(name, "s")
        await client.import_weights(name, {k: v * 0 + 0.5 for k, v in weights.items()}, "s")
        assert all((v == 0.5).all() for v in (await client.export_weights(name, "s")).values())
        await client.delete_stream(name, "s")
        assert (await client.get_model(name)).active_streams == 0
        async with client.stream(name, "scratch", ephemeral=True, predict_only=True) as session:
            await session.send([[0.1, 0.2]])
        for _ in range(100):  # the server drops it when it sees the call end
            info = await client.get_model(name)
            if info.active_streams == 0:
                break
            await asyncio.sleep(0.05)
        assert info.active_streams == 0 and info.stored_streams == 0
