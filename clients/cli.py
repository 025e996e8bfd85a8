"""``rnnstream``: serve, manage models, push data, export weights, generate text.

Every client command takes ``--address`` (env RNNSTREAM_ADDRESS, default 127.0.0.1:50051),
``--token``/``--token-file`` and ``--tls-ca``. Failures print one line and exit non-zero.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import sys

import grpc

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb

from . import cli_stream
from .cli_common import client_of, connection_flags
from .connect import Connection
from .convert import enum_choices
from .datafiles import DataError
from .errors import RnnStreamError, Unavailable
from .spec import ModelSpec, effective, field_help

PROG = "rnnstream"


# -- the parser -------------------------------------------------------------------------------

def _sizes(text: str) -> list[int]:
    """``--hidden 32`` or ``--hidden 64,32``: positive integers, one per layer."""
    try:
        sizes = [int(h) for h in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, e.g. 32 or 64,32; got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be >= 1, got {text!r}")
    return sizes


def _betas(text: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2, e.g. 0.9,0.999; got {text!r}")
    return b1, b2


def _taps(text: str) -> tuple:
    """``--output-taps 1,12``, or ``--output-taps 0`` for none."""
    return (0,) if text.strip() == "0" else _sizes(text)


def _model_spec_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ModelSpec field; help is the field's meaning and the server's default."""
    meaning = field_help()

    def add(flag, field, **kw):
        default = getattr(ModelSpec, field)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = meaning[field].replace("%", "%%")
        # None: the meaning already says which default applies (it depends on the optimizer)
        suffix = "" if default in (None, "", ()) else f" (default: {shown})"
        p.add_argument(flag, dest=field, help=text + suffix, **kw)

    p.add_argument("name", help="model name")
    p.add_argument("--spec", metavar="JSON", help="a JSON file of spec fields; flags override it")
    add("--cell", "cell", choices=enum_choices(pb.Cell))
    add("--lstm-variant", "lstm_variant", choices=enum_choices(pb.LstmVariant))
    add("--gru-variant", "gru_variant", choices=enum_choices(pb.GruVariant))
    add("--hidden", "hidden_sizes", metavar="H[,H...]", type=_sizes)
    add("--input-size", "input_size", type=int, metavar="N")
    add("--vocab-size", "vocab_size", type=int, metavar="N")
    add("--output-size", "output_size", type=int, metavar="N")
    add("--num-classes", "num_classes", type=int, metavar="N")
    add("--algorithm", "algorithm", choices=enum_choices(pb.Algorithm))
    add("--k1", "tbptt_k1", type=int, metavar="K1")
    add("--k2", "tbptt_k2", type=int, metavar="K2")
    add("--optimizer", "optimizer", choices=enum_choices(pb.OptimizerKind))
    add("--lr", "lr", type=float)
    add("--momentum", "momentum", type=float)
    add("--nesterov", "nesterov", action="store_true", default=None)
    add("--betas", "betas", type=_betas, metavar="B1,B2")
    add("--eps", "eps", type=float)
    add("--alpha", "alpha", type=float)
    add("--clip-norm", "clip_norm", type=float)
    add("--weight-decay", "weight_decay", type=float)
    add("--sharing", "sharing", choices=enum_choices(pb.Sharing))
    add("--device", "device", choices=enum_choices(pb.Device))
    add("--seed", "seed", type=int)
    add("--target-mode", "target_mode", choices=enum_choices(pb.TargetMode))
    add("--normalize", "normalize", choices=enum_choices(pb.Normalization))
    add("--normalize-decay", "normalize_decay", type=float)
    add("--input-taps", "input_taps", metavar="L[,L...]", type=_sizes)
    add("--output-taps", "output_taps", metavar="L[,L...]", type=_taps)
    add("--linear-skip", "linear_skip", action=argparse.BooleanOptionalAction, default=None)
    add("--max-label-delay", "max_label_delay", type=int, metavar="D")
    add("--hedge-rate", "hedge_rate", type=float)


def build_parser() -> argparse.ArgumentParser:
    conn = connection_flags()
    parser = argparse.ArgumentParser(prog=PROG, description="Streaming online learning for RNNs over gRPC.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("serve", add_help=False, help="run the server (python -m rnnstream.service; see serve --help)")

    p = sub.add_parser("health", parents=[conn], help="ask the server's grpc.health.v1 status",
                       description="Exit 0 when the server answers SERVING.")
    p.set_defaults(func=cmd_health)

    models = sub.add_parser("models", help="create, list, show, delete models").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = models.add_parser("create", parents=[conn], help="create a model",
                          description="Create a model. Unset fields take the server's defaults.")
    _model_spec_flags(p)
    p.set_defaults(func=cmd_models_create)
    p = models.add_parser("list", parents=[conn], help="list models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser("show", parents=[conn], help="show one model as JSON (the values in effect)")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_show)
    p = models.add_parser("delete", parents=[conn], help="delete a model and its streams")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_delete)

    streams = sub.add_parser("streams", help="show, reset, close, delete one stream").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    for action, what in (("show", "a stream's seq, steps and running loss"),
                         ("reset", "zero a stream's state (keeps the weights)"),
                         ("close", "drop a stream's state from the server"),
                         ("delete", "forget a stream: its state in memory and in the server's store")):
        p = streams.add_parser(action, parents=[conn], help=what)
        p.add_argument("model")
        p.add_argument("stream")
        p.set_defaults(func=cmd_streams)

    p = sub.add_parser("export", parents=[conn], help="save a model's weights (PyTorch names)",
                       description="Save the weights as .npz (numpy) or .pt (torch.save of a state dict).")
    p.add_argument("model")
    p.add_argument("--stream", help="a PER_STREAM model's stream whose weights to export")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="weights.npz or weights.pt")
    p.add_argument("--statistics", action="store_true",
                   help="also save the normalisation statistics (input_norm.*, target_norm.*); import takes them back")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", parents=[conn], help="load weights from .npz or .pt into a model")
    p.add_argument("model")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--stream", help="a PER_STREAM model's stream to load into")
    p.set_defaults(func=cmd_import)

    cli_stream.add_commands(sub, conn)
    return parser


# -- commands -----------------------------------------------------------------------------------

def cmd_health(args) -> int:
    from .local import health
    conn = Connection.resolve(args.address, token=args.token, token_file=args.token_file, tls=args.tls,
                              tls_ca=args.tls_ca)
    try:
        status = health(conn, timeout=args.timeout)
    except grpc.RpcError as err:
        raise Unavailable(f"{err.code().name}: {err.details()}") from None
    sys.stdout.write(status + "\n")
    return 0 if status == "SERVING" else 1


def cmd_models_create(args) -> int:
    spec = {}
    if args.spec:
        spec.update(json.loads(pathlib.Path(args.spec).read_text()))
    fields = [f.name for f in dataclasses.fields(ModelSpec) if f.name not in ("name", "members")]
    spec.update({f: getattr(args, f) for f in fields if getattr(args, f, None) is not None})
    spec["name"] = args.name
    with client_of(args) as client:
        info = client.create_model(**spec)
    sys.stdout.write(f"created {info.name}: {info.num_parameters} parameters\n")
    return 0


def _model_json(info) -> dict:
    out = dataclasses.asdict(info)
    out["spec"] = effective(info.spec)  # what the server uses: lr, eps, k2 filled in
    out["parameters"] = [{"name": n, "shape": list(s)} for n, s in info.parameters]
    return out


def cmd_models_list(args) -> int:
    with client_of(args) as client:
        infos = client.list_models()
    if args.json:
        sys.stdout.write(json.dumps([_model_json(i) for i in infos], indent=2) + "\n")
        return 0
    rows = [("NAME", "CELL", "HIDDEN", "ALGORITHM", "PARAMS", "STREAMS", "STEPS", "UPDATES")]
    for i in infos:
        s = i.spec
        rows.append((i.name, s["cell"], ",".join(map(str, s["hidden_sizes"])), s["algorithm"],
                     str(i.num_parameters), str(i.active_streams), str(i.steps), str(i.updates)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    return 0


def cmd_models_show(args) -> int:
    with client_of(args) as client:
        info = client.get_model(args.name)
    sys.stdout.write(json.dumps(_model_json(info), indent=2) + "\n")
    return 0


def cmd_models_delete(args) -> int:
    with client_of(args) as client:
        client.delete_model(args.name)
    sys.stdout.write(f"deleted {args.name}\n")
    return 0


def cmd_streams(args) -> int:
    with client_of(args) as client:
        if args.action == "close":
            client.close_stream(args.model, args.stream)
            sys.stdout.write(f"closed {args.model}/{args.stream}\n")
            return 0
        if args.action == "delete":
            client.delete_stream(args.model, args.stream)
            sys.stdout.write(f"deleted {args.model}/{args.stream}\n")
            return 0
        call = client.get_stream if args.action == "show" else client.reset_stream
        info = call(args.model, args.stream)
    sys.stdout.write(json.dumps(dataclasses.asdict(info), indent=2) + "\n")
    return 0


def _need_torch(what: str):
    try:
        import torch
    except ImportError:
        raise DataError(f"{what} needs torch (pip install torch); use .npz instead") from None
    return torch


def cmd_export(args) -> int:
    import numpy as np
    out = pathlib.Path(args.output)
    if out.suffix not in (".npz", ".pt"):
        raise DataError(f"{out}: write .npz or .pt")
    torch = _need_torch("writing .pt") if out.suffix == ".pt" else None
    with client_of(args) as client:
        weights = client.export_weights(args.model, args.stream, statistics=args.statistics)
    if torch is not None:
        torch.save({k: torch.as_tensor(v) for k, v in weights.items()}, out)
    else:
        np.savez(out, **weights)
    sys.stdout.write(f"wrote {len(weights)} tensors to {out}\n")
    return 0


def cmd_import(args) -> int:
    import numpy as np
    path = pathlib.Path(args.file)
    if path.suffix == ".pt":
        weights = _need_torch("reading .pt").load(path, weights_only=True)
    elif path.suffix == ".npz":
        with np.load(path) as data:
            weights = {k: data[k] for k in data.files}
    else:
        raise DataError(f"{path}: read .npz or .pt")
    with client_of(args) as client:
        client.import_weights(args.model, weights, args.stream)
    sys.stdout.write(f"loaded {len(weights)} tensors into {args.model}\n")
    return 0


def serve(argv: list[str]) -> int:
    """Hand the process over to ``python -m rnnstream.service`` with the same flags."""
    if importlib.util.find_spec("rnnstream.service") is None:
        raise DataError("the service is not installed here (pip install rnnstream, with numba)")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "rnnstream.service", *argv])
    return 0  # not reached


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("RNNSTREAM_DEBUG"):  # tracebacks for whoever debugs the CLI itself
        return _run(argv)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Unavailable as err:
        sys.stderr.write(f"{PROG}: error: cannot reach the server: {_one_line(err.message)}\n")
    except RnnStreamError as err:
        sys.stderr.write(f"{PROG}: error: {_one_line(err)}\n")
    except (DataError, OSError, ValueError, TypeError) as err:
        sys.stderr.write(f"{PROG}: error: {_one_line(err)}\n")
    return 1


def _run(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
