"""``rnnstream push`` (a CSV or a text file into a stream) and ``rnnstream generate``."""
from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import math
import sys
import time

import numpy as np

from . import datafiles
from .cli_common import client_of
from .datafiles import DataError


def add_commands(sub, conn: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "push", parents=[conn], help="stream a CSV or a text file into a stream",
        description="Stream FILE (or - for stdin) into MODEL's stream STREAM, chunk by chunk, "
                    "with a progress bar. A CSV feeds the model's inputs and targets from columns; "
                    "for a next_input model the targets are the next row's inputs. A token model "
                    "reads text as tokens (UTF-8 bytes, or Unicode characters).")
    p.add_argument("model")
    p.add_argument("stream")
    p.add_argument("file", metavar="FILE", help="a CSV or text file, or - for stdin")
    g = p.add_argument_group("CSV")
    g.add_argument("--inputs", metavar="COLS", help="input columns, names or 0-based indices "
                   "(default: every column that is not a target)")
    g.add_argument("--targets", metavar="COLS", help="target columns (explicit-target models)")
    g.add_argument("--next-input", action="store_true",
                   help="next-input mode: the target of each row is the next row's inputs "
                        "(the model must have target_mode next_input)")
    g.add_argument("--no-header", action="store_true", help="the first row is data")
    g.add_argument("--delimiter", default=",", help="field separator (default ',')")
    g = p.add_argument_group("text")
    g.add_argument("--csv", action="store_true", help="read a token model's tokens from a CSV column")
    g.add_argument("--tokens", choices=("bytes", "chars"), default="bytes",
                   help="text as UTF-8 bytes (vocab >= 256) or as code points (default bytes)")
    g.add_argument("--unknown", type=int, metavar="ID", help="token for characters outside the vocabulary")
    g = p.add_argument_group("streaming")
    g.add_argument("--chunk", type=int, default=64, metavar="N", help="steps per chunk (default 64)")
    g.add_argument("--window", type=int, default=8, metavar="W", help="chunks in flight (default 8)")
    g.add_argument("--limit", type=int, metavar="N", help="stop after N steps")
    g.add_argument("--predict-only", action="store_true", help="predict, do not train")
    g.add_argument("--out", metavar="CSV", help="write one row of predictions per step ('-': stdout)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--reconnect-for", type=float, default=60.0, metavar="S",
                   help="when the server goes away, keep reconnecting (and replaying) for S seconds, "
                        "then give up (default 60)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("generate", parents=[conn], help="sample text from a token model",
                       description="Prime a scratch stream with TEXT, then sample N tokens one at a "
                                   "time (predict only: nothing is trained, no stream is advanced).")
    p.add_argument("model")
    p.add_argument("--prime", required=True, metavar="TEXT", help="text to start from")
    p.add_argument("--length", type=int, default=200, metavar="N", help="tokens to sample (default 200)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="sampling temperature; 0 picks the most probable token (default 1)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the K most probable")
    p.add_argument("--tokens", choices=("bytes", "chars"), default="bytes", help="as in push")
    p.add_argument("--seed", type=int, help="seed of the sampler")
    p.add_argument("--stream", help="sample with this stream's weights (PER_STREAM models)")
    p.set_defaults(func=cmd_generate)


def _chunks(args, spec, source):
    """The chunk iterator for ``push`` and the output column names."""
    token_model = spec["vocab_size"] > 0
    classes = spec["num_classes"] > 0
    next_input = spec["target_mode"] == "next_input"
    if args.next_input and not next_input:
        raise DataError(f"model {args.model!r} takes explicit targets (target_mode explicit); "
                        "drop --next-input and name --targets")
    if token_model and not args.csv:
        if args.targets or args.inputs:
            raise DataError("a token model reads text; pass --csv to read tokens from CSV columns")
        if not next_input and not args.predict_only:
            raise DataError(f"model {args.model!r} takes explicit targets: text push needs a "
                            "next_input model (or --predict-only)")
        stream = source.buffer if hasattr(source, "buffer") else source
        return datafiles.text_chunks(stream, args.tokens, spec["vocab_size"], args.chunk,
                                     unknown=args.unknown, limit=args.limit), None
    if next_input and args.targets:
        raise DataError(f"model {args.model!r} is next_input: its targets are the next inputs, not --targets")
    if not next_input and not args.targets and not args.predict_only:
        raise DataError(f"model {args.model!r} takes explicit targets: name them with --targets COLS")
    columns, rows = datafiles.open_csv(source, args.inputs, args.targets, delimiter=args.delimiter,
                                       header=False if args.no_header else None)
    width = 1 if token_model else spec["input_size"]
    if len(columns.inputs) != width:
        raise DataError(f"{len(columns.inputs)} input column(s) ({', '.join(columns.names[i] for i in columns.inputs)}) "
                        f"but model {args.model!r} takes {width} input(s) per step")
    outputs = spec["output_size"]
    if columns.targets and not classes and len(columns.targets) != outputs:
        raise DataError(f"{len(columns.targets)} target column(s) but model {args.model!r} has {outputs} output(s)")
    names = [columns.names[i] for i in (columns.inputs if next_input else columns.targets)]
    return datafiles.csv_chunks(columns, rows, args.chunk, classes=classes, tokens=token_model,
                                limit=args.limit), names


def _open_input(path: str, binary: bool):
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer if binary else sys.stdin)
    return open(path, "rb") if binary else open(path, newline="", encoding="utf-8")


def _open_output(path: str | None):
    if path is None:
        return contextlib.nullcontext(None)
    if path == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", newline="", encoding="utf-8")


def cmd_push(args) -> int:
    from .progress import progress_bar
    if args.chunk < 1 or args.window < 1:
        raise DataError("--chunk and --window must be at least 1")
    if not args.reconnect_for > 0:
        raise DataError("--reconnect-for must be a number of seconds > 0")
    with client_of(args) as client:
        client.backoff = dataclasses.replace(client.backoff, give_up_after_s=args.reconnect_for)
        spec = client.get_model(args.model).spec
        binary = spec["vocab_size"] > 0 and not args.csv
        with _open_input(args.file, binary) as source, _open_output(args.out) as out:
            chunks, names = _chunks(args, spec, source)
            classes = spec["vocab_size"] > 0 or spec["num_classes"] > 0
            writer = datafiles.PredictionWriter(out, names, classes) if out is not None else None
            bar = progress_bar(f"{args.model}/{args.stream}", enabled=not args.no_progress)
            total_loss, scored, started = 0.0, 0, time.monotonic()
            try:
                with client.stream(args.model, args.stream, window=args.window,
                                   predict_only=args.predict_only) as session:
                    session.on_reconnect = lambda attempt, why: bar.set_postfix_str(
                        f"reconnecting (attempt {attempt})... {why}", refresh=True)
                    for result in session.pipeline(chunks):
                        finite = result.losses[np.isfinite(result.losses)]
                        total_loss += float(finite.sum())
                        scored += finite.size
                        if writer is not None:
                            writer.write(result.predictions, result.losses)
                        bar.update(len(result.losses))
                        bar.set_postfix_str(f"loss={result.stats.running_loss:.4g}", refresh=False)
            finally:
                bar.close()
    elapsed = time.monotonic() - started
    mean = total_loss / scored if scored else math.nan
    sys.stderr.write(f"pushed {bar.n} steps in {elapsed:.1f}s ({bar.n / max(elapsed, 1e-9):,.0f} steps/s); "
                     f"mean loss {mean:.4g}\n")
    return 0


def cmd_generate(args) -> int:
    from .sampling import generate
    if args.length < 0:
        raise DataError("--length must be >= 0")
    with client_of(args) as client:
        spec = client.get_model(args.model).spec
        if spec["vocab_size"] <= 0:
            raise DataError(f"model {args.model!r} does not take tokens (vocab_size 0)")
        prime = datafiles.encode(args.prime, args.tokens, spec["vocab_size"])
        out = sys.stdout
        out.write(args.prime)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if args.tokens == "bytes" else None
        for token in generate(client, args.model, prime, args.length, temperature=args.temperature,
                              top_k=args.top_k, seed=args.seed, weights_of=args.stream):
            out.write(decoder.decode(bytes([token])) if decoder else chr(token))
            out.flush()
        if decoder:
            out.write(decoder.decode(b"", final=True))
        out.write("\n")
    return 0
