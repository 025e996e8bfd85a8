"""``Client``'s docstring examples run as doctests against the real server on loopback."""
from __future__ import annotations

from rnnstream.clients import client as client_module
from tests.doc_examples import run_docstring_examples


def test_client_docstring_examples_run(server, monkeypatch):
    # the example connects where a user's would: $RNNSTREAM_ADDRESS
    monkeypatch.setenv("RNNSTREAM_ADDRESS", server.address)
    assert run_docstring_examples(client_module, "Client") >= 3
