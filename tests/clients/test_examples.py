"""The worked examples, each on a short prefix of its real data, against the test server."""
from __future__ import annotations

import importlib.util
import math
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py",
                                                  submodule_search_locations=None)
    import sys
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return module


def test_sensor_forecast_on_the_first_weeks(server, tmp_path, capsys):
    plot = tmp_path / "flow.png"
    r = example("sensor_forecast").main(["--address", server.address, "--limit", "300", "--plot", str(plot)])
    assert r["steps"] == 298 and r["scored_steps"] == 250
    for key in ("model_mae", "model_rmse", "persistence_mae", "persistence_rmse"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "LSTM online" in out and "persistence" in out


def test_char_stream_on_a_prefix(server, capsys):
    r = example("char_stream").main(["--address", server.address, "--limit", "3000", "--hidden", "32",
                                     "--sample-length", "40"])
    assert r["chars"] == 3000
    assert 1.0 < r["model_bits_per_char"] < 8.5
    assert set(r["compressors"]) == {"gzip -9", "bz2 -9", "lzma -9e"}
    assert len(r["sample"].encode("utf-8", "surrogatepass")) >= 1
    out = capsys.readouterr().out
    assert "bits/char" in out and out.count("bits/char") == 5
