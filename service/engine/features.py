"""The engine's feature path: what happens around the chunk kernel when a model standardises
its data online or feeds delay taps (kernels/README.md, "Features").

Before the kernel: dense inputs (and explicit regression targets) are standardised with the
running statistics, position by position; the kernel's input rows are widened with the taps.
After it: predictions and losses go back to the caller's units, and the running loss is kept
in those units. A model with none of these options never enters this module.
"""
from __future__ import annotations

import numpy as np

from rnnstream.kernels import codes as kc

from . import kernel_tier

# per-stream arrays of this path
STAT_FIELDS = ("norm_x", "norm_y")                          # statistics: kept like weights
STATE_FIELDS = ("npend", "nrun", "tapx", "tapy", "tapn")    # cleared with the stream's state


def stream_shapes(spec, dtype=np.float32) -> dict:
    """The pool arrays one stream of this spec needs for the feature path: the caller-unit
    pending prediction and running loss, per-stream statistics, the tap rings."""
    if not spec.uses_features:
        return {}
    I, O = spec.input_size, spec.out_size
    L = max(spec.input_taps, default=0)
    M = max(spec.output_taps, default=0)
    shapes = {"npend": ((O,), np.float64), "nrun": ((2,), np.float64),
              "tapx": ((L, I), dtype), "tapy": ((M, O), dtype), "tapn": ((2,), np.int64)}
    if spec.normalize == "per_stream":
        shapes.update(norm_x=((1 + 2 * I,), np.float64), norm_y=((1 + 2 * O,), np.float64))
    return shapes


def empty_rings(spec, dtype):
    """Tap rings of a stream that has none (no taps, or no steps yet)."""
    shapes = stream_shapes(spec, dtype)
    if not shapes:
        return (np.zeros((0, spec.input_size), dtype), np.zeros((0, spec.out_size), dtype),
                np.zeros(2, np.int64))
    return tuple(np.zeros(shapes[n][0], shapes[n][1]) for n in ("tapx", "tapy", "tapn"))


class FeaturePath:
    """Standardisation (and taps) of one engine's chunks."""

    def __init__(self, spec):
        self.spec = spec
        I, O = spec.input_size, spec.out_size
        self.decay = float(spec.normalize_decay) or 1.0
        self.shared = spec.normalize == "shared"
        self.next_input = spec.target_mode == "next_input"
        # the loss is rescored in the caller's units when the kernel's targets were standardised
        self.rescore = spec.normalizes_targets or (self.next_input and spec.normalizes_inputs)
        # shared statistics live here (a model snapshot carries them); per-stream ones in the pool
        self.stats = {"norm_x": np.zeros((1, 1 + 2 * I)), "norm_y": np.zeros((1, 1 + 2 * O))}
        self.in_taps = np.asarray(spec.input_taps, dtype=np.int64)
        self.out_taps = np.asarray(spec.output_taps, dtype=np.int64)
        self.taps = bool(spec.input_taps or spec.output_taps)
        self._kernels = kernel_tier.active()  # the build a call uses, read once per call

    # statistics -----------------------------------------------------------------------
    def _table(self, pool, name):
        return self.stats[name] if self.shared else pool.arrays[name]

    def _standardize(self, pool, name, rows, slots, lengths, absorb):
        B, T, D = rows.shape
        sets = np.zeros(B, np.int64) if self.shared else slots
        z = np.empty(rows.shape, rows.dtype)
        mu, sc, mu1, sc1 = np.zeros((4, B, T, D))
        self._kernels.normalize.standardize(self._table(pool, name), sets, rows, lengths,
                                                   self.decay, absorb, z, mu, sc, mu1, sc1)
        return z, (mu, sc), (mu1, sc1)

    def _groups(self):
        spec = self.spec
        return [(what, name) for what, name, on in
                (("input", "norm_x", spec.normalizes_inputs),
                 ("target", "norm_y", spec.normalizes_targets)) if on]

    def statistics_layout(self) -> list:
        """[(name, shape)] of the exported statistics (BatchNorm's names for them)."""
        out = []
        for what, name in self._groups():
            D = self.spec.input_size if name == "norm_x" else self.spec.out_size
            out += [(f"{what}_norm.count", (1,)), (f"{what}_norm.running_mean", (D,)),
                    (f"{what}_norm.running_var", (D,))]
        return out

    def statistics(self, pool, slot=None) -> dict:
        """Weight, mean and (population) variance of the inputs (and targets), float64; {} for
        a per-stream model without a stream."""
        out = {}
        if not self.shared and slot is None:
            return out
        for what, name in self._groups():
            row = self.stats[name][0] if self.shared else pool.arrays[name][slot]
            D = (row.shape[0] - 1) // 2
            n = row[0]
            out[f"{what}_norm.count"] = np.array([n])
            out[f"{what}_norm.running_mean"] = row[1:1 + D].copy()
            out[f"{what}_norm.running_var"] = row[1 + D:] / n if n > 0 else np.zeros(D)
        return out

    def statistics_rows(self, d: dict) -> dict:
        """Validated table rows {norm_x/norm_y: [n, mean, m2]} from exported statistics (all
        three tensors of a group, or none of them); raises ValueError."""
        rows = {}
        for what, name in self._groups():
            keys = [f"{what}_norm.{k}" for k in ("count", "running_mean", "running_var")]
            given = [k for k in keys if k in d]
            if not given:
                continue
            if len(given) != 3:
                raise ValueError(f"statistics need all of {', '.join(keys)}")
            n, mean, var = (np.asarray(d[k], np.float64) for k in keys)
            if not (np.all(np.isfinite(n)) and np.all(np.isfinite(mean))
                    and np.all(np.isfinite(var))) or n.min() < 0 or var.min() < 0:
                raise ValueError(f"{what}_norm: count and running_var must be finite and >= 0, "
                                 "running_mean finite")
            rows[name] = np.concatenate([n.reshape(1), mean.reshape(-1), var.reshape(-1) * n[0]])
        return rows

    def load_statistics(self, pool, rows: dict, slot=None):
        if not rows:
            return
        if not self.shared and slot is None:
            raise ValueError("a per-stream model keeps its statistics per stream: give the "
                             "stream id")
        for name, row in rows.items():
            if self.shared:
                self.stats[name][0] = row
            else:
                pool.arrays[name][slot] = row

    # one chunk ------------------------------------------------------------------------
    def step(self, engine, slots, batch, extras=(None, None)):
        """Engine.step's work for a model with features: returns (preds, losses, calls) with
        calls the kernel runs' (res, gnorms, seconds)."""
        self._kernels = kernel_tier.active()  # one build for the whole call
        spec = self.spec
        pool = engine.pool
        lengths = batch["lengths"]
        inputs, targets = batch["inputs"], batch["targets"]
        learn = batch["learn"]
        rows = inputs
        if spec.normalizes_inputs:
            rows, _, nxt_stats = self._standardize(pool, "norm_x", inputs, slots, lengths, True)
        kt = targets
        if spec.normalizes_targets:
            kt, out_stats, _ = self._standardize(pool, "norm_y", targets, slots, lengths,
                                                 learn != 2)
        elif self.next_input and spec.normalizes_inputs:
            out_stats = nxt_stats
        kbatch = dict(batch, inputs=rows, targets=kt)
        # late labels (extras) never meet the step-by-step path: Spec refuses output taps with
        # max_label_delay, and target standardisation with late regression labels
        if not self.taps:
            preds, losses, res, gnorms, seconds = engine._run_kernel(slots, kbatch, extras)
        elif self.out_taps.size and learn == 2:
            preds, losses, res, gnorms, seconds = self._step_by_step(engine, slots, kbatch)
        else:
            kbatch["inputs"] = self._rows(pool, slots, batch, rows, kt)
            preds, losses, res, gnorms, seconds = engine._run_kernel(slots, kbatch, extras)
        if self.rescore:
            self._kernels.normalize.to_caller_units(
                preds, losses, lengths, out_stats[0], out_stats[1], targets, self.next_input,
                inputs, slots, pool.arrays["npend"], pool.arrays["nrun"], learn != 2)
        return preds, losses, res, gnorms, seconds

    # taps -----------------------------------------------------------------------------
    def _target_rows(self, batch, kt):
        """What the output taps see of each step: the kernel's target row (one-hot classes)."""
        if self.spec.classify:
            return np.eye(self.spec.out_size, dtype=kt.dtype)[batch["tclass"]]
        return kt

    def _rows(self, pool, slots, batch, z, kt, push_targets=True):
        """The kernel's input rows of a chunk; the rings take the chunk's rows (and its
        targets' unless push_targets is False: its predictions will stand in)."""
        a = pool.arrays
        B, T, _ = z.shape
        lengths = batch["lengths"]
        zy = (self._target_rows(batch, kt) if self.out_taps.size
              else np.zeros((B, T, self.spec.out_size), z.dtype))
        rows = np.zeros((B, T, self.spec.feature_size), z.dtype)
        narx = self._kernels.narx
        narx.build_rows(z, zy, lengths, slots, a["tapx"], a["tapy"], a["tapn"], self.in_taps,
                        self.out_taps, rows)
        narx.push_rows(a["tapx"], a["tapn"], 0, slots, z, lengths)
        if self.out_taps.size and push_targets:
            narx.push_rows(a["tapy"], a["tapn"], 1, slots, zy, lengths)
        return rows

    def _step_by_step(self, engine, slots, kbatch):
        """Output taps without targets: the predictions stand in for them, so each position
        runs as its own kernel call and feeds its predictions to the ring before the next."""
        a = engine.pool.arrays
        lengths = kbatch["lengths"]
        B, T = lengths.shape[0], kbatch["T"]
        O = self.spec.out_size
        preds = np.full((B, T, O), np.nan, dtype=engine.dtype)
        losses = np.full((B, T), np.nan, dtype=engine.dtype)
        res = np.zeros(kc.R_NFIELDS, dtype=np.int64)
        norms, seconds = [], 0.0
        for t in range(T):
            on = np.nonzero(lengths > t)[0]
            sub = {k: (v[on, t:t + 1] if k in ("inputs", "tokens", "targets", "tclass") else v)
                   for k, v in kbatch.items()}
            sub.update(lengths=np.ones(on.size, np.int64), T=1)
            sub["inputs"] = self._rows(engine.pool, slots[on], sub, sub["inputs"],
                                       sub["targets"], push_targets=False)
            p, l, r, g, sec = engine._run_kernel(slots[on], sub)
            self._kernels.narx.push_rows(a["tapy"], a["tapn"], 1, slots[on], p,
                                                sub["lengths"])
            preds[on, t] = p[:, 0]
            losses[on, t] = l[:, 0]
            norms.extend(g[:r[kc.R_UPDATES]])
            res += r
            seconds += sec
        gnorms = np.zeros(B * T * 2 + 1)
        gnorms[:len(norms)] = norms
        return preds, losses, res, gnorms, seconds

    # forecasts --------------------------------------------------------------------------
    def current(self, pool, name, slot):
        """(mean, scale) of a statistics table now, float64 [D] each (zeros for no stream)."""
        table = self._table(pool, name)
        D = (table.shape[1] - 1) // 2
        mu, sc, mu1, sc1 = (np.zeros((1, 1, D)) for _ in range(4))
        if self.shared or slot is not None:
            sets = np.zeros(1, np.int64) if self.shared else np.array([slot], np.int64)
            kernel_tier.active().normalize.standardize(table, sets, np.zeros((1, 1, D)),
                                                       np.ones(1, np.int64), 1.0, False,
                                                       np.zeros((1, 1, D)), mu, sc, mu1, sc1)
        return mu[0, 0], sc[0, 0]

    def forecast(self, engine, slot, theta, state, x_last, out):
        """engine.forecast's work with features: standardised feedback, taps rolled forward,
        the result in the caller's units (out is overwritten)."""
        self._kernels = kernel_tier.active()
        spec = self.spec
        I, O = spec.input_size, spec.out_size
        a, c = np.ones(I), np.zeros(I)
        out_mu, out_sc = np.zeros(O), np.ones(O)
        if spec.normalizes_inputs:
            mu_x, sc_x = self.current(engine.pool, "norm_x", slot)
            out_mu, out_sc = mu_x, sc_x
            if spec.normalizes_targets:  # predictions in target units, fed back as inputs
                out_mu, out_sc = self.current(engine.pool, "norm_y", slot)
                ok = sc_x > 0
                a = np.where(ok, out_sc / np.where(ok, sc_x, 1.0), 0.0)
                c = np.where(ok, (out_mu - mu_x) / np.where(ok, sc_x, 1.0), 0.0)
        rings = empty_rings(spec, engine.dtype)
        if slot is not None:
            arr = engine.pool.arrays
            rings = (arr["tapx"][slot], arr["tapy"][slot], arr["tapn"][slot])
        std = np.zeros(out.shape, engine.dtype)
        self._kernels.narx.forecast_rows(
            theta, engine.layout.cfg, engine.layout.lay, state, x_last, rings, self.in_taps,
            self.out_taps, (a.astype(engine.dtype), c.astype(engine.dtype)), std)
        if spec.classify:
            out[:] = std
        else:
            out[:] = out_mu + out_sc * std.astype(np.float64)

    def running_loss(self, pool, slot):
        """The running loss in the caller's units, or None when the kernel's is that."""
        if not self.rescore:
            return None
        run, has = pool.arrays["nrun"][slot]
        return float(run) if has else float("nan")

    # snapshots of the shared statistics ----------------------------------------------
    def snapshot(self) -> dict:
        return {name: a.copy() for name, a in self.stats.items()} if self.shared else {}

    def restore(self, d: dict):
        if not self.shared:
            return
        for name, a in self.stats.items():
            if name in d:  # absent: a snapshot from before the model normalised
                if np.shape(d[name]) != a.shape:
                    raise ValueError(f"model snapshot field {name} has shape "
                                     f"{np.shape(d[name])}, expected {a.shape}")
                a[:] = d[name]
