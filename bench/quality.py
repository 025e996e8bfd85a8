"""Learning quality: rnnstream's default model against its peers, one run, same data.

Progressive validation: every method predicts each sample, is scored, then learns it, once,
in the same order (framings in bench/quality_data.py). Metrics: MAE (regression), log loss in
nats with probabilities clipped to [1e-15, 1 - 1e-15] (classification), bits per byte (text).

    python -m bench.quality              # full run -> bench/results/quality.md
    python -m bench.quality --quick      # short prefixes, under two minutes
    python -m bench.quality --configs    # rnnstream candidate specs on every stream
                                         #   -> bench/results/quality_configs.md
    python -m bench.quality --heldout --n 3000   # the held-out streams (quality_data.HELDOUT)
                                         #   -> bench/results/quality_heldout.md

rnnstream runs with the default Spec given only the data's shape, fed raw features.
deep-river's rolling LSTM runs in its own virtualenv (it pins an older torch); when that venv
is missing the run says so in one line and goes on without it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import quality_data as qd
from . import quality_deepriver as qdr
from . import quality_peers as qp
from . import quality_rnn as qr

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_N = 300          # samples per stream in --quick
QUICK_TEXT = 5_000     # bytes of text in --quick
FULL_TEXT = 100_000    # bytes of text in a full run (the whole text is ~470 KB)
RNN = "rnnstream default"
RECOMMENDED = "rnnstream recommended"  # a candidate default (bench/quality_rnn.py RECOMMENDED)
METHOD_NOTES = (
    "rnnstream: `Spec` given only the data's shape (input_size and output_size or "
    "num_classes; text: vocab_size=num_classes=256, target_mode=next_input), raw features, "
    "whole chunks per call for one-entity streams, one row per call in the data's order for "
    "ChickWeights (one stream per chick).",
    "River linear models behind StandardScaler (regression also TargetStandardScaler), SGD "
    "lr 0.01 or Adam defaults; multi-class uses SoftmaxRegression. Tree and forest "
    "regressors behind StandardScaler (their leaves are linear models); classifiers raw. "
    "ARF n_models=10, seed 42.",
    "SNARIMAX and Holt-Winters learn the target's level series and forecast one step; "
    "AirlinePassengers uses River's documented settings; until Holt-Winters can forecast it "
    "says the last level.",
    "deep-river: its zoo's LSTMRegressor / LSTMClassifier with their defaults (rolling "
    "window 10) behind StandardScaler (regression also TargetStandardScaler), in its own "
    "venv; not run on text. Its time excludes torch's start-up.",
    "A River model that has not seen a class gives it probability 0 (clipped to 1e-15), as "
    "River's own predict_proba_one says; one that knows no class yet says uniform.",
    "Times are wall-clock on a shared 2-core machine: compare orders of magnitude only.",
    "rnnstream recommended: a candidate for the next default (bench/quality_rnn.py "
    "RECOMMENDED; today the default written out), run only where this engine has its fields.",
)


def score(stream, outputs) -> float:
    """The stream's metric for one method's outputs (text runners return bits/byte)."""
    if stream.task == qd.TEXT:
        return float(outputs)
    if stream.task == qd.REGRESSION:
        pred = np.asarray(outputs, dtype=np.float64)
        if pred.shape != (stream.n,):
            raise ValueError(f"expected {stream.n} predictions, got {pred.shape}")
        return float(np.mean(np.abs(pred - stream.y)))
    probs = np.asarray(outputs, dtype=np.float64)
    if probs.shape != (stream.n, stream.num_classes):
        raise ValueError(f"expected probabilities [{stream.n}, {stream.num_classes}], "
                         f"got {probs.shape}")
    p = np.clip(probs[np.arange(stream.n), stream.y], 1e-15, 1 - 1e-15)
    return float(-np.mean(np.log(p)))


def scored(stream, outputs) -> int:
    """How many samples a method produced a finite output for."""
    if stream.task == qd.TEXT:
        return stream.n if math.isfinite(float(outputs)) else 0
    a = np.asarray(outputs, dtype=np.float64).reshape(stream.n, -1)
    return int(np.all(np.isfinite(a), axis=1).sum())


def timed(runner, stream):
    t0 = time.perf_counter()
    out = runner(stream)
    seconds = time.perf_counter() - t0
    if isinstance(out, qdr.Timed):
        return out.outputs, out.seconds
    return out, seconds


def load_streams(names, n_prefix: int, text_bytes: int) -> list:
    streams = []
    for name in names:
        s = qd.ALL_LOADERS[name]()
        streams.append(s.prefix(text_bytes if s.task == qd.TEXT else n_prefix))
    return streams


def warm_up():
    """Compile or load the engine's kernels and import River's modules before anything is
    timed, so no method's time per sample carries a one-off start-up."""
    from river import forest, linear_model, optim, preprocessing, time_series, tree  # noqa: F401
    from rnnstream.service.engine import warm_up as engine_warm_up
    engine_warm_up()


def run_suite(streams, deepriver=True, log=print, notes=None) -> dict:
    """{stream name: {"stream": Stream, "methods": {method: {"score", "seconds", "scored"}}}}."""
    warm_up()
    results = {}
    dr_reason = qdr.unavailable_reason() if deepriver else "not asked for (--no-deepriver)"
    if dr_reason:
        log(f"deep-river skipped: {dr_reason}")
        if notes is not None:
            notes.append(f"deep-river skipped: {dr_reason}")
    deep = {}
    if not dr_reason:
        log("deep-river: running its rolling LSTM on every non-text stream (one child process)")
        deep = qdr.run_many([s for s in streams if s.task != qd.TEXT])
    for s in streams:
        methods = {}
        runners = {RNN: qr.run}
        rec = qr.recommended(s.task)
        if not qr.missing_fields(rec):
            runners[RECOMMENDED] = lambda st, rec=rec: qr.run(st, rec)
        runners.update(qp.peers_for(s))
        if s.name in deep:
            runners["deep-river rolling LSTM"] = lambda _s, out=deep[s.name]: out
        same = RECOMMENDED in runners and qr.build_spec(s, rec) == qr.build_spec(s)
        for name, runner in runners.items():
            if name == RECOMMENDED and same:  # the default written out: its result, not a rerun
                methods[name] = dict(methods[RNN])
                continue
            out, sec = timed(runner, s)
            methods[name] = {"score": score(s, out), "seconds": sec, "scored": scored(s, out)}
            log(f"  {s.name:14s} {name:26s} {s.metric} {methods[name]['score']:.4f} "
                f"({1e6 * sec / s.n:.0f} us/sample)")
        results[s.name] = {"stream": s, "methods": methods}
    return results


def best_peer(methods: dict):
    peers = {k: v for k, v in methods.items() if not k.startswith("rnnstream")}
    name = min(peers, key=lambda k: peers[k]["score"])
    return name, peers[name]["score"]


def markdown(results: dict, title: str, command: str, notes=()) -> str:
    lines = [f"# {title}", "", f"Command: `{command}`", "",
             "Progressive validation (predict, score, then learn each sample once), same order "
             "for every method. MAE for regression, log loss (nats, clipped at 1e-15) for "
             "classification, bits per byte for text; lower is better. Ratio = rnnstream "
             "default / best peer (<= 1.01 meets the issue's target).", "",
             "| stream | n | metric | rnnstream default | best peer | best peer score | ratio "
             "| rnnstream recommended | ratio |",
             "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        s, m = r["stream"], r["methods"]
        peer, peer_score = best_peer(m)
        cells = []
        for who in (RNN, RECOMMENDED):
            if who not in m:
                cells += ["—", "—"]
                continue
            v = m[who]["score"]
            ratio = v / peer_score if peer_score > 0 else float("inf")
            cells += [f"{v:.4f}", f"{ratio:.2f}"]
        lines.append(f"| {name} | {s.n} | {s.metric} | {cells[0]} | {peer} | {peer_score:.4f} "
                     f"| {cells[1]} | {cells[2]} | {cells[3]} |")
    methods = []
    for r in results.values():
        methods += [k for k in r["methods"] if k not in methods]
    names = list(results)
    for what, fmt in (("Scores", lambda v: f"{v['score']:.4f}"),
                      ("Time per sample (microseconds)",
                       lambda v, n=None: f"{1e6 * v['seconds'] / v['n']:.0f}")):
        lines += ["", f"## {what}", "", "| method | " + " | ".join(names) + " |",
                  "| --- |" + " ---: |" * len(names)]
        for meth in methods:
            cells = []
            for n in names:
                v = results[n]["methods"].get(meth)
                cells.append("—" if v is None else fmt({**v, "n": results[n]["stream"].n}))
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    lines += ["", "## Streams", ""]
    for name, r in results.items():
        lines.append(f"- `{name}`: {r['stream'].note}")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in (*notes, *METHOD_NOTES)]
    return "\n".join(lines) + "\n"


def write_scores(results: dict, path: Path):
    """Every method's score per stream, so --configs can reuse the peers' scores."""
    path.write_text(json.dumps({
        name: {"n": r["stream"].n, "metric": r["stream"].metric,
               "methods": {m: {"score": v["score"], "seconds": v["seconds"]}
                           for m, v in r["methods"].items()}}
        for name, r in results.items()}, indent=1) + "\n")


def cached_best_peers(streams, log=print) -> dict:
    """{stream: (best peer, score)}: from the last full or quick run's scores when it ran
    the same prefix, else by running the peers now (without deep-river)."""
    cached = {}
    for f in ("quality.json", "quality_quick.json"):
        path = RESULTS / f
        if path.exists():
            for name, r in json.loads(path.read_text()).items():
                cached.setdefault((name, r["n"]), r["methods"])
    peers, todo = {}, []
    for s in streams:
        methods = cached.get((s.name, s.n))
        if methods is None:
            todo.append(s)
        else:
            peers[s.name] = best_peer(methods)
    if todo:
        log("running the peers of " + ", ".join(s.name for s in todo) + " (no cached scores)")
        for name, r in run_suite(todo, deepriver=False, log=log).items():
            peers[name] = best_peer(r["methods"])
    return {s.name: peers[s.name] for s in streams}


def run_configs(streams, which="all", log=print, only=()) -> dict:
    """{candidate: {stream: score or None (skipped)}}, plus the candidates' overrides.
    ``only``: run just the candidates whose name contains one of these strings."""
    warm_up()
    table = {}
    for s in streams:
        for cand, overrides in qr.candidates(s.task, which).items():
            if only and not any(o in cand for o in only):
                continue
            row = table.setdefault(cand, {"overrides": overrides, "scores": {}, "seconds": {}})
            missing = qr.missing_fields(overrides)
            if missing:
                row["scores"][s.name] = None
                log(f"  {s.name:14s} {cand}: skipped, Spec has no {', '.join(missing)}")
                continue
            try:
                fields = qr.on_base(cand, overrides, s.task)
                out, sec = timed(lambda st: qr.run(st, fields), s)
                row["scores"][s.name] = score(s, out)
                row["seconds"][s.name] = sec
            except ValueError as e:  # a candidate the engine refuses for this stream
                row["scores"][s.name] = None
                log(f"  {s.name:14s} {cand}: refused: {e}")
                continue
            log(f"  {s.name:14s} {cand:44s} {row['scores'][s.name]:.4f} ({sec:.1f} s)")
    return table


def configs_markdown(table: dict, peers: dict, command: str, sizes=None) -> str:
    """Every candidate on every stream, as a ratio to the stream's best peer (and raw score).
    ``sizes``: samples per stream, for the time per sample over the streams a candidate ran."""
    names = list(peers)
    sizes = sizes or {}
    lines = ["# rnnstream candidate specs on the quality streams", "",
             f"Command: `{command}`", "",
             "Each cell: candidate's score / best peer's score on that stream (lower is better; "
             "<= 1.01 meets the target), raw score in brackets. `geo-mean` is the geometric "
             "mean of the ratios over the streams the candidate ran on; `worst` the largest; "
             "`us/sample` its total time over those streams' samples.", "",
             "| candidate | " + " | ".join(names) + " | geo-mean | worst | us/sample |",
             "| --- |" + " ---: |" * (len(names) + 3)]
    for cand, row in table.items():
        cells, ratios = [], []
        for n in names:
            v = row["scores"].get(n)
            if v is None:
                cells.append("—")
                continue
            ratio = v / peers[n][1] if peers[n][1] > 0 else float("inf")
            ratios.append(ratio)
            cells.append(f"{ratio:.2f} ({v:.3g})")
        geo = math.exp(np.mean(np.log(ratios))) if ratios else float("nan")
        worst = max(ratios) if ratios else float("nan")
        secs = row.get("seconds", {})
        n = sum(sizes.get(k, 0) for k in secs)
        per = f"{1e6 * sum(secs.values()) / n:.0f}" if n else "—"
        lines.append(f"| {cand} | " + " | ".join(cells) + f" | {geo:.3f} | {worst:.2f} | {per} |")
    lines += ["", "Best peer per stream: " + "; ".join(f"{n}: {p[0]} {p[1]:.4f}"
                                                     for n, p in peers.items()), ""]
    lines += ["Candidates' overrides (all but `default` on bench/quality_rnn.py's BASE, the "
              "defaults before issue #9 with normalisation on; `default` is the shape-only "
              "Spec of the engine that ran):", ""]
    lines += [f"- {cand}: `{json.dumps(row['overrides'], default=list)}`"
              for cand, row in table.items()]
    return "\n".join(lines) + "\n"


def stream_names(streams: str, heldout: bool) -> list:
    """The streams a run loads: those named (comma-separated), plus the held-out ones with
    ``heldout``; with neither, the suite's (the held-out streams never run by default)."""
    names = [n.strip() for n in streams.split(",") if n.strip()]
    if heldout:
        names += [n for n in qd.HELDOUT if n not in names]
    elif not names:
        names = list(qd.LOADERS)
    unknown = [n for n in names if n not in qd.ALL_LOADERS]
    if unknown:
        raise ValueError(f"unknown stream(s) {', '.join(unknown)}; known: "
                         f"{', '.join(qd.ALL_LOADERS)}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"first {QUICK_N} samples per stream "
                    f"and {QUICK_TEXT} bytes of text")
    ap.add_argument("--configs", action="store_true", help="run the grid of rnnstream specs")
    ap.add_argument("--grid", choices=("all", "today", "new"), default="all",
                    help="with --configs: which candidates (today's options, the new ones)")
    ap.add_argument("--only", default="", help="with --configs: comma-separated substrings; "
                    "run only the candidates whose name contains one")
    ap.add_argument("--streams", default="",
                    help="comma-separated subset of: " + ", ".join(qd.ALL_LOADERS)
                    + " (default: the suite's " + ", ".join(qd.LOADERS) + ")")
    ap.add_argument("--heldout", action="store_true", help="the held-out streams ("
                    + ", ".join(qd.HELDOUT) + ") instead of the suite's; with --streams, "
                    "those too")
    ap.add_argument("--n", type=int, default=0, help="samples per stream (0: all)")
    ap.add_argument("--text-bytes", type=int, default=0,
                    help=f"bytes of text (default {FULL_TEXT}, {QUICK_TEXT} with --quick)")
    ap.add_argument("--no-deepriver", action="store_true")
    ap.add_argument("--out", default="", help="markdown file to write")
    args = ap.parse_args(argv)
    try:
        names = stream_names(args.streams, args.heldout)
    except ValueError as e:
        ap.error(str(e))
    n_prefix = args.n or (QUICK_N if args.quick else 0)
    text_bytes = args.text_bytes or (QUICK_TEXT if args.quick else FULL_TEXT)
    command = "python -m bench.quality " + " ".join(argv if argv is not None else sys.argv[1:])
    streams = load_streams(names, n_prefix, text_bytes)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    if args.configs:
        peers = cached_best_peers(streams, log=log)
        only = [o.strip() for o in args.only.split(",") if o.strip()]
        table = run_configs(streams, args.grid, log=log, only=only)
        text = configs_markdown(table, peers, command.strip(), {s.name: s.n for s in streams})
        out = Path(args.out or RESULTS / "quality_configs.md")
    else:
        notes = []
        results = run_suite(streams, deepriver=not args.no_deepriver, log=log, notes=notes)
        title = ("Learning quality" + (" on held-out streams" if args.heldout else "")
                 + (" (quick: prefixes)" if args.quick else ""))
        text = markdown(results, title, command.strip(), notes)
        default = ("quality_heldout.md" if args.heldout else
                   "quality_quick.md" if args.quick else "quality.md")
        out = Path(args.out or RESULTS / default)
        write_scores(results, out.with_suffix(".json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(with_hand_written(text, out.read_text() if out.exists() else ""))
    print(text)
    print(f"wrote {out}")
    return 0



HAND_WRITTEN = "(hand-written"


def with_hand_written(generated: str, previous: str) -> str:
    """The new generated part, then the previous file's sections from the first one whose
    heading says it is hand-written: a rerun replaces the tables, not what people wrote."""
    at = next((i for i, line in enumerate(previous.splitlines(keepends=True))
               if line.startswith("## ") and HAND_WRITTEN in line), None)
    if at is None:
        return generated
    kept = "".join(previous.splitlines(keepends=True)[at:])
    return generated.rstrip("\n") + "\n\n" + kept

if __name__ == "__main__":
    sys.exit(main())
