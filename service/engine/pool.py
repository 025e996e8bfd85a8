"""Per-stream storage: one slot per stream in growable arrays that the kernels index directly,
so a batch needs no gather or scatter of sensitivities and buffers."""
from __future__ import annotations

import numpy as np

from rnnstream.kernels import codes as kc
from rnnstream.kernels.bundles import POOL_FIELDS

from .features import STAT_FIELDS, STATE_FIELDS, stream_shapes

# the arrays of one stream, in the order of the kernels' pool bundle
STREAM_FIELDS = POOL_FIELDS
# forward results TBPTT and SnAp-1 may reuse; a snapshot without them restores with "recompute"
OPTIONAL_FIELDS = ("hc", "hz", "hs1", "hver")
# per-stream weights and optimizer moments (PER_STREAM models)
WEIGHT_FIELDS = ("weights", "opt_m", "opt_v", "opt_steps")


def sensitivity_width(spec, layout) -> int:
    P, S = layout.num_parameters, layout.state_size
    rule = int(layout.cfg[kc.C_RULE])  # an IndRNN's RTRL runs SnAp-1's kernels (rtrl_is_unit_local)
    if rule == kc.RTRL:
        return S * P
    if rule == kc.SNAP1:
        # the current sensitivity, then (with late labels) a copy per step of the ring, so a
        # label for step s takes SnAp's gradient with the sensitivity of step s
        D = spec.max_label_delay
        return 2 * P * (1 + (D + 1 if D > 0 else 0))
    return 1


class StreamPool:
    def __init__(self, spec, layout, dtype, template, capacity=4):
        self.spec = spec
        self.layout = layout
        self.dtype = np.dtype(dtype)
        self.template = template  # initial weights of new PER_STREAM streams
        self.per_stream = spec.sharing == "per_stream"
        self.slots: dict[str, int] = {}
        self._free: list[int] = []
        self.capacity = 0
        self.arrays: dict[str, np.ndarray] = {}
        self._grow(capacity)

    # shapes ---------------------------------------------------------------------------
    def _shapes(self) -> dict:
        cfg = self.layout.cfg
        S, P = self.layout.state_size, self.layout.num_parameters
        K, I, O = int(cfg[kc.C_HIST]), int(cfg[kc.C_IN]), int(cfg[kc.C_OUT])
        shapes = {
            "state": ((S,), self.dtype), "sens": ((sensitivity_width(self.spec, self.layout),),
                                                  self.dtype),
            "hx": ((K, I), self.dtype), "htok": ((K,), np.int64), "hs": ((K, S), self.dtype),
            "hy": ((K, O), self.dtype), "hcls": ((K,), np.int64), "hflag": ((K,), np.int8),
            "cnt": ((kc.K_NFIELDS,), np.int64), "fst": ((kc.F_NFIELDS,), np.float64),
            # each step's forward results: TBPTT reuses them while the weights are unchanged,
            # NEXT_INPUT scores a pending step with its logits
            "hc": ((K, int(cfg[kc.C_CACHE])), self.dtype), "hz": ((K, O), self.dtype),
            "hs1": ((K, S), self.dtype), "hver": ((K,), np.int64),
        }
        shapes.update(stream_shapes(self.spec, self.dtype))
        if self.per_stream:
            shapes.update({"weights": ((P,), self.dtype), "opt_m": ((P,), self.dtype),
                           "opt_v": ((P,), self.dtype), "opt_steps": ((), np.int64)})
        return shapes

    def _grow(self, capacity):
        old = self.capacity
        for name, (shape, dtype) in self._shapes().items():
            new = np.zeros((capacity,) + shape, dtype=dtype)
            if old:
                new[:old] = self.arrays[name]
            self.arrays[name] = new
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    # slots ----------------------------------------------------------------------------
    def slot(self, sid):
        return self.slots.get(sid)

    def allocate(self, sid) -> int:
        if not self._free:
            self._grow(max(4, 2 * self.capacity))
        slot = self._free.pop()
        self.clear(slot)
        if self.per_stream:
            self.arrays["weights"][slot] = self.template
        self.slots[sid] = slot
        return slot

    def release(self, sid):
        slot = self.slots.pop(sid)
        self._free.append(slot)

    def clear(self, slot, keep_weights=False):
        """Zero a slot; keep_weights keeps what the stream has learned (its weights, optimizer
        moments and, when per stream, its normalisation statistics)."""
        learned = WEIGHT_FIELDS + STAT_FIELDS
        for name in STREAM_FIELDS + STATE_FIELDS + (() if keep_weights else learned):
            if name in self.arrays:
                self.arrays[name][slot] = 0

    def reset_recurrent(self, slot):
        """A segment's end: state, sensitivity and ring back to empty; the step count,
        statistics and weights stay (later labels may not name steps before this)."""
        for name in STREAM_FIELDS:
            if name not in ("cnt", "fst"):
                self.arrays[name][slot] = 0
        cnt = self.arrays["cnt"][slot]
        for k in (kc.K_HCOUNT, kc.K_HPOS, kc.K_NLOSS, kc.K_PENDING, kc.K_NONFINITE):
            cnt[k] = 0

    def bundle(self):
        return tuple(self.arrays[name] for name in STREAM_FIELDS)

    # snapshots ------------------------------------------------------------------------
    def export(self, sid) -> dict:
        slot = self.slots[sid]
        return {name: np.array(arr[slot]) for name, arr in self.arrays.items()}

    def load(self, sid, d: dict):
        shapes = self._shapes()
        d = dict(d)
        if not set(OPTIONAL_FIELDS) & set(d):  # a snapshot from before they existed
            d.update({name: np.zeros(shapes[name][0], shapes[name][1])
                      for name in OPTIONAL_FIELDS})
            d["hver"] = np.full(shapes["hver"][0], -1, dtype=np.int64)  # recompute
        for name in STAT_FIELDS + STATE_FIELDS:  # from before the feature path: start fresh
            if name in shapes and name not in d:
                d[name] = np.zeros(shapes[name][0], shapes[name][1])
        missing = sorted(set(shapes) - set(d))
        if missing:
            raise ValueError(f"stream snapshot lacks {', '.join(missing)}")
        for name, (shape, _) in shapes.items():
            if np.shape(d[name]) != shape:
                raise ValueError(f"stream snapshot field {name} has shape {np.shape(d[name])}, "
                                 f"expected {shape}")
        slot = self.slots.get(sid)
        if slot is None:
            slot = self.allocate(sid)
        for name in shapes:
            self.arrays[name][slot] = d[name]
