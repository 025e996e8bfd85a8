"""Engine: an in-process online learner for many streams of one model. No gRPC in here.

The engine validates everything before it touches any state, so a call that raises
ValueError leaves the weights, the optimizer and every stream exactly as they were.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rnnstream.kernels import codes as kc
from rnnstream.kernels.bundles import BATCH_LEARN

from . import kernel_tier
from .batch import Constants, constant_arrays, validated_batch
from .cpu_backend import CpuBackend
from .features import FeaturePath, empty_rings, stream_shapes
from .labels import validated_labels, validated_reset
from .layout import OPT_CODE, build_layout, init_weights
from .malloc import keep_freed_memory
from .pool import StreamPool, sensitivity_width
from .spec import Spec
from .threads import limit_kernel_blas_threads

SKIP_REASONS = ("nonfinite_loss", "nonfinite_gradient")


@dataclass
class CallStats:
    """What the last ``Engine.step`` did, for metrics."""

    steps: int = 0
    updates: int = 0
    clipped: int = 0
    skipped: dict = field(default_factory=lambda: {r: 0 for r in SKIP_REASONS})
    gradient_norms: list = field(default_factory=list)
    seconds: float = 0.0
    batch_streams: int = 0
    label_losses: list = field(default_factory=list)  # per stream: the losses of its labels


def memory_per_stream(spec: Spec) -> int:
    """Bytes one stream holds: state, RTRL/SnAp sensitivity or TBPTT window, own weights."""
    layout = build_layout(spec)
    cfg = layout.cfg
    P, S = layout.num_parameters, layout.state_size
    K, I, O = int(cfg[kc.C_HIST]), int(cfg[kc.C_IN]), int(cfg[kc.C_OUT])
    C = int(cfg[kc.C_CACHE])
    # the ring: input, state before and after, target, logits, forward cache per step
    floats = S + sensitivity_width(spec, layout) + K * (I + 2 * S + 2 * O + C)
    if spec.sharing == "per_stream":
        floats += 3 * P
    feature_bytes = sum(int(np.prod(shape)) * np.dtype(dt).itemsize
                        for shape, dt in stream_shapes(spec).values())
    # per step: token, class, version (int64) and flag (int8)
    return 4 * floats + K * 25 + 8 * (kc.K_NFIELDS + kc.F_NFIELDS) + feature_bytes


class Engine:
    """Runs one model's streams: ``step`` predicts and learns, chunk after chunk.

    >>> import numpy as np
    >>> from rnnstream.service.engine import Engine, Spec
    >>> engine = Engine(Spec(cell="gru", hidden_sizes=(8,), input_size=2, output_size=1, seed=0))
    >>> x = np.ones((3, 5, 2), dtype=np.float32)            # [B streams, T steps, inputs]
    >>> predictions, losses = engine.step(["a", "b", "c"], inputs=x, targets=x[:, :, :1])
    >>> predictions.shape, losses.shape
    ((3, 5, 1), (3, 5))
    >>> engine.stream_stats("a")["steps"]                   # each stream keeps its own state
    5
    >>> sorted(engine.state_dict())[:2]                     # PyTorch's names and shapes
    ['bias_hh_l0', 'bias_ih_l0']
    """

    def __init__(self, spec: Spec, dtype=np.float32):
        spec.validate()
        limit_kernel_blas_threads()
        keep_freed_memory()
        if spec.device == "cuda":
            from .cuda_backend import require_cuda
            require_cuda()  # fail here, at model creation, never at the first chunk
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.layout = build_layout(spec)
        P = self.layout.num_parameters
        theta0 = init_weights(spec, self.layout, self.dtype)
        self.hyp = _hyper(spec)
        self._model = (self.layout.cfg, self.layout.lay, self.hyp)
        self.pool = StreamPool(spec, self.layout, self.dtype, theta0)
        self._features = FeaturePath(spec) if spec.uses_features else None
        if spec.sharing == "shared":
            self._W = theta0.reshape(1, P).copy()
            self._m = np.zeros((1, P), self.dtype)
            self._v = np.zeros((1, P), self.dtype)
            self._steps = np.zeros(1, np.int64)
        self.total_steps = 0
        self.total_updates = 0
        self.last_call = CallStats()
        self._bundle_key, self._bundle_cache = None, None
        self._constant_cache: dict = {}
        if spec.device == "cuda":
            from .cuda_backend import CudaBackend
            shared = None if self.pool.per_stream else (self._W, self._m, self._v, self._steps)
            self.backend = CudaBackend(self.layout, self.hyp, self.dtype, self.pool, shared)
        else:
            self.backend = CpuBackend(self._model, self._bundles, self.pool.per_stream)

    # properties -----------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return self.layout.num_parameters

    def param_layout(self):
        return [(p.name, p.shape, p.offset) for p in self.layout.params]

    def has_stream(self, sid) -> bool:
        return sid in self.pool.slots

    def stream_ids(self):
        return list(self.pool.slots)

    # the main job ---------------------------------------------------------------------
    def step(self, stream_ids, inputs=None, tokens=None, targets=None, target_classes=None,
             learn=True, lengths=None, labels=None, reset_after=None):
        """Predict, then learn, T steps of each of B streams.

        inputs [B, T, input_size] (or tokens [B, T]); targets [B, T, output_size] (or
        target_classes [B, T]) in EXPLICIT mode, none in NEXT_INPUT mode; lengths [B] for
        ragged batches (rows padded to T). Returns predictions [B, T, output_size or
        num_classes] and losses [B, T], in the caller's units also when the model
        standardises its data (service/engine/features.py); entries past a row's length are
        NaN.

        Late labels (a model with max_label_delay > 0; kernels/README.md, "Late labels"):
        without targets, the steps wait for labels. ``labels[b]`` is None or ``(steps,
        values)``: stream step indices (0-based count of the stream's steps, at most
        max_label_delay before its latest step, not yet labelled) and their targets [n,
        output_size] or classes [n]. They are learned before this call's steps run; their
        losses land in ``last_call.label_losses``. With labels or ``reset_after``, inputs may
        be None (no new steps) and rows may have length 0. ``reset_after[b]`` (or one bool
        for all): after the labels and steps, stream b's pending TBPTT losses are learned and
        its recurrent state, sensitivity and ring go to zero; weights, step count and
        statistics stay.
        """
        extras = labels is not None or (reset_after is not None and bool(np.any(reset_after)))
        batch = validated_batch(self, stream_ids, inputs, tokens, targets, target_classes,
                                learn, lengths, allow_empty=extras)
        lab = None if labels is None else validated_labels(self, stream_ids, labels, learn)
        reset = None if reset_after is None else validated_reset(self, stream_ids, reset_after)
        pool = self.pool
        slots = [pool.slots.get(sid) for sid in stream_ids]
        if None in slots:  # new streams, allocated in the order given
            new = []
            for b, sid in enumerate(stream_ids):
                if slots[b] is None:
                    slots[b] = pool.allocate(sid)
                    new.append(slots[b])
            self.backend.push(new)
        slots = np.array(slots, dtype=np.int64)
        B = slots.shape[0]
        extras = (lab, reset)
        if self._features is None:
            preds, losses, res, gnorms, seconds = self._run_kernel(slots, batch, extras)
        else:
            preds, losses, res, gnorms, seconds = self._features.step(self, slots, batch, extras)
        if batch["learn"] == 2:
            losses[:] = np.nan
        r = res.tolist()
        steps, n_up, clipped = r[kc.R_STEPS], r[kc.R_UPDATES], r[kc.R_CLIPPED]
        skip_loss, skip_grad = r[kc.R_SKIP_LOSS], r[kc.R_SKIP_GRAD]
        self.total_steps += steps
        self.total_updates += n_up
        self.last_call = CallStats(
            steps, n_up, clipped, {"nonfinite_loss": skip_loss, "nonfinite_gradient": skip_grad},
            gnorms[:n_up].tolist() if n_up else [], seconds, B,
            [] if lab is None else [lab[4][b, :lab[0][b]].copy() for b in range(B)])
        return preds, losses

    def _run_kernel(self, slots, batch, extras=(None, None)):
        """One chunk kernel call on the batch as given (features already applied), with the
        late labels learned before its steps and the resets done after them (extras)."""
        lab, reset = extras
        B, T = batch["lengths"].shape[0], batch["T"]
        O = self.spec.out_size
        preds = np.empty((B, T, O), dtype=self.dtype)
        preds.fill(np.nan)
        losses = np.empty((B, T), dtype=self.dtype)
        losses.fill(np.nan)
        res = np.zeros(kc.R_NFIELDS, dtype=np.int64)
        n_labels = 0 if lab is None else lab[1].shape[1]
        # the kernel writes gnorms[:updates] and nothing else reads it: no need to clear it
        gnorms = np.empty(B * (T + 1) * 2 + B * n_labels + 1, dtype=np.float64)
        wrow = slots if self.pool.per_stream else self._constants(B, T).rows
        kbatch = (slots, wrow, batch["inputs"], batch["tokens"], batch["targets"],
                  batch["tclass"], batch["lengths"], batch["learn"])
        out = (preds, losses, res, gnorms)
        t0 = time.perf_counter()
        if lab is not None:
            self.backend.learn_labels(kbatch[:BATCH_LEARN] + (1,), lab, out)  # 1: learn
        if T > 0:
            self.backend.run_chunk(kbatch, out)
        if reset is not None:
            self.backend.learn_pending(kbatch, reset, out)
            for b in np.nonzero(reset)[0]:
                self.pool.reset_recurrent(int(slots[b]))
        return preds, losses, res, gnorms, time.perf_counter() - t0

    def forecast(self, stream_id, horizon: int) -> np.ndarray:
        """The next ``horizon`` predictions, each fed back as the next input; the stream's
        state is not changed. Needs output == input (dense) or num_classes == vocab_size."""
        horizon = int(horizon)
        if horizon < 0:
            raise ValueError(f"horizon must be >= 0, got {horizon}")
        spec = self.spec
        if spec.vocab_size > 0:
            if not (spec.classify and spec.num_classes == spec.vocab_size):
                raise ValueError("forecast feeds predictions back as tokens: it needs "
                                 "num_classes == vocab_size")
        elif spec.classify or spec.output_size != spec.input_size:
            raise ValueError("forecast feeds predictions back as inputs: it needs "
                             "output_size == input_size")
        out = np.zeros((horizon, spec.out_size), dtype=self.dtype)
        if horizon == 0:
            return out
        slot = self.pool.slot(stream_id)
        self._pull(stream_id if slot is not None else None)
        state = (np.zeros(self.layout.state_size, self.dtype) if slot is None
                 else self.pool.arrays["state"][slot])
        if self._features is not None or spec.linear_skip:
            x_last = np.zeros(int(self.layout.cfg[kc.C_IN]), self.dtype)
            cnt = None if slot is None else self.pool.arrays["cnt"][slot]
            if cnt is not None and cnt[kc.K_HCOUNT] > 0:
                K = int(self.layout.cfg[kc.C_HIST])
                x_last = self.pool.arrays["hx"][slot, (cnt[kc.K_HPOS] - 1) % K]
            theta = self._theta(stream_id)
            if self._features is not None:
                self._features.forecast(self, slot, theta, state, x_last, out)
            else:
                I = spec.input_size
                kernel_tier.active().narx.forecast_rows(
                    theta, self.layout.cfg, self.layout.lay, state, x_last,
                    empty_rings(spec, self.dtype), np.zeros(0, np.int64), np.zeros(0, np.int64),
                    (np.ones(I, self.dtype), np.zeros(I, self.dtype)), out)
            return out
        kernel_tier.active().chunk.forecast(self._theta(stream_id), self.layout.cfg,
                                            self.layout.lay, state, horizon, out)
        return out

    # weights --------------------------------------------------------------------------
    def state_dict(self, stream_id=None) -> dict:
        self._pull(stream_id)
        theta = self._theta(stream_id)
        return {p.name: theta[p.offset:p.offset + p.size].reshape(p.shape).copy()
                for p in self.layout.params}

    def load_state_dict(self, d: dict, stream_id=None):
        """Set the weights from PyTorch-named tensors (all of them, exact shapes, finite).
        PER_STREAM without a stream id: the weights new streams start from. Normalisation
        statistics (``statistics()``'s names) may come along; they are set too."""
        layout = dict(self.statistics_layout())
        stats = {k: v for k, v in d.items() if k in layout}
        for k, v in stats.items():
            if np.shape(v) != layout[k]:
                raise ValueError(f"{k} has shape {np.shape(v)}, expected {layout[k]}")
        rows = self._features.statistics_rows(stats) if stats else {}
        slot = None
        if rows and self.spec.normalize == "per_stream":
            slot = None if stream_id is None else self.pool.slot(stream_id)
            if slot is None:
                raise ValueError("this model keeps its statistics per stream: import them with "
                                 "the id of a stream that has sent a chunk")
        flat = self._flatten({k: v for k, v in d.items() if k not in layout})
        self._pull(stream_id)
        self._theta(stream_id)[:] = flat
        self._push(stream_id)
        self._forget_forward_results()
        if rows:
            self._features.load_statistics(self.pool, rows, slot)

    def statistics(self, stream_id=None) -> dict:
        """The normalisation statistics as tensors: ``input_norm.`` / ``target_norm.`` +
        ``count``, ``running_mean``, ``running_var`` (the model's, or stream ``stream_id``'s for
        per-stream statistics); {} when it has none."""
        if self._features is None:
            return {}
        slot = None if stream_id is None else self._slot(stream_id)
        return self._features.statistics(self.pool, slot)

    def statistics_layout(self) -> list:
        """[(name, shape)] of the statistics tensors ``statistics()`` may return."""
        return [] if self._features is None else self._features.statistics_layout()

    def weight_norm(self, stream_id=None) -> float:
        self._pull(stream_id)
        return float(np.linalg.norm(self._theta(stream_id).astype(np.float64)))

    # streams --------------------------------------------------------------------------
    def reset_stream(self, sid):
        """Back to a zero state (and zero sensitivity, empty window, fresh stats); the
        weights a PER_STREAM stream has learned are kept."""
        slot = self._slot(sid)
        self._pull(sid)
        self.pool.clear(slot, keep_weights=True)
        self._push(sid)

    def stream_stats(self, sid) -> dict:
        slot = self._slot(sid)
        self._pull(sid)
        cnt = self.pool.arrays["cnt"][slot]
        fst = self.pool.arrays["fst"][slot]
        running = float(fst[kc.F_RUNNING]) if fst[kc.F_HASLOSS] else float("nan")
        if self._features is not None:
            caller = self._features.running_loss(self.pool, slot)
            running = running if caller is None else caller
        return {"steps": int(cnt[kc.K_STEPS]), "updates": int(cnt[kc.K_UPDATES]),
                "running_loss": running,
                "gradient_norm": float(fst[kc.F_GNORM]),
                "skipped_updates": int(cnt[kc.K_SKIPPED])}

    def add_stream(self, sid):
        """A stream at its start, as its first chunk would make it (zero state; PER_STREAM:
        the weights new streams start from), so its weights can be set before it runs."""
        if self.pool.slot(sid) is None:
            self.pool.allocate(sid)
            self._push(sid)

    def drop_stream(self, sid):
        self._slot(sid)
        self.pool.release(sid)

    def snapshot_stream(self, sid) -> dict:
        self._slot(sid)
        self._pull(sid)
        return self.pool.export(sid)

    def restore_stream(self, sid, d: dict):
        self.pool.load(sid, d)
        self._push(sid)

    def snapshot_model(self) -> dict:
        self._pull(None)
        d = {"template": self.pool.template.copy(),
             "counters": np.array([self.total_steps, self.total_updates], dtype=np.int64)}
        if not self.pool.per_stream:
            d.update(weights=self._W.copy(), opt_m=self._m.copy(), opt_v=self._v.copy(),
                     opt_steps=self._steps.copy())
        if self._features is not None:
            d.update(self._features.snapshot())
        return d

    def restore_model(self, d: dict):
        P = self.num_parameters
        if np.shape(d.get("template")) != (P,):
            raise ValueError(f"model snapshot does not fit this spec ({P} parameters)")
        if not self.pool.per_stream:
            for name in ("weights", "opt_m", "opt_v"):
                if np.shape(d.get(name)) != (1, P):
                    raise ValueError(f"model snapshot field {name} does not fit this spec")
            self._W[:] = d["weights"]
            self._m[:] = d["opt_m"]
            self._v[:] = d["opt_v"]
            self._steps[:] = d["opt_steps"]
        if self._features is not None:
            self._features.restore(d)
        self.pool.template[:] = d["template"]
        self.total_steps, self.total_updates = (int(c) for c in d["counters"])
        self._forget_forward_results()
        self._push(None)

    # internals ------------------------------------------------------------------------
    def _forget_forward_results(self):
        """The weights changed outside an update: TBPTT must recompute its window."""
        self.pool.arrays["hver"][:] = -1

    def _pull(self, sid):
        """Refresh the host arrays (the shared weights, stream ``sid``'s columns if any) from
        where the backend keeps them, before the host reads or edits them (CPU: they are)."""
        if not self.pool.per_stream:
            self.backend.pull_shared()
        if sid is not None and sid in self.pool.slots:
            self.backend.pull([self.pool.slots[sid]])

    def _push(self, sid):
        """Send the host arrays back to the backend after the host edited them."""
        if not self.pool.per_stream:
            self.backend.push_shared()
        if sid is not None and sid in self.pool.slots:
            self.backend.push([self.pool.slots[sid]])

    def _weights(self):
        if self.pool.per_stream:
            a = self.pool.arrays
            return (a["weights"], a["opt_m"], a["opt_v"], a["opt_steps"])
        return (self._W, self._m, self._v, self._steps)

    def _bundles(self):
        """The kernels' weights and pool bundles, built again only when the pool has grown
        (its arrays are replaced then; everywhere else they are written in place)."""
        key = id(self.pool.arrays["state"])
        if self._bundle_key != key:
            self._bundle_cache = (self._weights(), self.pool.bundle())
            self._bundle_key = key
        return self._bundle_cache

    def _constants(self, B: int, T: int) -> Constants:
        """Arrays the kernels only read, made once per batch shape: a small model's call is
        short enough that a handful of allocations shows."""
        c = self._constant_cache.get((B, T))
        if c is None:
            if len(self._constant_cache) >= 64:  # many batch shapes: start over, stay small
                self._constant_cache.clear()
            c = self._constant_cache[B, T] = constant_arrays(B, T, self.dtype, self.spec.out_size)
        return c

    def _slot(self, sid) -> int:
        slot = self.pool.slot(sid)
        if slot is None:
            raise ValueError(f"unknown stream {sid!r}: it has not sent a chunk yet "
                             "(or was dropped)")
        return slot

    def _theta(self, stream_id=None) -> np.ndarray:
        if not self.pool.per_stream:
            if stream_id is not None and stream_id not in self.pool.slots:
                raise ValueError(f"unknown stream {stream_id!r}")
            return self._W[0]
        if stream_id is None:
            return self.pool.template
        return self.pool.arrays["weights"][self._slot(stream_id)]

    def _flatten(self, d: dict) -> np.ndarray:
        params = self.layout.by_name()
        unknown = sorted(set(d) - set(params))
        if unknown:
            raise ValueError(f"unknown parameter name(s) {', '.join(unknown)}; this model has "
                             f"{', '.join(params)}")
        missing = [n for n in params if n not in d]
        if missing:
            raise ValueError(f"missing parameter(s) {', '.join(missing)}")
        flat = np.empty(self.num_parameters, dtype=self.dtype)
        for name, p in params.items():
            a = np.asarray(d[name])
            if a.shape != p.shape:
                raise ValueError(f"{name} has shape {a.shape}, expected {p.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} holds NaN or Inf")
            flat[p.offset:p.offset + p.size] = a.reshape(-1)
        return flat


def _hyper(spec: Spec) -> np.ndarray:
    h = np.zeros(kc.O_NFIELDS, dtype=np.float64)
    h[kc.O_KIND] = OPT_CODE[spec.optimizer]
    h[kc.O_LR] = spec.learning_rate
    h[kc.O_MOMENTUM] = spec.momentum
    h[kc.O_NESTEROV] = float(spec.nesterov)
    h[kc.O_BETA1], h[kc.O_BETA2] = spec.betas
    h[kc.O_EPS] = spec.epsilon
    h[kc.O_ALPHA] = spec.alpha
    h[kc.O_WD] = spec.weight_decay
    h[kc.O_CLIP] = spec.clip_norm
    return h

