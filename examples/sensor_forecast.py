"""Forecast a real sensor stream online: River's WaterFlow, one hourly reading at a time.

The readings (liters per second through a pipeline branch, March to May 2022, bundled with
the ``river`` package) are pushed through the SDK into an LSTM in next-input mode: at every
hour the model forecasts the next hour, then learns from what came. Every forecast is made
before its value is seen (prequential), so the errors below are honest out-of-sample errors.

The model works on hourly changes (the input is this hour's change, the target the next
hour's change), so the forecast of the level is ``last value + predicted change``; the
persistence baseline, ``next = last``, is the same forecast with a predicted change of 0.

    python examples/sensor_forecast.py --spawn        # or --address HOST:PORT
"""
from __future__ import annotations

import argparse
import math
import sys
import uuid

import numpy as np

from _common import server_address, server_flags
from rnnstream.clients import Client


def load_waterflow() -> np.ndarray:
    from river import datasets
    return np.array([y for _, y in datasets.WaterFlow()], dtype=np.float64)


def run(address: str, *, limit: int | None = None, chunk: int = 24, hidden: int = 32, lr: float = 0.005,
        algorithm: str = "tbptt", warmup: int = 48, plot: str | None = None, seed: int = 0) -> dict:
    flow = load_waterflow()
    if limit:
        flow = flow[:limit]
    change = np.diff(flow)
    # Scale fixed from the warm-up hours only: nothing from the future leaks into it.
    scale = float(np.std(change[:warmup])) or 1.0
    x = (change / scale).astype(np.float32)[:, None]
    name = f"waterflow-{uuid.uuid4().hex[:8]}"
    with Client(address) as client:
        client.create_model(name=name, cell="lstm", hidden_sizes=[hidden], input_size=1, output_size=1,
                            target_mode="next_input", algorithm=algorithm, tbptt_k1=8, tbptt_k2=24,
                            optimizer="adam", lr=lr, clip_norm=1.0, seed=seed)
        try:
            with client.stream(name, "pipe-1") as session:
                predicted = np.concatenate([r.predictions[:, 0] for r in
                                            session.pipeline(x[i:i + chunk] for i in range(0, len(x), chunk))])
        finally:
            client.delete_model(name)
    # predicted[j] is the change forecast after seeing change[j], i.e. for change[j + 1]:
    # the forecast of flow[j + 2] is flow[j + 1] + predicted[j] * scale.
    actual = flow[2:]
    model = flow[1:-1] + predicted[:-1].astype(np.float64) * scale
    persistence = flow[1:-1]
    scored = slice(warmup, None)
    result = {"steps": int(len(actual)), "scored_steps": int(len(actual[scored])),
              "model_mae": _mae(actual[scored], model[scored]), "model_rmse": _rmse(actual[scored], model[scored]),
              "persistence_mae": _mae(actual[scored], persistence[scored]),
              "persistence_rmse": _rmse(actual[scored], persistence[scored])}
    if plot:
        _plot(plot, actual, model, warmup)
        result["plot"] = plot
    return result


def _mae(a, b) -> float:
    return float(np.mean(np.abs(a - b)))


def _rmse(a, b) -> float:
    return float(math.sqrt(np.mean((a - b) ** 2)))


def _plot(path: str, actual: np.ndarray, model: np.ndarray, warmup: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=(3, 1))
    hours = np.arange(len(actual))
    top.plot(hours, actual, lw=1.0, label="actual", color="black")
    top.plot(hours, model, lw=0.9, label="LSTM one-hour-ahead forecast (online)", color="tab:orange")
    top.axvline(warmup, color="grey", lw=0.6, ls="--")
    top.set_ylabel("water flow (l/s)")
    # above the axes: inside, any corner hides some of the maintenance drops to ~25 l/s
    top.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    fig.suptitle("River WaterFlow: prequential one-step-ahead forecast, learned online through rnnstream")
    bottom.plot(hours, np.abs(actual - model), lw=0.8, color="tab:orange", label="|error| LSTM")
    bottom.plot(hours[1:], np.abs(np.diff(actual)), lw=0.8, color="tab:blue", alpha=0.6,
                label="|error| persistence")
    bottom.set_xlabel("hour")
    bottom.set_ylabel("abs error")
    bottom.set_yscale("symlog", linthresh=1.0)
    bottom.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    server_flags(p)
    p.add_argument("--limit", type=int, help="use only the first N readings")
    p.add_argument("--plot", default="waterflow_forecast.png", help="PNG to write ('' for none)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--algorithm", choices=("tbptt", "rtrl", "snap1"), default="tbptt")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with server_address(args) as address:
        r = run(address, limit=args.limit, hidden=args.hidden, lr=args.lr, algorithm=args.algorithm,
                plot=args.plot or None, seed=args.seed)
    print(f"WaterFlow, {r['scored_steps']} one-hour-ahead forecasts scored (after {r['steps'] - r['scored_steps']} "
          "warm-up hours):")
    print(f"  {'':12} {'MAE (l/s)':>10} {'RMSE (l/s)':>11}")
    print(f"  {'LSTM online':12} {r['model_mae']:10.3f} {r['model_rmse']:11.3f}")
    print(f"  {'persistence':12} {r['persistence_mae']:10.3f} {r['persistence_rmse']:11.3f}")
    if r.get("plot"):
        print(f"  plot: {r['plot']}")
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
