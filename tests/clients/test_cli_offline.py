"""The CLI where no server is needed: help everywhere, and one-line errors."""
import argparse
import os
import subprocess
import sys

import pytest

from rnnstream.clients import cli
from rnnstream.clients.local import free_port


def command_paths(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name == "serve":  # its help is the service's own (tested with the server)
                    continue
                yield prefix + (name,)
                yield from command_paths(sub, prefix + (name,))


PATHS = list(command_paths(cli.build_parser()))


def test_every_command_is_listed():
    assert {p[0] for p in PATHS} >= {"models", "export", "push", "generate", "health", "streams"}
    assert {p for p in PATHS if p[0] == "models"} >= {("models",), ("models", "create"), ("models", "list"),
                                                       ("models", "show"), ("models", "delete")}


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_help_on_every_command(path, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([*path, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rnnstream {' '.join(path)}")


@pytest.mark.parametrize("path", [p for p in PATHS if len(p) == 2 or p[0] in ("export", "push", "generate", "health")],
                         ids=" ".join)
def test_client_commands_take_the_connection_flags(path, capsys):
    with pytest.raises(SystemExit):
        cli.main([*path, "--help"])
    out = capsys.readouterr().out
    for flag in ("--address", "--token", "--token-file", "--tls-ca"):
        assert flag in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["push", "m"])
    assert exit.value.code == 2
    assert "required" in capsys.readouterr().err


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rnnstream.clients.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_server_down_is_one_line_and_non_zero():
    port = free_port()
    proc = run_cli("models", "list", "--address", f"127.0.0.1:{port}", "--timeout", "2")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rnnstream: error: cannot reach the server")


def test_address_comes_from_the_environment():
    port = free_port()
    proc = run_cli("health", "--timeout", "1", env={"RNNSTREAM_ADDRESS": f"127.0.0.1:{port}"})
    assert proc.returncode == 1 and str(port) in proc.stderr


def test_bad_files_are_one_line(tmp_path, capsys):
    assert cli.main(["import", "m", str(tmp_path / "weights.txt")]) == 1
    assert cli.main(["models", "create", "m", "--spec", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("rnnstream: error: ") for line in err)
    assert "read .npz or .pt" in err[0] and "missing.json" in err[1]


def test_sdk_and_cli_import_without_numba_or_the_service():
    code = ("import sys, clients, clients.cli, clients.aio, clients.sampling, clients.local; "
            "bad = [m for m in ('numba', 'service', 'kernels') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
