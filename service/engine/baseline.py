"""Ensemble members that are not networks: ``{"baseline": "last_target"}`` (persistence).

Persistence predicts, at step t, the stream's last observed target (of a step before t), in
the caller's units. On level series (a random walk, a river's flow) nothing online beats it
by much, so Hedge (service/engine/hedge.py) can move its weight there and to the networks
elsewhere. Before a stream's first target it has nothing to repeat: it then predicts what the
ensemble's first network member predicts, with that member's loss, so the combination stays
NaN-free and the step scores both alike (neither gains weight on it).

It learns nothing (no weights: ``state_dict`` is empty); its per-stream state (the last
target, whether there is one, its running loss and step count) is part of the stream
snapshot. A target it is given is observed also with ``learn=False``: persistence repeats
what the stream showed, as the output taps do; "learning" is for weights.
"""
from __future__ import annotations

import numpy as np

from . import hedge
from .engine import CallStats


def state_shapes(O: int) -> dict:
    """One stream's state; all float64."""
    return {"last_target": (O,), "has_target": (), "running": (2,), "steps": ()}


class WeightlessMember:
    """What a member without weights (persistence, seasonal, kNN, context) answers to the
    ensemble's weight and stream calls; each keeps its streams' state in ``_streams``."""

    kind = ""
    num_parameters = 0

    def param_layout(self):
        return []

    def has_stream(self, sid) -> bool:
        return sid in self._streams

    def state_dict(self, stream_id=None) -> dict:
        return {}

    def load_state_dict(self, d: dict, stream_id=None):
        self._flatten(d)

    def _flatten(self, d: dict):
        if d:
            raise ValueError(f"tensor(s) {', '.join(sorted(d))} name the baseline {self.kind}, "
                             "which has no weights")

    def _theta(self, stream_id=None):
        return None

    def weight_norm(self, stream_id=None) -> float:
        return 0.0

    def statistics_layout(self) -> list:
        return []

    def statistics(self, stream_id=None) -> dict:
        return {}

    def forecast(self, stream_id, horizon: int, fallback) -> np.ndarray:
        """No forecast of its own: the networks' (``fallback``)."""
        return fallback

    def reset_stream(self, sid):
        self._known(sid)
        self._streams[sid] = self._fresh()

    def drop_stream(self, sid):
        self._known(sid)
        del self._streams[sid]

    def stream_stats(self, sid) -> dict:
        s = self._known(sid)
        running, has = s["running"]
        return {"steps": self._steps(s), "updates": 0,
                "running_loss": float(running) if has else float("nan"),
                "gradient_norm": 0.0, "skipped_updates": 0}

    def _steps(self, s: dict) -> int:
        return int(s["steps"])

    def _known(self, sid) -> dict:
        if sid not in self._streams:
            raise ValueError(f"unknown stream {sid!r}: it has not sent a chunk yet "
                             "(or was dropped)")
        return self._streams[sid]


def zeros_of(shapes: dict) -> dict:
    """Zero arrays for ``{name: (shape, dtype)}``."""
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in shapes.items()}


def state_bytes(shapes: dict) -> int:
    """Bytes of the arrays ``{name: (shape, dtype)}`` describes."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
               for shape, dtype in shapes.values())


class PooledMember(WeightlessMember):
    """A member whose learned state lives once in the model when its streams share it
    (``shared``: ``_model``, the fields of ``_model_shapes()``), else in every stream beside
    the fields of ``_stream_shapes()``; both kinds of snapshot carry it, checked on restore.
    Shapes are ``{name: (shape, dtype)}``. ``pooled`` names that state in messages."""

    pooled = "state"

    def _shapes(self) -> dict:
        shapes = self._stream_shapes()
        return shapes if self.shared else {**shapes, **self._model_shapes()}

    def _new(self, shapes: dict) -> dict:
        return zeros_of(shapes)

    def _fresh(self) -> dict:
        return self._new(self._shapes())

    def _classify(self, stream_ids, batch: dict, fallback_preds, fallback_losses, run):
        """One call of a per-step classifier (kNN, tree): ``run(state, x [n, I], classes [n]
        or None)`` gives each step's class probabilities from what came before it, learning
        the steps whose class comes with them; NaN rows (nothing learned yet) take the
        fallback's prediction and loss."""
        x, lengths = batch["inputs"][..., :self.I].astype(np.float64), batch["lengths"]
        labelled = batch["learn"] != 2
        learn = batch["learn"] == 1
        B, T = lengths.shape[0], x.shape[1]
        probs = np.full((B, T, self.C), np.nan)
        for b, sid in enumerate(stream_ids):
            s = self._streams.get(sid) or self._fresh()
            n = int(lengths[b])
            y = batch["tclass"][b, :n] if learn else None
            probs[b, :n] = run(self._model if self.shared else s, x[b, :n], y)
            self._streams[sid] = s
        known = np.isfinite(probs).all(axis=2)
        if labelled:
            chosen = np.take_along_axis(probs, batch["tclass"][..., None].astype(np.int64), 2)[..., 0]
            losses = -np.log(np.maximum(chosen, 1e-300))
        else:
            losses = np.full((B, T), np.nan)
        preds = np.where(known[..., None], probs, fallback_preds)
        losses = np.where(known, losses, fallback_losses)
        active = np.arange(T)[None, :] < lengths[:, None]
        preds = np.where(active[..., None], preds, np.nan)
        losses = np.where(active, losses, np.nan)
        for b, sid in enumerate(stream_ids):
            s = self._streams[sid]
            hedge._running(s["running"][None], losses[b:b + 1])
            s["steps"] = np.float64(s["steps"] + lengths[b])
        self.last_call = CallStats(steps=int(lengths.sum()), batch_streams=B)
        return preds.astype(self.dtype), losses.astype(self.dtype)

    def snapshot_stream(self, sid) -> dict:
        return {name: np.array(a) for name, a in self._known(sid).items()}

    def restore_stream(self, sid, d: dict):
        self._streams[sid] = self._checked(d, self._shapes(), "stream snapshot")

    def snapshot_model(self) -> dict:
        return {name: np.array(a) for name, a in self._model.items()} if self.shared else {}

    def restore_model(self, d: dict):
        if not self.shared:
            if d:
                raise ValueError(f"model snapshot field(s) {', '.join(sorted(d))} name the "
                                 f"baseline {self.kind} of a per-stream model, which keeps its "
                                 f"{self.pooled} per stream")
            return
        self._model = self._checked(d, self._model_shapes(), "model snapshot")

    def _checked(self, d: dict, shapes: dict, what: str) -> dict:
        """``d`` as arrays of exactly ``shapes``, floats finite (``_check_values`` may ask
        more); ValueError naming the first field that is not."""
        out = {}
        for name, (shape, dtype) in shapes.items():
            a = d.get(name)
            if a is None or np.shape(a) != shape:
                raise ValueError(f"{what} field {name} of the baseline {self.kind} is missing or "
                                 f"not of shape {shape}: the snapshot is not of this model")
            out[name] = np.array(a, dtype=dtype)
        extra = sorted(set(d) - set(shapes))
        if extra:
            raise ValueError(f"{what} field(s) {', '.join(extra)} are not of the baseline {self.kind}")
        for name, a in out.items():
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"{what} field {name} of the baseline {self.kind} holds NaN or Inf")
        self._check_values(out, what)
        return out

    def _check_values(self, out: dict, what: str):
        """More than shapes and finiteness, for a member whose fields have a range."""


class LastTarget(WeightlessMember):
    """Persistence for every stream of a regression model with explicit targets."""

    kind = "last_target"

    def __init__(self, out_size: int, dtype=np.float32):
        self.out_size = out_size
        self.dtype = np.dtype(dtype)
        self._streams: dict = {}
        self.last_call = CallStats()

    def step(self, stream_ids, batch: dict, fallback_preds, fallback_losses):
        """Predictions [B, T, O] and losses [B, T] for the ``batch`` (the engine's validated
        batch); steps before a stream's first target take ``fallback_preds`` /
        ``fallback_losses`` (the first network member's). Updates the state."""
        y, lengths = batch["targets"].astype(np.float64), batch["lengths"]
        has_targets = batch["learn"] != 2
        B, T, O = y.shape
        states = [self._streams.get(sid) or self._fresh() for sid in stream_ids]
        last = np.stack([s["last_target"] for s in states])               # [B, O]
        has = np.array([s["has_target"] > 0 for s in states])              # [B]
        active = np.arange(T)[None, :] < lengths[:, None]                  # [B, T]
        if has_targets and T:
            # step t repeats the target of step t - 1; step 0 the stream's last one
            preds = np.concatenate([last[:, None], y[:, :-1]], axis=1)
            known = np.concatenate([has[:, None], np.ones((B, T - 1), bool)], axis=1)
        else:
            preds = np.repeat(last[:, None], T, axis=1)
            known = np.repeat(has[:, None], T, axis=1)
        losses = np.mean((preds - y) ** 2, axis=2) if has_targets else np.full((B, T), np.nan)
        preds = np.where(known[..., None], preds, fallback_preds)
        losses = np.where(known, losses, fallback_losses)
        preds = np.where(active[..., None], preds, np.nan)
        losses = np.where(active, losses, np.nan)
        running = np.stack([s["running"] for s in states])
        hedge._running(running, losses)
        for b, sid in enumerate(stream_ids):
            s = states[b]
            n = int(lengths[b])
            if has_targets and n:
                s["last_target"] = y[b, n - 1].copy()
                s["has_target"] = np.float64(1.0)
            s["running"] = running[b]
            s["steps"] = np.float64(s["steps"] + n)
            self._streams[sid] = s
        self.last_call = CallStats(steps=int(lengths.sum()), batch_streams=B)
        return preds.astype(self.dtype), losses.astype(self.dtype)

    def forecast(self, stream_id, horizon: int, fallback) -> np.ndarray:
        """The last target, flat over the horizon; ``fallback`` [H, O] before the first one."""
        s = self._streams.get(stream_id)  # unknown: as the networks, from a fresh state
        if s is not None and s["has_target"] > 0:
            return np.tile(s["last_target"], (horizon, 1)).astype(self.dtype)
        return fallback

    # streams ----------------------------------------------------------------------------
    def snapshot_stream(self, sid) -> dict:
        return {name: np.array(a, dtype=np.float64) for name, a in self._known(sid).items()}

    def restore_stream(self, sid, d: dict):
        state = {}
        for name, shape in self._shapes().items():
            a = d.get(name)
            if a is None or np.shape(a) != shape:
                raise ValueError(f"stream snapshot field {name} of the baseline {self.kind} is "
                                 f"missing or not of shape {shape}: the snapshot is not of this "
                                 "ensemble")
            state[name] = np.array(a, dtype=np.float64)
        extra = sorted(set(d) - set(state))
        if extra:
            raise ValueError(f"stream snapshot field(s) {', '.join(extra)} are not of the "
                             f"baseline {self.kind}")
        self._check_restored(state)
        self._streams[sid] = state

    def _check_restored(self, state: dict):
        if not np.all(np.isfinite(state["last_target"])):
            raise ValueError("stream snapshot of the baseline last_target holds NaN or Inf")

    def snapshot_model(self) -> dict:
        return {}

    def restore_model(self, d: dict):
        if d:
            raise ValueError(f"model snapshot field(s) {', '.join(sorted(d))} name the "
                             f"baseline {self.kind}, which keeps nothing per model")

    # internals --------------------------------------------------------------------------
    def _scored(self, stream_ids, lengths, losses):
        """After a call of a subclass that keeps its states in ``_streams``: each stream's
        running loss (Hedge's) and step count, and the call's stats."""
        running = np.stack([self._streams[sid]["running"] for sid in stream_ids])
        hedge._running(running, losses)
        for b, sid in enumerate(stream_ids):
            self._streams[sid]["running"] = running[b]
            self._streams[sid]["steps"] = np.float64(self._streams[sid]["steps"] + lengths[b])
        self.last_call = CallStats(steps=int(lengths.sum()), batch_streams=len(stream_ids))

    # a subclass keeping other state names its module's functions here
    state_shapes = staticmethod(state_shapes)
    fresh_state = staticmethod(lambda O: {name: np.zeros(shape)
                                          for name, shape in state_shapes(O).items()})

    def _shapes(self) -> dict:
        return self.state_shapes(self.out_size)

    def _fresh(self) -> dict:
        return self.fresh_state(self.out_size)


def float64_bytes(shapes: dict) -> int:
    """Bytes of one stream's float64 state ``{name: shape}`` (the memory estimate)."""
    return 8 * sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())


def memory_per_stream(out_size: int) -> int:
    return float64_bytes(state_shapes(out_size))
