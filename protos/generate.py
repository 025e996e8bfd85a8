"""Regenerate the Python modules from protos/rnnstream/v1/*.proto.

Run ``python -m rnnstream.protos.generate`` from the repository root (needs grpcio-tools, part of
the ``test`` extra). ``--check`` exits non-zero when the committed modules are stale.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys
import tempfile

PROTO_ROOT = pathlib.Path(__file__).resolve().parent
PROTO_FILES = ["rnnstream/v1/rnnstream.proto"]


def _include_dirs() -> list[str]:
    import grpc_tools
    import google.rpc.status_pb2 as status_pb2

    grpc_include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    # google/rpc/status.proto ships with googleapis-common-protos, beside its modules.
    googleapis_root = pathlib.Path(status_pb2.__file__).parent.parent.parent
    return [str(PROTO_ROOT), str(grpc_include), str(googleapis_root)]


def _fix_imports(text: str) -> str:
    # protoc writes "from rnnstream.v1 import ..." but our package installs as rnnstream.protos.
    return re.sub(r"^from rnnstream\.v1 import", "from rnnstream.protos.rnnstream.v1 import", text, flags=re.M)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc

    args = ["protoc"] + [f"-I{d}" for d in _include_dirs()]
    args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [str(PROTO_ROOT / p) for p in PROTO_FILES]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    written = []
    for proto in PROTO_FILES:
        stem = proto[: -len(".proto")]
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = out_dir / (stem + suffix)
            path.write_text(_fix_imports(path.read_text()))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed modules are stale")
    opts = parser.parse_args(argv)
    if not opts.check:
        generate(PROTO_ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for fresh in generate(pathlib.Path(tmp)):
            committed = PROTO_ROOT / fresh.relative_to(tmp)
            if not committed.exists() or committed.read_text() != fresh.read_text():
                stale.append(os.fspath(committed.relative_to(PROTO_ROOT.parent)))
    if stale:
        sys.stderr.write("stale generated modules (run python -m rnnstream.protos.generate): " + ", ".join(stale) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
