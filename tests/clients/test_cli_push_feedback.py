"""What ``rnnstream push`` tells a person: a tqdm bar, reconnect attempts, a sentence on giving up."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from rnnstream.clients import Client
from rnnstream.clients.local import LocalServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _push(address, *args, **kw):
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # and the caller's (a worktree's .dev)
    env = {**os.environ, "PYTHONPATH": pythonpath, "RNNSTREAM_ADDRESS": address}
    return subprocess.Popen([sys.executable, "-m", "rnnstream.clients.cli", "push", *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_push_shows_a_tqdm_bar_and_gives_up_reconnecting_with_a_sentence(tmp_path):
    server = LocalServer(tmp_path / "data").start()
    try:
        with Client(server.address) as client:
            client.create_model(name="feed", cell="elman", hidden_sizes=[4], input_size=1, output_size=1,
                                target_mode="next_input")
        push = _push(server.address, "feed", "s", "-", "--chunk", "1", "--window", "1", "--out", "-",
                     "--reconnect-for", "4")
        push.stdin.write(b"x\n1.0\n2.0\n")
        push.stdin.flush()
        assert push.stdout.readline().startswith(b"step,loss")
        assert push.stdout.readline().startswith(b"1,")  # the first row is answered while we wait
        server.kill()  # the server goes away mid-push and does not come back
        push.stdin.write(b"3.0\n")
        push.stdin.flush()
        started = time.monotonic()
        _, err = push.communicate(timeout=120)
    finally:
        server.stop()
    err = err.decode()
    assert push.returncode == 1, err
    assert time.monotonic() - started < 60  # --reconnect-for 4, not the default minute
    assert "reconnecting (attempt 1)..." in err  # on the progress line, as it happens
    assert " steps" in err and "steps/s" not in err.splitlines()[-1]  # tqdm's bar ("... steps [..., ... steps/s")
    last = err.strip().splitlines()[-1]
    assert last.startswith("rnnstream: error: cannot reach the server: gave up on stream 's' of model 'feed' after")
    assert "did not come back (last error: UNAVAILABLE" in last, last
    assert "Rendezvous" not in err and "Traceback" not in err


def test_a_bad_file_leaves_no_empty_progress_bar(server, tmp_path, name):
    with Client(server.address) as client:
        client.create_model(name=name, cell="elman", hidden_sizes=[4], input_size=1, output_size=1,
                            target_mode="next_input")
    bad = tmp_path / "bad.csv"
    bad.write_text("flow\n1.0\nnot-a-number\n")
    push = _push(server.address, name, "s", str(bad), "--chunk", "1")
    _, err = push.communicate(timeout=120)
    assert push.returncode == 1
    assert err.decode().strip().splitlines() == [
        "rnnstream: error: line 3, column 'flow': 'not-a-number' is not a finite number"], err.decode()
