"""What every client command of the CLI shares: the connection flags and the client they make.

Its own module so that ``cli`` (the parser and the model commands) and ``cli_stream`` (push and
generate) both import it instead of each other.
"""
from __future__ import annotations

import argparse
import os

from .client import Client
from .connect import ADDRESS_ENV, DEFAULT_ADDRESS


def connection_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--address", default=os.environ.get(ADDRESS_ENV, DEFAULT_ADDRESS), metavar="HOST:PORT",
                   help=f"server address (env {ADDRESS_ENV}; default %(default)s)")
    g.add_argument("--token", help="bearer token (env RNNSTREAM_TOKEN)")
    g.add_argument("--token-file", metavar="PATH", help="read the bearer token from a file")
    g.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting this CA certificate")
    g.add_argument("--tls", action="store_true", help="use TLS with the system's trusted CAs")
    g.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="deadline of each unary call in seconds (default %(default)s)")
    return p


def client_of(args) -> Client:
    return Client(args.address, token=args.token, token_file=args.token_file, tls=args.tls,
                  tls_ca=args.tls_ca, timeout=args.timeout)
