"""The README's command blocks, run as pasted against a real server on loopback.

Blocks are marked ``<!-- run: NAME -->`` on the line before their fence. They run with bash
(``set -euo pipefail``) in an empty directory, with ``rnnstream`` and ``python`` on PATH being
this checkout's, and RNNSTREAM_ADDRESS naming the test's server.
"""
from __future__ import annotations

import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"<!-- run: ([\w-]+) -->\n```(?:bash|python)?\n(.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    return dict(_BLOCK.findall((ROOT / "README.md").read_text()))


def _environment(tmp_path, server) -> dict[str, str]:
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python").symlink_to(sys.executable)
    rnnstream = shims / "rnnstream"
    rnnstream.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rnnstream.clients.cli "$@"\n')
    rnnstream.chmod(0o755)
    return {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "RNNSTREAM_ADDRESS": server.address,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_readme_marks_the_blocks_this_test_runs():
    assert {"quickstart", "live"} <= set(readme_blocks())  # the SDK snippet: test_sdk_server.py


def test_quickstart_runs_top_to_bottom_then_the_live_feed_answers_each_row(server, tmp_path):
    blocks, env = readme_blocks(), _environment(tmp_path, server)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks["quickstart"]], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    # what the block says it makes, it made
    assert (work / "predictions.csv").read_text().splitlines()[0] == "step,loss,pred_flow"
    assert len((work / "predictions.csv").read_text().splitlines()) == 2001
    with np.load(work / "weights.npz") as weights:
        assert "weight_ih_l0" in weights.files
    # models show names the values in effect: the measured defaults the block left unset
    assert '"lr": 0.01' in proc.stdout and '"tbptt_k2": 8' in proc.stdout
    assert proc.stdout.startswith("created flow")

    # the live feed: each row is answered as it arrives (no chunk or window holds it back)
    live = subprocess.Popen(["bash", "-euo", "pipefail", "-c", blocks["live"]], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        lines = _read_lines(live.stdout, 2001, timeout_s=120)  # the header + one row per data row
        assert lines[0] == "step,loss,pred_flow", lines[:3]
        with open(work / "readings.csv", "a") as f:
            f.write("10.5\n")
        more = _read_lines(live.stdout, 1, timeout_s=30)
        assert more and more[0].startswith("2001,"), more
    finally:
        os.killpg(live.pid, signal.SIGTERM)
        live.wait(30)


def _read_lines(pipe, count: int, timeout_s: float) -> list[str]:
    """Up to ``count`` lines from a live pipe, waiting at most ``timeout_s`` in all."""
    out, buf, deadline = [], b"", time.monotonic() + timeout_s
    fd = pipe.fileno()
    while len(out) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
        *done, buf = buf.split(b"\n")
        out += [d.decode().rstrip("\r") for d in done]
    if len(out) < count:
        raise AssertionError(f"{len(out)} of {count} lines within {timeout_s}s; last: {out[-3:]}")
    return out[:count] if len(out) > count else out
