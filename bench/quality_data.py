"""The quality benchmark's streams, each framed once as (inputs, target) for every method.

Every method sees the same samples in the same order and is scored on each sample before it
learns it (progressive validation). Features stay raw: nothing here scales them, so a method
that needs scaling must bring its own (River's StandardScaler for the peers, the engine's own
defaults for rnnstream).

Framings (why each one):
- ``airline`` (River AirlinePassengers, monthly, 144): the issue's framing. Target: the next
  month's change in passengers; inputs: the 12 previous changes. MAE on the change equals MAE
  on the level, since the last level is known. 131 scored samples (the first 13 months only
  seed the lags).
- ``waterflow`` (River WaterFlow, hourly, 1268): target: the flow at hour t; inputs: the flow
  at t-1 and t-24 (last hour, same hour yesterday), the hour of day and the day of week. The
  first 24 hours only seed the lags: 1244 scored samples.
- ``trump`` (River TrumpApproval, 1001): target: the approval poll level; inputs: River's own
  six features (ordinal date and five pollsters' numbers), raw.
- ``chickweights`` (River ChickWeights, 578, ordered by time so the chicks interleave):
  target: a chick's weight; inputs: time, diet and that chick's previous weight (0 at its first
  weighing). rnnstream keeps one stream per chick; the peers see the same rows in the same
  order.
- ``bananas`` (5300, 2 features, binary), ``phishing`` (1250, 9 features, binary),
  ``imagesegments`` (2310, 18 features, 7 classes): River's features and labels as they are.
- ``text``: CPython's ``pydoc_data.topics``, the topics' texts joined in key order, UTF-8
  bytes, one pass; each byte is predicted from the bytes before it (bits per byte).

Held-out streams (``HELDOUT``; not in the default run: ``python -m bench.quality --heldout``),
framed the same way, never used to choose a default:
- ``shuttle`` (River Shuttle, 49097, 9 features, binary): River's features and labels.
- ``sp500`` (River SP500Stocks, 1257): target: the index's daily change; inputs: River's own
  ten stocks' changes that day, raw (as ``trump``: River's framing of a level-like series).
- ``solarflare`` (River SolarFlare, 1066): target: the sum of the three flare counts; inputs:
  the seven numeric features and the three letter-coded ones one-hot (categories as the data
  has them, sorted).
- River's generators, fixed seed, ``SYNTH_N`` samples each: ``friedman`` (regression),
  ``friedmandrift`` (regression; drifts at samples 1000 and 2000), ``mv`` (regression; its
  three categorical features one-hot), ``hyperplane`` (10 features, slowly rotating),
  ``sea`` (variant 0, 10% label noise), ``agrawal`` (function 0, its ordinal codes raw),
  ``randomrbf`` (10 features, 2 classes) (classification).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REGRESSION, CLASSIFICATION, TEXT = "regression", "classification", "text"


@dataclass
class Stream:
    """One framed benchmark stream. ``X`` [n, I] float64, ``y`` [n] (float targets, or class
    indices 0..num_classes-1), ``keys`` [n] the stream (entity) each row belongs to.
    Time-series streams also carry ``levels``, the univariate series that a forecaster
    (SNARIMAX, Holt-Winters) learns, and ``level_offset`` [n], what turns a forecast level into
    the target (target = level - offset)."""

    name: str
    task: str
    X: np.ndarray
    y: np.ndarray
    keys: list = field(default_factory=list)
    num_classes: int = 0
    levels: np.ndarray | None = None
    level_offset: np.ndarray | None = None
    season: int = 0
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def metric(self) -> str:
        return {REGRESSION: "MAE", CLASSIFICATION: "log loss", TEXT: "bits/byte"}[self.task]

    def prefix(self, n: int) -> "Stream":
        """The first ``n`` samples (all when n <= 0 or n >= len)."""
        if n <= 0 or n >= self.n:
            return self
        cut = lambda a: None if a is None else a[:n]  # noqa: E731
        levels = self.levels
        if levels is not None:
            # the forecasters' series holds the warm-up before the first scored sample
            levels = levels[:len(levels) - self.n + n]
        return Stream(self.name, self.task, self.X[:n], self.y[:n], self.keys[:n],
                      self.num_classes, levels, cut(self.level_offset), self.season, self.note)


def airline() -> Stream:
    from river import datasets
    level = np.array([y for _, y in datasets.AirlinePassengers()], dtype=np.float64)
    d = np.diff(level)  # d[j] = level[j+1] - level[j]
    lags = 12
    X = np.stack([d[j - lags:j][::-1] for j in range(lags, len(d))])  # newest change first
    y = d[lags:]
    # the forecasters see levels up to the one before the target: level[j], target level[j+1]
    return Stream("airline", REGRESSION, X, y, ["airline"] * len(y), levels=level,
                  level_offset=level[lags:-1], season=12,
                  note="next monthly change from the 12 previous changes")


def waterflow() -> Stream:
    from river import datasets
    rows = list(datasets.WaterFlow())
    flow = np.array([y for _, y in rows], dtype=np.float64)
    hour = np.array([x["Time"].hour for x, _ in rows], dtype=np.float64)
    dow = np.array([x["Time"].weekday() for x, _ in rows], dtype=np.float64)
    t = np.arange(24, len(flow))
    X = np.stack([flow[t - 1], flow[t - 24], hour[t], dow[t]], axis=1)
    return Stream("waterflow", REGRESSION, X, flow[t], ["waterflow"] * len(t), levels=flow,
                  level_offset=np.zeros(len(t)), season=24,
                  note="flow from flow at t-1 and t-24, hour of day, day of week")


def trump() -> Stream:
    from river import datasets
    rows = list(datasets.TrumpApproval())
    names = list(rows[0][0])
    X = np.array([[x[k] for k in names] for x, _ in rows], dtype=np.float64)
    y = np.array([y for _, y in rows], dtype=np.float64)
    # the level series for the forecasters starts one step before the first target: a
    # forecaster gets the first level only as its first lesson, like everyone else
    return Stream("trump", REGRESSION, X, y, ["trump"] * len(y),
                  levels=np.concatenate([[np.nan], y]), level_offset=np.zeros(len(y)),
                  note="poll level from River's six raw features")


def chickweights() -> Stream:
    from river import datasets
    last, X, y, keys = {}, [], [], []
    for x, w in datasets.ChickWeights():
        chick = int(x["chick"])
        X.append([x["time"], x["diet"], last.get(chick, 0.0)])
        y.append(float(w))
        keys.append(f"chick-{chick}")
        last[chick] = float(w)
    return Stream("chickweights", REGRESSION, np.array(X, np.float64), np.array(y), keys,
                  note="weight from time, diet, the chick's previous weight; one stream per chick")


def _classification(name, dataset, note) -> Stream:
    rows = list(dataset)
    names = list(rows[0][0])
    labels = sorted({y for _, y in rows}, key=str)
    index = {c: i for i, c in enumerate(labels)}
    X = np.array([[float(x[k]) for k in names] for x, _ in rows], dtype=np.float64)
    y = np.array([index[c] for _, c in rows], dtype=np.int64)
    return Stream(name, CLASSIFICATION, X, y, [name] * len(y), num_classes=len(labels),
                  note=note)


def bananas() -> Stream:
    from river import datasets
    return _classification("bananas", datasets.Bananas(), "2 features, 2 classes")


def phishing() -> Stream:
    from river import datasets
    return _classification("phishing", datasets.Phishing(), "9 features, 2 classes")


def imagesegments() -> Stream:
    from river import datasets
    return _classification("imagesegments", datasets.ImageSegments(), "18 features, 7 classes")


def text_bytes() -> bytes:
    from pydoc_data import topics
    return "".join(topics.topics[k] for k in sorted(topics.topics)).encode("utf-8")


def text() -> Stream:
    data = np.frombuffer(text_bytes(), dtype=np.uint8).astype(np.int64)
    return Stream("text", TEXT, np.zeros((len(data), 0)), data, ["text"] * len(data),
                  num_classes=256, note="pydoc_data.topics, UTF-8 bytes, one pass")


# held-out streams ---------------------------------------------------------------------------
SYNTH_N = 3000  # samples drawn from each synthetic generator
SYNTH_SEED = 42


def _numeric(rows) -> np.ndarray:
    """Dict rows -> [n, I] float64 with every non-numeric column one-hot (its categories as
    the data has them, sorted), in the first row's key order."""
    cols = []
    for k in rows[0]:
        vals = [x[k] for x in rows]
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, str)
               for v in vals):
            cols.append(np.asarray(vals, dtype=np.float64)[:, None])
        else:
            cats = sorted({str(v) for v in vals})
            cols.append(np.array([[str(v) == c for c in cats] for v in vals], np.float64))
    return np.concatenate(cols, axis=1)


def _regression_rows(name, rows, note) -> Stream:
    X = _numeric([x for x, _ in rows])
    y = np.array([float(t) for _, t in rows], dtype=np.float64)
    return Stream(name, REGRESSION, X, y, [name] * len(y), note=note)


def _classification_rows(name, rows, note) -> Stream:
    labels = sorted({c for _, c in rows}, key=str)
    index = {c: i for i, c in enumerate(labels)}
    y = np.array([index[c] for _, c in rows], dtype=np.int64)
    return Stream(name, CLASSIFICATION, _numeric([x for x, _ in rows]), y, [name] * len(y),
                  num_classes=len(labels), note=note)


def shuttle() -> Stream:
    from river import datasets
    return _classification("shuttle", datasets.Shuttle(), "9 features, 2 classes")


def sp500() -> Stream:
    from river import datasets
    rows = list(datasets.SP500Stocks())
    s = _regression_rows("sp500", rows, "the index's daily change from its ten stocks' "
                         "changes that day")
    s.levels, s.level_offset = np.concatenate([[np.nan], s.y]), np.zeros(s.n)
    return s


def solarflare() -> Stream:
    from river import datasets
    rows = [(x, sum(float(v) for v in t.values())) for x, t in datasets.SolarFlare()]
    return _regression_rows("solarflare", rows, "sum of the three flare counts from 7 numeric "
                            "and 3 one-hot categorical features")


def _synth(make, n=SYNTH_N):
    return list(make().take(n))


def friedman() -> Stream:
    from river.datasets import synth
    return _regression_rows("friedman", _synth(lambda: synth.Friedman(seed=SYNTH_SEED)),
                            f"River Friedman #1, seed {SYNTH_SEED}, 10 features")


def friedmandrift() -> Stream:
    from river.datasets import synth
    make = lambda: synth.FriedmanDrift(drift_type="lea", position=(1000, 2000, 2500),  # noqa: E731
                                       seed=SYNTH_SEED)
    return _regression_rows("friedmandrift", _synth(make), f"River FriedmanDrift (local "
                            f"expanding abrupt at 1000, 2000, 2500), seed {SYNTH_SEED}")


def mv() -> Stream:
    from river.datasets import synth
    return _regression_rows("mv", _synth(lambda: synth.Mv(seed=SYNTH_SEED)),
                            f"River Mv, seed {SYNTH_SEED}, categorical features one-hot")


def hyperplane() -> Stream:
    from river.datasets import synth
    make = lambda: synth.Hyperplane(seed=SYNTH_SEED, n_features=10, n_drift_features=2,  # noqa: E731
                                    mag_change=0.001, noise_percentage=0.05)
    return _classification_rows("hyperplane", _synth(make), f"River Hyperplane, seed "
                                f"{SYNTH_SEED}, 10 features, 2 drifting, 5% noise")


def sea() -> Stream:
    from river.datasets import synth
    return _classification_rows("sea", _synth(lambda: synth.SEA(variant=0, noise=0.1,
                                                                seed=SYNTH_SEED)),
                                f"River SEA variant 0, 10% noise, seed {SYNTH_SEED}")


def agrawal() -> Stream:
    from river.datasets import synth
    return _classification_rows("agrawal", _synth(lambda: synth.Agrawal(
        classification_function=0, seed=SYNTH_SEED)), f"River Agrawal function 0, seed "
        f"{SYNTH_SEED}, codes raw")


def randomrbf() -> Stream:
    from river.datasets import synth
    return _classification_rows("randomrbf", _synth(lambda: synth.RandomRBF(
        seed_model=SYNTH_SEED, seed_sample=SYNTH_SEED, n_classes=2, n_features=10,
        n_centroids=50)), f"River RandomRBF, seeds {SYNTH_SEED}, 10 features, 50 centroids")


HELDOUT = {"shuttle": shuttle, "sp500": sp500, "solarflare": solarflare,
           "friedman": friedman, "friedmandrift": friedmandrift, "mv": mv,
           "hyperplane": hyperplane, "sea": sea, "agrawal": agrawal, "randomrbf": randomrbf}

LOADERS = {"airline": airline, "waterflow": waterflow, "trump": trump,
           "chickweights": chickweights, "bananas": bananas, "phishing": phishing,
           "imagesegments": imagesegments, "text": text}
ALL_LOADERS = {**LOADERS, **HELDOUT}
