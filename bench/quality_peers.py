"""The peers of the quality benchmark: simple baselines, River's models, the compressors.

Each runner takes a framed ``Stream`` and returns its outputs in one form for every method:
predictions [n] (regression) or probabilities [n, num_classes] (classification), each made
before the method learned that sample. Text runners return bits per byte directly.
River models sit behind River's StandardScaler where a River user would put one (linear
models, and the tree and forest regressors, whose leaves are linear models); classification
trees and forests split on raw values and need none.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import math

import numpy as np

from .quality_data import CLASSIFICATION, REGRESSION, TEXT


# simple baselines ------------------------------------------------------------------------
def persistence(stream):
    """Regression: the same stream's previous target (the global previous one for a stream's
    first sample, 0 for the very first)."""
    last, prev, out = {}, 0.0, np.empty(stream.n)
    for i, (key, y) in enumerate(zip(stream.keys, stream.y)):
        out[i] = last.get(key, prev)
        last[key] = prev = float(y)
    return out


def running_mean(stream):
    """Regression: the mean of all targets so far (0 before the first)."""
    csum = np.concatenate([[0.0], np.cumsum(stream.y, dtype=np.float64)[:-1]])
    count = np.arange(stream.n, dtype=np.float64)
    return np.divide(csum, count, out=np.zeros(stream.n), where=count > 0)


def class_prior(stream):
    """Classification: class frequencies so far, Laplace-smoothed (uniform at first)."""
    counts = np.ones(stream.num_classes)
    out = np.empty((stream.n, stream.num_classes))
    for i, c in enumerate(stream.y):
        out[i] = counts / counts.sum()
        counts[c] += 1
    return out


# River -----------------------------------------------------------------------------------
def _features(row):
    return {f"x{j}": float(v) for j, v in enumerate(row)}


def river_supervised(make_model):
    """A runner that predicts, then learns, each row with a fresh River model."""

    def run(stream):
        model = make_model(stream)
        if stream.task == REGRESSION:
            out = np.empty(stream.n)
            for i, (row, y) in enumerate(zip(stream.X, stream.y)):
                x = _features(row)
                out[i] = float(model.predict_one(x) or 0.0)
                model.learn_one(x, float(y))
            return out
        out = np.empty((stream.n, stream.num_classes))
        for i, (row, y) in enumerate(zip(stream.X, stream.y)):
            x = _features(row)
            out[i] = _proba_row(model.predict_proba_one(x), stream.num_classes)
            model.learn_one(x, int(y))
        return out

    return run


def _proba_row(proba: dict, num_classes: int) -> np.ndarray:
    """River's dict of probabilities as a row over every class: a model that knows no class
    yet says uniform; classes it has not seen get 0 (then clipped by the metric, as for all)."""
    row = np.zeros(num_classes)
    for c, p in (proba or {}).items():
        if 0 <= int(c) < num_classes:
            row[int(c)] = max(float(p), 0.0)
    total = row.sum()
    if not math.isfinite(total) or total <= 0:
        return np.full(num_classes, 1.0 / num_classes)
    return row / total


def river_forecaster(make_model):
    """A runner for a univariate forecaster (SNARIMAX, Holt-Winters): it learns the level
    series, forecasts the next level, and the target is that level minus the stream's offset.
    Before the forecaster can forecast (Holt-Winters needs a season or two), it says the last
    level, i.e. persistence."""

    def run(stream):
        model = make_model(stream)
        levels, offset = stream.levels, stream.level_offset
        warm = len(levels) - stream.n
        last = 0.0
        for v in levels[:warm]:
            if np.isfinite(v):
                model.learn_one(float(v))
                last = float(v)
        out = np.empty(stream.n)
        for i in range(stream.n):
            try:
                level = float(model.forecast(horizon=1)[0])
                if not math.isfinite(level):
                    level = last
            except (IndexError, ValueError, ZeroDivisionError):
                level = last
            out[i] = level - offset[i]
            last = float(levels[warm + i])
            model.learn_one(last)
        return out

    return run


def _scaled(model):
    from river import preprocessing
    return preprocessing.StandardScaler() | model


def _linear_regression(optimizer):
    def make(stream):
        from river import linear_model, preprocessing
        # the target standardised too: an intercept learned at lr 0.01 from 0 would take
        # thousands of steps to reach levels like 40 or 100
        return preprocessing.TargetStandardScaler(
            _scaled(linear_model.LinearRegression(optimizer=optimizer())))
    return make


def _logistic(optimizer):
    def make(stream):
        from river import linear_model
        if stream.num_classes == 2:
            return _scaled(linear_model.LogisticRegression(optimizer=optimizer()))
        return _scaled(linear_model.SoftmaxRegression(optimizer=optimizer()))
    return make


def _sgd():
    from river import optim
    return optim.SGD(0.01)


def _adam():
    from river import optim
    return optim.Adam()


def _hoeffding(stream):
    from river import tree
    if stream.task == REGRESSION:
        return _scaled(tree.HoeffdingTreeRegressor())
    return tree.HoeffdingTreeClassifier()


def _arf(stream):
    from river import forest
    if stream.task == REGRESSION:
        # its leaves default to linear models, which diverge on raw levels (MAE ~1e10 on
        # TrumpApproval's ordinal dates unscaled)
        return _scaled(forest.ARFRegressor(n_models=10, seed=42))
    return forest.ARFClassifier(n_models=10, seed=42)


def _snarimax(stream):
    from river import linear_model, optim, preprocessing, time_series
    if stream.name == "airline":
        # River's documented AirlinePassengers setup, on the levels
        return time_series.SNARIMAX(
            p=12, d=1, q=12, m=12, sd=1,
            regressor=preprocessing.StandardScaler() | linear_model.LinearRegression(
                intercept_init=110, optimizer=optim.SGD(0.01), intercept_lr=0.3))
    if stream.season:
        return time_series.SNARIMAX(p=3, d=1, q=2, m=stream.season, sp=1, sq=1)
    return time_series.SNARIMAX(p=3, d=1, q=1)


def _holt_winters(stream):
    from river import time_series
    if stream.name == "airline":
        # River's documented AirlinePassengers setup
        return time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=12,
                                       multiplicative=True)
    if stream.season:
        return time_series.HoltWinters(alpha=0.3, beta=0.01, gamma=0.3,
                                       seasonality=stream.season)
    return time_series.HoltWinters(alpha=0.3, beta=0.1)


def peers_for(stream) -> dict:
    """name -> runner, for the peers that apply to this stream."""
    if stream.task == REGRESSION:
        peers = {"persistence": persistence, "running mean": running_mean,
                 "River LinReg SGD": river_supervised(_linear_regression(_sgd)),
                 "River LinReg Adam": river_supervised(_linear_regression(_adam)),
                 "River HoeffdingTree": river_supervised(_hoeffding),
                 "River ARF(10)": river_supervised(_arf)}
        if stream.levels is not None:
            peers["River SNARIMAX"] = river_forecaster(_snarimax)
            peers["River HoltWinters"] = river_forecaster(_holt_winters)
        return peers
    if stream.task == CLASSIFICATION:
        return {"class prior": class_prior,
                "River LogReg SGD": river_supervised(_logistic(_sgd)),
                "River LogReg Adam": river_supervised(_logistic(_adam)),
                "River HoeffdingTree": river_supervised(_hoeffding),
                "River ARF(10)": river_supervised(_arf)}
    assert stream.task == TEXT
    return {"order-0 adaptive": order0_bits, "gzip -9": _compressor(gzip.compress),
            "bzip2 -9": _compressor(bz2.compress),
            "xz -9": _compressor(lambda b, **_: lzma.compress(b, preset=9))}


# text ------------------------------------------------------------------------------------
def _compressor(compress):
    def run(stream):
        data = stream.y.astype(np.uint8).tobytes()
        if compress is bz2.compress or compress is gzip.compress:
            size = len(compress(data, 9))
        else:
            size = len(compress(data))
        return 8.0 * size / len(data)
    return run


def order0_bits(stream):
    """Adaptive byte frequencies (Laplace): the class prior of text, in bits per byte."""
    counts = np.ones(256)
    bits = 0.0
    for b in stream.y:
        bits -= math.log2(counts[b] / counts.sum())
        counts[b] += 1
    return bits / stream.n
