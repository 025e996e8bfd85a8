"""bench/quality.py on short prefixes: every method scores every sample, and the metrics are
the ones a person computes by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench import quality, quality_data as qd, quality_peers as qp, quality_rnn as qr


def _regression(y, keys=None):
    y = np.asarray(y, dtype=np.float64)
    return qd.Stream("tiny", qd.REGRESSION, np.zeros((len(y), 1)), y,
                     keys or ["s"] * len(y))


def test_regression_baselines_and_mae_by_hand():
    s = _regression([1.0, 3.0, 2.0, 6.0])
    # persistence says 0, 1, 3, 2; running mean says 0, 1, 2, 2
    assert quality.score(s, qp.persistence(s)) == pytest.approx((1 + 2 + 1 + 4) / 4)
    assert quality.score(s, qp.running_mean(s)) == pytest.approx((1 + 2 + 0 + 4) / 4)


def test_persistence_keeps_one_last_value_per_entity():
    s = _regression([10.0, 20.0, 11.0, 21.0], keys=["a", "b", "a", "b"])
    # a's first sample: 0; b's first: the global previous (10); then each its own last
    np.testing.assert_allclose(qp.persistence(s), [0.0, 10.0, 10.0, 20.0])


def test_log_loss_by_hand_with_clipping():
    y = np.array([0, 1, 1])
    s = qd.Stream("tiny", qd.CLASSIFICATION, np.zeros((3, 1)), y, ["s"] * 3, num_classes=2)
    probs = np.array([[0.8, 0.2], [0.5, 0.5], [1.0, 0.0]])
    expected = -(math.log(0.8) + math.log(0.5) + math.log(1e-15)) / 3
    assert quality.score(s, probs) == pytest.approx(expected)
    # class prior: uniform, then Laplace counts (1+1)/(2+1) for class 0 ... by hand
    prior = qp.class_prior(s)
    np.testing.assert_allclose(prior, [[0.5, 0.5], [2 / 3, 1 / 3], [2 / 4, 2 / 4]])


def test_forecaster_target_is_level_minus_offset():
    """Airline's framing: the forecast level minus the last level is the predicted change, so
    persistence of the level predicts a change of 0 and its MAE is the mean |change|."""
    s = qd.airline().prefix(20)

    class Persist:
        def __init__(self):
            self.last = None

        def learn_one(self, v):
            self.last = v

        def forecast(self, horizon):
            return [self.last]

    out = qp.river_forecaster(lambda _: Persist())(s)
    np.testing.assert_allclose(out, 0.0, atol=1e-9)
    assert quality.score(s, out) == pytest.approx(np.mean(np.abs(s.y)))


def test_text_bits_per_byte_match_the_engines_own_losses(monkeypatch):
    """Chunk boundaries must not drop or double-count a byte: the bench's bits/byte over small
    chunks equals the engine's own next-input losses over one call (nats -> bits; the first
    byte, which has no prediction, counts 8 bits)."""
    data = np.frombuffer(b"abracadabra, abracadabra!", dtype=np.uint8).astype(np.int64)
    s = qd.Stream("t", qd.TEXT, np.zeros((len(data), 0)), data, ["t"] * len(data),
                  num_classes=256)
    monkeypatch.setattr(qr, "CHUNK", 4)
    bits = qr.run(s)
    engine = qr.make_engine(qr.build_spec(s))
    _, losses = engine.step(["t"], tokens=data[None])
    assert np.isnan(losses[0, 0])
    expected = (8.0 + np.sum(losses[0, 1:].astype(np.float64)) / math.log(2)) / len(data)
    assert bits == pytest.approx(expected, rel=1e-5)


def test_chunked_rnnstream_run_equals_one_call(monkeypatch):
    s = qd.trump().prefix(40)
    monkeypatch.setattr(qr, "CHUNK", 7)
    chunked = qr.run(s)
    engine = qr.make_engine(qr.build_spec(s))
    preds, _ = engine.step(["trump"], inputs=s.X[None].astype(np.float32),
                           targets=s.y[None, :, None].astype(np.float32))
    np.testing.assert_allclose(chunked, preds[0, :, 0], rtol=1e-6)


def test_every_method_scores_every_sample_on_every_stream():
    streams = quality.load_streams(list(qd.LOADERS), n_prefix=30, text_bytes=300)
    results = quality.run_suite(streams, deepriver=False, log=lambda *a: None)
    assert set(results) == set(qd.LOADERS)
    for name, r in results.items():
        s, methods = r["stream"], r["methods"]
        assert s.n == (300 if s.task == qd.TEXT else 30)
        assert quality.RNN in methods and len(methods) >= 4, name
        # the engine has every field of the recommended spec, so it runs beside the default
        assert quality.RECOMMENDED in methods, name
        for meth, v in methods.items():
            assert v["scored"] == s.n, (name, meth)
            assert math.isfinite(v["score"]) and v["score"] >= 0, (name, meth)
    table = quality.markdown(results, "t", "cmd")
    assert table.count("\n| airline |") == 1 and "River ARF(10)" in table


def test_missing_deepriver_venv_is_one_clear_line(monkeypatch, tmp_path):
    from bench import quality_deepriver as qdr
    monkeypatch.setattr(qdr, "VENV_PYTHON", tmp_path / "no-such-venv" / "python")
    monkeypatch.setattr(qdr, "_reason_cache", [])
    lines, notes = [], []
    s = qd.Stream("tiny", qd.REGRESSION, np.zeros((3, 1)), np.array([1.0, 2.0, 3.0]),
                  ["s"] * 3)
    results = quality.run_suite([s], deepriver=True, log=lines.append, notes=notes)
    skipped = [ln for ln in lines if ln.startswith("deep-river skipped:")]
    assert len(skipped) == 1 and "no virtualenv python" in skipped[0]
    assert notes == [skipped[0]]
    assert "deep-river rolling LSTM" not in results["tiny"]["methods"]


def test_heldout_streams_run_only_when_asked_for():
    assert quality.stream_names("", False) == list(qd.LOADERS)
    assert not set(qd.HELDOUT) & set(qd.LOADERS)
    assert quality.stream_names("", True) == list(qd.HELDOUT)
    assert quality.stream_names("sea,airline", False) == ["sea", "airline"]
    assert quality.stream_names("airline", True) == ["airline", *qd.HELDOUT]
    with pytest.raises(ValueError, match="unknown stream.*nope.*known: airline"):
        quality.stream_names("airline,nope", False)


def test_non_numeric_columns_are_one_hot_in_sorted_order():
    rows = [{"a": 1, "c": "red", "b": 2.5}, {"a": 3, "c": "blue", "b": 0.0},
            {"a": 5, "c": "red", "b": -1.0}]
    np.testing.assert_array_equal(qd._numeric(rows), [[1, 0, 1, 2.5], [3, 1, 0, 0.0],
                                                      [5, 0, 1, -1.0]])


@pytest.mark.parametrize("name", list(qd.HELDOUT))
def test_heldout_stream_is_framed_like_the_suite(name):
    s = qd.HELDOUT[name]()
    assert s.name == name and s.n == len(s.X) == len(s.keys) >= 1000
    assert s.X.dtype == np.float64 and np.isfinite(s.X).all() and np.isfinite(s.y).all()
    if s.task == qd.CLASSIFICATION:
        assert s.num_classes >= 2 and set(np.unique(s.y)) == set(range(s.num_classes))
    else:
        assert s.task == qd.REGRESSION and s.num_classes == 0
    if name not in ("shuttle", "sp500", "solarflare"):  # River's generators: fixed seed
        assert s.n == qd.SYNTH_N
        again = qd.HELDOUT[name]()
        np.testing.assert_array_equal(again.X, s.X)
        np.testing.assert_array_equal(again.y, s.y)
    if name == "solarflare":  # 7 numeric + one-hot zurich class, spot size, distribution
        assert s.X.shape[1] > 10 and s.y.min() == 0 and s.y.max() >= 3
    if name == "sp500":  # forecasters learn the target's own series, one step behind
        assert np.isnan(s.levels[0]) and np.array_equal(s.levels[1:], s.y)


def test_every_method_scores_every_heldout_sample():
    streams = quality.load_streams(list(qd.HELDOUT), n_prefix=30, text_bytes=0)
    results = quality.run_suite(streams, deepriver=False, log=lambda *a: None)
    assert set(results) == set(qd.HELDOUT)
    for name, r in results.items():
        assert r["stream"].n == 30
        for meth, v in r["methods"].items():
            assert v["scored"] == 30, (name, meth)
            assert math.isfinite(v["score"]) and v["score"] >= 0, (name, meth)


def test_a_rerun_keeps_the_hand_written_sections():
    previous = ("# Learning quality\n\nold table\n\n"
                "## What it showed (hand-written; a rerun rewrites everything above this section)\n\nwords\n\n"
                "## The tree member (hand-written)\n\nmore words\n")
    out = quality.with_hand_written("# Learning quality\n\nnew table\n", previous)
    assert out == ("# Learning quality\n\nnew table\n\n"
                   "## What it showed (hand-written; a rerun rewrites everything above this section)\n\nwords\n\n"
                   "## The tree member (hand-written)\n\nmore words\n")
    assert quality.with_hand_written("new\n", "") == "new\n"
    assert quality.with_hand_written("new\n", "# old\n\n## Generated section\n") == "new\n"
