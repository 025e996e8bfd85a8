"""The learning options of issue #9 through the SDK and a real server: the measured default
a shape-only spec gets, ensembles, and late labels."""
import numpy as np
import pytest


def test_a_shape_only_model_gets_the_measured_default_and_says_so(client, name):
    info = client.create_model(name=name, input_size=2, output_size=1)
    spec = info.spec
    assert (spec["cell"], spec["hidden_sizes"], spec["algorithm"]) == ("lstm", [32], "tbptt")
    assert (spec["tbptt_k1"], spec["tbptt_k2"], spec["optimizer"]) == (1, 8, "adam")
    assert abs(spec["lr"] - 0.01) < 1e-9  # the effective rate, not 0 for "unset"
    assert spec["linear_skip"] is True and spec["output_taps"] == [1]
    assert spec["normalize"] == "shared" and len(spec["members"]) == 7
    assert spec["hedge_rate"] == pytest.approx(1.0)  # the rate in effect is named, so a stored model keeps it
    assert spec["members"][-3:] == [{"baseline": "last_target"},  # persistence, level series
                                    {"baseline": "seasonal_scaled"},  # scaled season
                                    {"baseline": "running_median"}]  # skewed, near random walk
    rng = np.random.default_rng(0)
    with client.stream(name, "s") as stream:
        x = rng.standard_normal((32, 2)).astype(np.float32)
        result = stream.send(x, targets=x[:, :1] * 3 + 100)  # caller's units come back
    assert len(result.stats.members) == 7
    assert abs(sum(w for _, w in result.stats.members) - 1) < 1e-5
    assert np.isfinite(result.predictions).all() and result.predictions.mean() > 10


def test_naming_the_cell_gives_one_model_and_output_taps_can_be_turned_off(client, name):
    info = client.create_model(name=name, cell="gru", input_size=1, output_size=1, output_taps=[0],
                               linear_skip=False)
    assert info.spec["members"] == [] and info.spec["output_taps"] == []
    assert info.spec["linear_skip"] is False and info.spec["cell"] == "gru"
    assert not any(n.startswith("skip") for n in client.export_weights(name))


def test_members_round_trip_through_the_sdk(client, name):
    info = client.create_model(name=name, cell="lstm", hidden_sizes=[4], input_size=1, output_size=1,
                               members=[{}, {"optimizer": "sgd", "lr": 0.05, "clip_norm": 1.0}])
    assert info.spec["members"] == [{}, {"optimizer": "sgd", "lr": 0.05, "clip_norm": 1.0}]
    assert any(n.startswith("members.1.") for n in client.export_weights(name))


def test_late_labels_through_the_sdk(client, name):
    client.create_model(name=name, cell="lstm", hidden_sizes=[4], input_size=1, num_classes=2,
                        max_label_delay=8, tbptt_k1=1, tbptt_k2=4)
    with client.stream(name, "s") as stream:
        first = stream.send(np.ones((3, 1), np.float32))  # no targets: the steps wait
        assert first.first_step == 0 and first.stats.updates == 0
        second = stream.send(np.ones((2, 1), np.float32), labels={0: 1, 2: 0})
        assert second.first_step == 3 and second.stats.updates == 2
        only = stream.send(labels={4: 1}, reset_after=True)  # a segment's label, then a reset
        assert only.predictions.size == 0 and only.stats.updates == 3
