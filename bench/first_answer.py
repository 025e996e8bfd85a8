"""Time from ``python -m rnnstream.service`` to the first answered chunk of a shape-only model.

    python -m bench.first_answer                            # with numba's cache as it is
    NUMBA_CACHE_DIR=$(mktemp -d) python -m bench.first_answer   # a fresh install's first start

Starts the server as README says (its own data directory, loopback, metrics off), creates a model
giving only the data's shape through the SDK, sends one 8-step chunk, and prints when the model
was created and when the chunk was answered, in seconds since the start. On a cold cache the
server answers with the interpreted kernels while a child process compiles them; with
``--until-compiled`` the stream goes on sending 8-step chunks until the server says it switched
to the compiled kernels, and the chunks' times before and after the switch are printed.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from rnnstream.clients import Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until_compiled(stream, x, started, log_path, timeout):
    """Chunks until the log says the compiled kernels took over, then 20 more."""
    before, after, switched = [], [], None
    while time.monotonic() - started < timeout and len(after) < 20:
        t0 = time.monotonic()
        stream.send(x, targets=x[:, :1])
        (after if switched else before).append(time.monotonic() - t0)
        if switched is None and "compiled kernels ready" in open(log_path).read():
            switched = time.monotonic() - started
    if switched is None:
        print(f"the compiled kernels did not take over within {timeout:.0f} s")
        return
    print(f"compiled kernels took over {switched:.1f} s after the start; meanwhile {len(before)} chunks "
          f"answered interpreted (median {1e3 * float(np.median(before)):.1f} ms, max "
          f"{1e3 * max(before):.0f} ms); then median {1e3 * float(np.median(after)):.2f} ms compiled")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    ap.add_argument("--until-compiled", action="store_true",
                    help="keep streaming until the server runs the compiled kernels")
    opts = ap.parse_args(argv)
    port, data = _free_port(), tempfile.mkdtemp(prefix="rnnstream-first-")
    log = open(f"{data}/server.log", "w")
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "rnnstream.service", "--host", "127.0.0.1", "--port",
                               str(port), "--metrics-port", "-1", "--data-dir", data], stderr=log)
    try:
        with Client(f"127.0.0.1:{port}", timeout=opts.timeout) as client:
            while True:  # the server binds first and answers once its kernels are loaded
                try:
                    client.create_model(name="first", input_size=3, output_size=1)
                    break
                except Exception:
                    if server.poll() is not None or time.monotonic() - started > opts.timeout:
                        raise
                    time.sleep(0.5)
            created = time.monotonic() - started
            x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
            with client.stream("first", "s") as stream:
                stream.send(x, targets=x[:, :1])
                answered = time.monotonic() - started
                print(f"model created {created:.1f} s, first chunk answered {answered:.1f} s after the "
                      f"start (server log: {data}/server.log)", flush=True)
                if opts.until_compiled:
                    _until_compiled(stream, x, started, f"{data}/server.log", opts.timeout)
        return 0
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
