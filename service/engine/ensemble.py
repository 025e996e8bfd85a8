"""Online model selection: K member engines on the same streams, combined by Hedge.

``make_engine(spec)`` is how the service builds a model: a plain :class:`Engine` when the
spec names fewer than two members (no overhead), else an :class:`EnsembleEngine` with the
same public interface. Network members are plain engines built from ``spec.member_spec(k)``,
so each learns exactly as it would alone; a ``{"baseline": ...}`` member is persistence
(``service.engine.baseline``), which takes its first network member's prediction until its
stream has a target; the ensemble only combines their predictions per stream
(``service.engine.hedge``). Weights are named ``members.{k}.<torch name>``; snapshots are
flat dicts of arrays (``members.{k}.<field>`` and ``hedge.<field>``) the store keeps as is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import baseline, context, hedge, hoeffding, median, neighbours, seasonal, seasonal_scaled
from .batch import validated_batch
from .engine import CallStats, Engine
from .engine import memory_per_stream as _engine_memory_per_stream
from .spec import Spec


def _dense_inputs(spec: Spec) -> int:
    """The dense input width a member may read (0 for token inputs)."""
    return 0 if spec.vocab_size else spec.input_size


# the members that are not networks, by their spec name (spec.BASELINES)
_BASELINES = {
    "last_target": lambda spec, dtype: baseline.LastTarget(spec.out_size, dtype),
    "running_median": lambda spec, dtype: median.Median(spec.out_size, dtype),
    "seasonal": lambda spec, dtype: seasonal.Seasonal(spec.out_size, dtype),
    "seasonal_scaled": lambda spec, dtype: seasonal_scaled.SeasonalScaled(
        spec.out_size, _dense_inputs(spec), dtype),
    "context": lambda spec, dtype: context.ContextMixing(
        spec.vocab_size, spec.sharing != "per_stream", spec.context_table_bits, dtype),
    "knn": lambda spec, dtype: neighbours.Neighbours(spec.input_size, spec.num_classes,
                                                     spec.sharing != "per_stream", dtype),
    "knn_wide": lambda spec, dtype: neighbours.Neighbours(
        spec.input_size, spec.num_classes, spec.sharing != "per_stream", dtype,
        neighbours=neighbours.K_WIDE),
    "tree": lambda spec, dtype: hoeffding.HoeffdingTree(spec.input_size, spec.num_classes,
                                                        spec.sharing != "per_stream", dtype)}
_BASELINE_MEMORY = {"last_target": lambda spec: baseline.memory_per_stream(spec.out_size),
                    "running_median": lambda spec: median.memory_per_stream(spec.out_size),
                    "seasonal": lambda spec: seasonal.memory_per_stream(spec.out_size),
                    "seasonal_scaled": lambda spec: seasonal_scaled.memory_per_stream(
                        spec.out_size, _dense_inputs(spec)),
                    "context": lambda spec: context.memory_per_stream(spec.sharing != "per_stream",
                                                                      spec.context_table_bits),
                    "knn": lambda spec: neighbours.memory_per_stream(spec.input_size,
                                                                     spec.sharing != "per_stream")}
_BASELINE_MEMORY["knn_wide"] = _BASELINE_MEMORY["knn"]  # same window and statistics
_BASELINE_MEMORY["tree"] = lambda spec: hoeffding.memory_per_stream(
    spec.input_size, spec.num_classes, spec.sharing != "per_stream")


def make_engine(spec: Spec, dtype=np.float32):
    """An Engine for a plain spec (or one member, merged in), an EnsembleEngine for K >= 2."""
    spec.validate()
    if len(spec.members) == 1:
        return Engine(spec.member_spec(0), dtype)
    if not spec.members:
        return Engine(spec, dtype)
    return EnsembleEngine(spec, dtype)


# what a member keeps once per model beside network weights (the rest keep nothing there)
_BASELINE_MODEL_MEMORY = {"context": lambda spec: context.memory_per_model(spec.sharing != "per_stream",
                                                                          spec.context_table_bits),
                          "knn": lambda spec: neighbours.memory_per_model(spec.input_size,
                                                                          spec.sharing != "per_stream")}
_BASELINE_MODEL_MEMORY["knn_wide"] = _BASELINE_MODEL_MEMORY["knn"]
_BASELINE_MODEL_MEMORY["tree"] = lambda spec: hoeffding.memory_per_model(
    spec.input_size, spec.num_classes, spec.sharing != "per_stream")


def memory_per_model(spec: Spec) -> int:
    """Bytes the baseline members keep per model (a shared context table, a shared window)."""
    return sum(_BASELINE_MODEL_MEMORY.get(spec.members[k]["baseline"], lambda s: 0)(spec)
               for k in range(len(spec.members)) if spec.is_baseline(k))


def memory_per_stream(spec: Spec) -> int:
    """Bytes one stream holds: every member's share plus its Hedge state."""
    if not spec.members:
        return _engine_memory_per_stream(spec)
    K, O = len(spec.members), spec.out_size
    own = 8 * sum(int(np.prod(s, dtype=np.int64)) for s in hedge.state_shapes(K, O).values())
    return own + sum(_BASELINE_MEMORY[spec.members[k]["baseline"]](spec) if spec.is_baseline(k)
                     else _engine_memory_per_stream(spec.member_spec(k)) for k in range(K))


@dataclass
class EnsembleCallStats(CallStats):
    """CallStats summed over the members, plus what each member did (for metrics)."""

    member_losses: list = None   # K arrays of the step losses, NaN where none
    member_weights: list = None  # K arrays of the streams' weights after the call


class EnsembleEngine:
    """K member engines on the same streams; predictions combined by Hedge, per stream."""

    def __init__(self, spec: Spec, dtype=np.float32):
        spec.validate()
        if not spec.members:
            raise ValueError("an ensemble needs members; use Engine for a plain model")
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.members = [_BASELINES[spec.members[k]["baseline"]](spec, dtype)
                        if spec.is_baseline(k) else Engine(spec.member_spec(k), dtype)
                        for k in range(len(spec.members))]
        self._networks = spec.network_members()
        self._lead = self.members[self._networks[0]]  # validates batches; baselines' fallback
        self.eta = spec.hedge_rate or hedge.default_rate(spec.classify)
        self._hedge = hedge.HedgeStates(len(self.members), spec.out_size)
        self.total_steps = 0
        self.total_updates = 0
        self.last_call = EnsembleCallStats()

    # properties -----------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return sum(m.num_parameters for m in self.members)

    def param_layout(self):
        out, base = [], 0
        for k, m in enumerate(self.members):
            out += [(f"members.{k}.{name}", shape, base + offset)
                    for name, shape, offset in m.param_layout()]
            base += m.num_parameters
        return out

    def has_stream(self, sid) -> bool:
        return sid in self._hedge.rows

    def stream_ids(self):
        return list(self._hedge.rows)

    # the main job ---------------------------------------------------------------------
    def step(self, stream_ids, inputs=None, tokens=None, targets=None, target_classes=None,
             learn=True, lengths=None):
        """As ``Engine.step``; the predictions and losses are the Hedge combination's."""
        t0 = time.perf_counter()
        # Every member validates the same way: refuse here, before any member has moved.
        batch = validated_batch(self._lead, stream_ids, inputs, tokens, targets,
                                target_classes, learn, lengths)
        outs = [None] * len(self.members)
        for k in self._networks:
            outs[k] = self.members[k].step(stream_ids, inputs=inputs, tokens=tokens,
                                           targets=targets, target_classes=target_classes,
                                           learn=learn, lengths=lengths)
        for k, m in enumerate(self.members):
            if outs[k] is None:
                outs[k] = m.step(stream_ids, batch, *outs[self._networks[0]])
        calls = [self.members[k].last_call for k in self._networks]
        K = len(self.members)
        rows, stacked = self._hedge.gather(stream_ids)
        member_preds = np.stack([p for p, _ in outs])
        member_losses = np.stack([l for _, l in outs])
        preds, losses = hedge.combine_chunk(
            stacked, member_preds, member_losses, batch, classify=self.spec.classify,
            next_input=self.spec.target_mode == "next_input", eta=self.eta)
        self._hedge.scatter(rows, stacked)
        weights = hedge.weights(stacked["loss"], self.eta)  # [B, K]
        steps, updates = calls[0].steps, sum(c.updates for c in calls)
        self.total_steps += steps
        self.total_updates += updates
        self.last_call = EnsembleCallStats(
            steps=steps, updates=updates, clipped=sum(c.clipped for c in calls),
            skipped={r: sum(c.skipped[r] for c in calls) for r in calls[0].skipped},
            gradient_norms=[g for c in calls for g in c.gradient_norms],
            seconds=time.perf_counter() - t0, batch_streams=len(stream_ids),
            member_losses=[member_losses[k] for k in range(K)],
            member_weights=[weights[:, k] for k in range(K)])
        return preds.astype(self.dtype), losses.astype(self.dtype)

    def forecast(self, stream_id, horizon: int) -> np.ndarray:
        """Each member forecasts on its own (feeding back its own predictions); the forecasts
        are combined with the stream's current weights, over the members that have one."""
        each = [None] * len(self.members)
        for k in self._networks:
            each[k] = self.members[k].forecast(stream_id, horizon)
        for k, m in enumerate(self.members):
            if each[k] is None:
                each[k] = m.forecast(stream_id, horizon, fallback=each[self._networks[0]])
        each = np.stack(each).astype(np.float64)  # [K, H, O]
        if horizon == 0:
            return each[0].astype(self.dtype)
        row = self._hedge.row(stream_id)
        loss = self._hedge.arrays["loss"][row] if row is not None else np.zeros(len(self.members))
        # a member without a forecast (NaN: it abstains, or diverged) is left out, as in step
        ok = np.isfinite(each).all(axis=(1, 2))
        w = np.where(ok, hedge.weights(loss, self.eta), 0.0)
        if w.sum() == 0:
            return each[self._networks[0]].astype(self.dtype)
        mix = np.einsum("k,kho->ho", w / w.sum(), np.where(ok[:, None, None], each, 0.0))
        return mix.astype(self.dtype)

    # weights --------------------------------------------------------------------------
    def state_dict(self, stream_id=None) -> dict:
        return {f"members.{k}.{name}": a for k, m in enumerate(self.members)
                for name, a in m.state_dict(stream_id).items()}

    def load_state_dict(self, d: dict, stream_id=None):
        parts = self._split(d, "tensor")
        for k, m in enumerate(self.members):  # check all before any member changes
            stats = dict(m.statistics_layout())
            m._flatten({n: v for n, v in parts[k].items() if n not in stats})
            if stream_id is not None:
                m._theta(stream_id)
        for k, m in enumerate(self.members):
            m.load_state_dict(parts[k], stream_id)

    def statistics(self, stream_id=None) -> dict:
        """Each member's normalisation statistics, under ``members.{k}.``."""
        return {f"members.{k}.{name}": a for k, m in enumerate(self.members)
                for name, a in m.statistics(stream_id).items()}

    def statistics_layout(self) -> list:
        return [(f"members.{k}.{name}", shape) for k, m in enumerate(self.members)
                for name, shape in m.statistics_layout()]

    def weight_norm(self, stream_id=None) -> float:
        return float(np.sqrt(sum(m.weight_norm(stream_id) ** 2 for m in self.members)))

    # streams --------------------------------------------------------------------------
    def reset_stream(self, sid):
        """Every member's stream back to a fresh state, and the Hedge weights back to even."""
        self._known(sid)
        for m in self.members:
            m.reset_stream(sid)
        self._hedge.clear(sid)

    def stream_stats(self, sid) -> dict:
        """The combined prediction's running loss; steps as one model; updates, skips summed
        over the members; the gradient norm of the member with the largest weight; and per
        member its own running loss and Hedge weight."""
        state = self._known(sid)
        each = [m.stream_stats(sid) for m in self.members]
        w = hedge.weights(state["loss"], self.eta)
        lead = max(self._networks, key=lambda k: w[k])  # a baseline has no gradient
        running, has = state["running"]
        return {"steps": each[lead]["steps"], "updates": sum(s["updates"] for s in each),
                "running_loss": float(running) if has else float("nan"),
                "gradient_norm": each[lead]["gradient_norm"],
                "skipped_updates": sum(s["skipped_updates"] for s in each),
                "members": [{"index": k, "running_loss": s["running_loss"], "weight": float(w[k])}
                            for k, s in enumerate(each)]}

    def drop_stream(self, sid):
        self._known(sid)
        for m in self.members:
            m.drop_stream(sid)
        self._hedge.drop(sid)

    def snapshot_stream(self, sid) -> dict:
        state = self._known(sid)
        d = {f"hedge.{name}": a.copy() for name, a in state.items()}
        for k, m in enumerate(self.members):
            d.update({f"members.{k}.{name}": a for name, a in m.snapshot_stream(sid).items()})
        return d

    def restore_stream(self, sid, d: dict):
        parts = self._split(d, "stream snapshot field", extra="hedge")
        K, O = len(self.members), self.spec.out_size
        state = {}
        for name, shape in hedge.state_shapes(K, O).items():
            a = parts["hedge"].get(name)
            if a is None or np.shape(a) != shape:
                raise ValueError(f"stream snapshot field hedge.{name} is missing or not of shape "
                                 f"{shape}: the snapshot is not of this ensemble")
            state[name] = np.array(a, dtype=np.float64)
        before = [m.snapshot_stream(sid) if m.has_stream(sid) else None for m in self.members]
        try:
            for k, m in enumerate(self.members):
                m.restore_stream(sid, parts[k])
        except ValueError:
            for m, old in zip(self.members, before):  # undo the members already restored
                if old is not None:
                    m.restore_stream(sid, old)
                elif m.has_stream(sid):
                    m.drop_stream(sid)
            raise
        self._hedge.set(sid, state)

    def snapshot_model(self) -> dict:
        d = {"counters": np.array([self.total_steps, self.total_updates], dtype=np.int64)}
        for k, m in enumerate(self.members):
            d.update({f"members.{k}.{name}": a for name, a in m.snapshot_model().items()})
        return d

    def restore_model(self, d: dict):
        if np.shape(d.get("counters")) != (2,):
            raise ValueError("model snapshot lacks counters: it is not of this ensemble")
        parts = self._split({k: v for k, v in d.items() if k != "counters"}, "model snapshot field")
        before = [m.snapshot_model() for m in self.members]
        try:
            for k, m in enumerate(self.members):
                m.restore_model(parts[k])
        except ValueError:
            for m, old in zip(self.members, before):
                m.restore_model(old)
            raise
        self.total_steps, self.total_updates = (int(c) for c in d["counters"])

    # internals ------------------------------------------------------------------------
    def _known(self, sid) -> dict:
        if sid not in self._hedge.rows:
            raise ValueError(f"unknown stream {sid!r}: it has not sent a chunk yet "
                             "(or was dropped)")
        return self._hedge.get(sid)

    def _split(self, d: dict, what: str, extra: str | None = None) -> dict:
        """``members.{k}.rest`` (and ``{extra}.rest``) keys into one dict per prefix."""
        K = len(self.members)
        parts = {k: {} for k in range(K)}
        if extra:
            parts[extra] = {}
        for key, value in d.items():
            head, _, rest = key.partition(".")
            if head == extra and rest:
                parts[extra][rest] = value
                continue
            index, _, name = rest.partition(".")
            if head != "members" or not index.isdigit() or int(index) >= K or not name:
                raise ValueError(f"{what} {key!r} is not of this ensemble: names are "
                                 f"members.{{0..{K - 1}}}.<name>")
            parts[int(index)][name] = value
        return parts
