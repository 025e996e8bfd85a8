"""The SDK against a real server: models, weights, streams (sync and asyncio), errors."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rnnstream.clients import AlreadyExists, AsyncClient, ChunkRefused, Client, InvalidArgument, NotFound

SPEC = dict(cell="lstm", hidden_sizes=[8], input_size=2, output_size=1, algorithm="tbptt", tbptt_k1=4,
            tbptt_k2=4, optimizer="adam", lr=0.01, seed=3)


def sine_chunks(n, steps, seed=0):
    t = np.arange(n * steps + 1) * 0.3 + seed
    x = np.stack([np.sin(t), np.cos(t)], axis=1).astype(np.float32)
    y = np.sin(t + 0.3).astype(np.float32)[:, None]
    return [(x[i * steps:(i + 1) * steps], y[i * steps:(i + 1) * steps]) for i in range(n)]


def test_model_lifecycle_and_typed_errors(client, name):
    info = client.create_model(name=name, **SPEC)
    assert info.name == name and info.spec["hidden_sizes"] == [8] and info.spec["cell"] == "lstm"
    assert info.num_parameters == sum(int(np.prod(s)) for _, s in info.parameters)
    assert client.get_model(name).spec == info.spec
    assert name in [m.name for m in client.list_models()]
    with pytest.raises(AlreadyExists):
        client.create_model(name=name, **SPEC)
    client.delete_model(name)
    with pytest.raises(NotFound) as err:
        client.get_model(name)
    assert err.value.code.name == "NOT_FOUND" and name in str(err.value)
    with pytest.raises(InvalidArgument):
        client.create_model(name=name, **{**SPEC, "hidden_sizes": [0]})


def test_enums_left_unset_get_the_servers_defaults_by_name(client, name):
    # The SDK leaves these fields at *_UNSPECIFIED; the server fills in and names its defaults.
    info = client.create_model(name=name, cell="gru", hidden_sizes=[4], input_size=1, output_size=1)
    assert {k: info.spec[k] for k in ("gru_variant", "lstm_variant", "sharing", "device", "target_mode")} == \
        dict(gru_variant="pytorch", lstm_variant="standard", sharing="shared", device="cpu", target_mode="explicit")
    info = client.create_model(name=name + "-2", cell="lstm", hidden_sizes=[4], input_size=1, output_size=1,
                               lstm_variant="coupled", sharing="per_stream", target_mode="next_input")
    assert (info.spec["lstm_variant"], info.spec["sharing"], info.spec["target_mode"]) == \
        ("coupled", "per_stream", "next_input")


def test_exported_weights_load_into_torch_and_predict_the_same(client, name):
    torch = pytest.importorskip("torch")
    # normalize, skip and taps off: PyTorch's LSTM + Linear alone; a normalising model also
    # needs its exported statistics (tests/kernels/test_features.py); output_taps [0]: none
    client.create_model(name=name, **SPEC, normalize="off", linear_skip=False, output_taps=[0])
    weights = client.export_weights(name)
    lstm, head = torch.nn.LSTM(2, 8), torch.nn.Linear(8, 1)
    lstm.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items() if not k.startswith("head.")})
    head.load_state_dict({k[5:]: torch.as_tensor(v) for k, v in weights.items() if k.startswith("head.")})
    x, _ = sine_chunks(1, 12)[0]
    with client.stream(name, "s", predict_only=True) as s:
        served = s.send(x).predictions
    with torch.no_grad():
        expected = head(lstm(torch.as_tensor(x))[0]).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


def test_import_weights_round_trips(client, name):
    client.create_model(name=name, **SPEC)
    weights = {k: np.full_like(v, 0.125) for k, v in client.export_weights(name).items()}
    client.import_weights(name, weights)
    back = client.export_weights(name)
    assert all(np.array_equal(back[k], weights[k]) for k in weights)


def test_statistics_travel_with_the_weights_so_an_import_predicts_in_the_same_units(client, name):
    # normalisation on (shared statistics): the weights alone would predict in other units
    client.create_model(name=name, **SPEC, normalize="shared", linear_skip=False, output_taps=[0])
    rng = np.random.default_rng(5)
    x = (50 + 10 * rng.standard_normal((40, 2))).astype(np.float32)
    y = (200 + 30 * rng.standard_normal((40, 1))).astype(np.float32)
    with client.stream(name, "s") as s:
        s.send(x, targets=y)
    plain = client.export_weights(name)
    state = client.export_weights(name, statistics=True)
    stats = sorted(set(state) - set(plain))
    assert stats == [f"{g}_norm.{k}" for g in ("input", "target") for k in ("count", "running_mean", "running_var")]
    assert state["input_norm.count"][0] == 40 and abs(state["target_norm.running_mean"][0] - y.mean()) < 1e-3
    copy = name + "-copy"
    client.create_model(name=copy, **SPEC, normalize="shared", linear_skip=False, output_taps=[0])
    client.import_weights(copy, state)
    probe = x[:5]
    with client.stream(name, "probe", predict_only=True) as a, client.stream(copy, "probe", predict_only=True) as b:
        np.testing.assert_allclose(a.send(probe).predictions, b.send(probe).predictions, rtol=1e-5, atol=1e-3)
    assert client.export_weights(copy, statistics=True)["target_norm.count"][0] == 40


def test_statistics_of_a_per_stream_normaliser_with_shared_weights_are_refused_plainly(client, name):
    from rnnstream.clients import FailedPrecondition
    client.create_model(name=name, **SPEC, normalize="per_stream")
    with pytest.raises(FailedPrecondition, match="per stream"):
        client.export_weights(name, statistics=True)
    assert set(client.export_weights(name)) >= {"head.weight", "head.bias"}


def test_stream_numbers_chunks_and_continues_across_sessions(client, name):
    client.create_model(name=name, **SPEC)
    chunks = sine_chunks(6, 5)
    with client.stream(name, "a") as s:
        results = [s.send(x, targets=y) for x, y in chunks[:3]]
    assert [r.seq for r in results] == [1, 2, 3] and [r.acked_seq for r in results] == [1, 2, 3]
    assert all(r.predictions.shape == (5, 1) and r.losses.shape == (5,) for r in results)
    assert np.isfinite(results[0].losses).all()
    with client.stream(name, "a") as s:  # a new session picks up at acked_seq + 1
        r = s.send(chunks[3][0], targets=chunks[3][1])
    assert r.seq == 4 and r.stats.steps == 20
    info = client.get_stream(name, "a")
    assert info.acked_seq == 4 and info.stats.steps == 20
    assert client.reset_stream(name, "a").acked_seq == 0
    client.close_stream(name, "a")


def test_pipelined_equals_one_chunk_at_a_time(client, name):
    for suffix in ("seq", "pipe"):
        client.create_model(name=f"{name}-{suffix}", **SPEC)
    chunks = sine_chunks(20, 7)
    with client.stream(f"{name}-seq", "s") as s:
        one_by_one = [s.send(x, targets=y) for x, y in chunks]
    with client.stream(f"{name}-pipe", "s", window=6) as s:
        pipelined = list(s.pipeline(chunks))
    assert [r.seq for r in pipelined] == list(range(1, 21))
    for a, b in zip(one_by_one, pipelined):
        np.testing.assert_array_equal(a.predictions, b.predictions)
        np.testing.assert_array_equal(a.losses, b.losses)
    assert client.export_weights(f"{name}-seq").keys() == client.export_weights(f"{name}-pipe").keys()


def test_next_input_mode_first_loss_is_nan_and_forecasts(client, name):
    client.create_model(name=name, **{**SPEC, "output_size": 2, "target_mode": "next_input"})
    with client.stream(name, "s") as s:
        r = s.send(sine_chunks(1, 4)[0][0], horizon=3)
    assert np.isnan(r.losses[0]) and np.isfinite(r.losses[1:]).all()
    assert r.predictions.shape == (4, 2) and r.forecast.shape == (3, 2)


def test_a_refused_chunk_raises_and_the_stream_goes_on(client, name):
    client.create_model(name=name, **SPEC)
    x, y = sine_chunks(1, 4)[0]
    with client.stream(name, "s") as s:
        with pytest.raises(ChunkRefused) as err:
            s.send(np.ones((4, 3), np.float32), targets=y)  # three features, the model takes two
        assert err.value.code.name == "INVALID_ARGUMENT"
        r = s.send(x, targets=y)
    assert r.stats.steps == 4 and not r.duplicate


def test_token_model_takes_bare_token_chunks(client, name):
    client.create_model(name=name, cell="gru", hidden_sizes=[16], vocab_size=32, input_size=8, num_classes=32,
                        target_mode="next_input")
    with client.stream(name, "s") as s:
        r = s.send([1, 2, 3, 4, 5])
    assert r.predictions.shape == (5, 32)
    np.testing.assert_allclose(r.predictions.sum(axis=1), 1.0, rtol=1e-4)


def test_unary_predict_continues_the_stream(client, name):
    client.create_model(name=name, **SPEC)
    (x1, y1), (x2, y2) = sine_chunks(2, 3)
    assert client.predict(name, "u", x1, targets=y1).seq == 1
    r = client.predict(name, "u", x2, targets=y2)
    assert r.seq == 2 and r.stats.steps == 6


def test_async_client_mirrors_the_sync_one(server, client, name):
    client.create_model(name=f"{name}-sync", **SPEC)
    chunks = sine_chunks(8, 4)
    with client.stream(f"{name}-sync", "s") as s:
        expected = list(s.pipeline(chunks))

    async def main():
        async with AsyncClient(server.address) as aclient:
            await aclient.create_model(name=f"{name}-async", **SPEC)
            async with aclient.stream(f"{name}-async", "s", window=3) as s:
                first = await s.send(*chunks[0][:1], targets=chunks[0][1])

                async def rest():
                    for chunk in chunks[1:]:
                        yield chunk
                results = [first] + [r async for r in s.pipeline(rest())]
            with pytest.raises(NotFound):
                await aclient.get_model("no-such-model")
            return results

    results = asyncio.run(main())
    assert [r.seq for r in results] == list(range(1, 9))
    for a, b in zip(expected, results):
        np.testing.assert_array_equal(a.predictions, b.predictions)


def test_unknown_model_stream_fails_fast(client):
    with pytest.raises(NotFound):
        client.stream("no-such-model", "s")


def test_token_and_tls(secure_server, name):
    from tests.clients.conftest import TLS_TOKEN
    ca = secure_server.tls_ca
    with Client(secure_server.address, tls_ca=ca, timeout=10) as anonymous:
        with pytest.raises(Exception) as err:
            anonymous.list_models()
        assert err.value.code.name == "UNAUTHENTICATED"
    with Client(secure_server.address, tls_ca=ca, token=TLS_TOKEN) as c:
        c.create_model(name=name, **SPEC)
        with c.stream(name, "s") as s:
            assert s.send(*sine_chunks(1, 3)[0][:1], targets=sine_chunks(1, 3)[0][1]).seq == 1


def test_the_readme_sdk_example_runs_and_learns(server, capsys):
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## The Python SDK\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    exec(code.replace('Client("127.0.0.1:50051")', f'Client("{server.address}")'), {})
    losses = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) == 31 and losses[-1] < 0.1 < losses[0]
