"""The `rnnstream` command against a real server."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rnnstream.clients import cli


@pytest.fixture
def rn(server, capsys):
    """Run the CLI in this process against the test server; return (exit code, stdout, stderr)."""
    def run(*args):
        code = cli.main([*args, "--address", server.address])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_models_create_list_show_delete(rn, name):
    code, out, _ = rn("models", "create", name, "--cell", "gru", "--hidden", "8,4", "--input-size", "3",
                      "--output-size", "2", "--algorithm", "rtrl", "--optimizer", "sgd", "--lr", "0.05",
                      "--momentum", "0.9")
    assert code == 0 and out.startswith(f"created {name}: ")
    code, out, _ = rn("models", "list")
    row = next(line for line in out.splitlines() if line.startswith(name))
    assert row.split()[1:4] == ["gru", "8,4", "rtrl"]
    code, out, _ = rn("models", "show", name)
    shown = json.loads(out)
    assert shown["spec"]["optimizer"] == "sgd" and shown["spec"]["momentum"] == 0.9
    assert code == 0 and rn("models", "delete", name)[0] == 0
    code, out, err = rn("models", "show", name)
    assert code == 1 and out == "" and err.startswith("rnnstream: error: NOT_FOUND") and err.count("\n") == 1


def test_push_csv_with_explicit_targets_writes_predictions(rn, name, tmp_path):
    rn("models", "create", name, "--hidden", "8", "--input-size", "2", "--output-size", "1")
    t = np.arange(100) * 0.2
    data = tmp_path / "sensor.csv"
    data.write_text("time,a,b,y\n" + "".join(f"{i},{np.sin(v):.4f},{np.cos(v):.4f},{np.sin(v + .2):.4f}\n"
                                              for i, v in enumerate(t)))
    out = tmp_path / "pred.csv"
    code, _, err = rn("push", name, "s1", str(data), "--inputs", "a,b", "--targets", "y", "--chunk", "16",
                      "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "pushed 100 steps" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and list(rows[0]) == ["step", "loss", "pred_y"]
    assert all(np.isfinite(float(r["pred_y"])) for r in rows)


def test_push_next_input_csv_from_stdin(rn, name, monkeypatch):
    rn("models", "create", name, "--hidden", "8", "--input-size", "1", "--output-size", "1",
       "--target-mode", "next_input")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        ("flow\n" + "".join(f"{np.sin(i * .3):.3f}\n" for i in range(50))).encode())))
    code, out, err = rn("push", name, "s", "-", "--next-input", "--chunk", "8", "--out", "-", "--no-progress")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "step,loss,pred_flow" and len(lines) == 51 and lines[1].startswith("1,,")


def test_push_text_then_generate(rn, name, tmp_path):
    rn("models", "create", name, "--cell", "lstm", "--hidden", "32", "--vocab-size", "256", "--input-size", "16",
       "--num-classes", "256", "--target-mode", "next_input", "--lr", "0.01")
    text = tmp_path / "abc.txt"
    text.write_text("abcabcabc" * 100)
    code, _, err = rn("push", name, "s", str(text), "--chunk", "64", "--no-progress")
    assert code == 0 and "pushed 900 steps" in err
    code, out, err = rn("generate", name, "--prime", "abcab", "--length", "12", "--temperature", "0",
                        "--seed", "1")
    assert code == 0, err
    assert out.startswith("abcab") and len(out.rstrip("\n")) == 17
    assert out.rstrip("\n")[5:] == "cabcabcabcab"  # 900 steps of abc are enough for greedy decoding


def test_export_npz_and_pt_then_import(rn, name, tmp_path):
    torch = pytest.importorskip("torch")
    # skip and taps off: the recurrent part then loads into a plain torch.nn.LSTM(2, 4)
    rn("models", "create", name, "--hidden", "4", "--input-size", "2", "--output-size", "1",
       "--no-linear-skip", "--output-taps", "0")
    assert rn("export", name, "-o", str(tmp_path / "w.npz"))[0] == 0
    assert rn("export", name, "-o", str(tmp_path / "w.pt"))[0] == 0
    npz = np.load(tmp_path / "w.npz")
    pt = torch.load(tmp_path / "w.pt", weights_only=True)
    assert set(npz.files) == set(pt) >= {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "head.weight"}
    lstm = torch.nn.LSTM(2, 4)
    lstm.load_state_dict({k: v for k, v in pt.items() if not k.startswith("head.")})
    zeros = {k: np.zeros_like(npz[k]) for k in npz.files}
    np.savez(tmp_path / "zeros.npz", **zeros)
    assert rn("import", name, str(tmp_path / "zeros.npz"))[0] == 0
    assert rn("export", name, "-o", str(tmp_path / "back.npz"))[0] == 0
    assert not np.load(tmp_path / "back.npz")["weight_ih_l0"].any()


@pytest.mark.parametrize("args, message", [
    (("push", "no-such-model", "s", "x.csv"), "NOT_FOUND"),
    (("generate", "no-such-model", "--prime", "a"), "NOT_FOUND"),
    (("export", "no-such-model", "-o", "w.npz"), "NOT_FOUND"),
])
def test_unknown_model_is_one_line(rn, args, message):
    code, _, err = rn(*args)
    assert code == 1 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_csv_is_one_line(rn, name, tmp_path):
    rn("models", "create", name, "--hidden", "4", "--input-size", "2", "--output-size", "1")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,3\n1,oops,3\n")
    code, _, err = rn("push", name, "s", str(bad), "--targets", "y", "--no-progress")
    assert code == 1 and "line 3, column 'b': 'oops' is not a finite number" in err
    code, _, err = rn("push", name, "s", str(bad), "--targets", "nope", "--no-progress")
    assert code == 1 and "no column 'nope'" in err
    code, _, err = rn("push", name, "s", str(tmp_path / "missing.csv"), "--targets", "y")
    assert code == 1 and "missing.csv" in err and err.count("\n") == 1


def test_health_and_serve_help_through_the_real_entry_point(server):
    env = {**os.environ, "RNNSTREAM_ADDRESS": server.address}
    proc = subprocess.run([sys.executable, "-m", "rnnstream.clients.cli", "health"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "SERVING"
    proc = subprocess.run([sys.executable, "-m", "rnnstream.clients.cli", "serve", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--metrics-port" in proc.stdout and "--data-dir" in proc.stdout
