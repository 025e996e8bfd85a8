"""What the examples share: where the server is (an address, or one started here)."""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from rnnstream.clients.connect import ADDRESS_ENV, DEFAULT_ADDRESS  # noqa: E402
from rnnstream.clients.local import LocalServer  # noqa: E402


def server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get(ADDRESS_ENV, DEFAULT_ADDRESS),
                        help="a running rnnstream server (env RNNSTREAM_ADDRESS)")
    parser.add_argument("--spawn", action="store_true",
                        help="start a server for this run (python -m rnnstream.service, in a temporary directory)")


@contextlib.contextmanager
def server_address(args):
    """The address to talk to; with --spawn, a server started for the run and stopped after."""
    if not args.spawn:
        yield args.address
        return
    with LocalServer() as server:
        yield server.address
