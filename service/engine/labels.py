"""Checks of late labels and segment resets (kernels/README.md, "Late labels"), before any
state is touched: a refused call changes nothing."""
from __future__ import annotations

import numpy as np

from rnnstream.kernels import codes as kc


def validated_labels(engine, stream_ids, labels, learn):
    """The kernels' label bundle (count [B], back [B, L], targets [B, L, O], classes [B, L],
    losses [B, L]), or None when no stream has labels. ``back`` counts steps before the
    stream's latest step."""
    if labels is None:
        return None
    spec = engine.spec
    B = len(stream_ids)
    if isinstance(labels, (str, bytes)) or len(labels) != B:
        raise ValueError(f"labels must hold one entry per stream ({B}): None or (steps, values)")
    rows = [(b, entry) for b, entry in enumerate(labels) if entry is not None]
    if not any(len(np.atleast_1d(entry[0])) for _, entry in rows):
        return None
    if spec.max_label_delay == 0:
        raise ValueError("this model takes no late labels: create it with max_label_delay > 0 "
                         "(and send targets with the chunk's steps until then)")
    if not learn:
        raise ValueError("labels are for learning: a predict-only call cannot carry them")
    D, K, O = spec.max_label_delay, int(engine.layout.cfg[kc.C_HIST]), spec.out_size
    L = max(len(np.atleast_1d(entry[0])) for _, entry in rows)
    count = np.zeros(B, np.int64)
    back = np.zeros((B, L), np.int64)
    ys = np.zeros((B, L, O), engine.dtype)
    classes = np.zeros((B, L), np.int64)
    arrays = engine.pool.arrays
    for b, entry in rows:
        sid = stream_ids[b]
        if len(entry) != 2:
            raise ValueError(f"labels of stream {sid!r} must be (steps, values)")
        steps = np.atleast_1d(np.asarray(entry[0]))
        n = steps.shape[0]
        if n == 0:
            continue
        if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(f"label steps of stream {sid!r} must be a list of integers")
        _label_values(spec, sid, entry[1], n, ys[b, :n], classes[b, :n])
        slot = engine.pool.slot(sid)
        ran = 0 if slot is None else int(arrays["cnt"][slot, kc.K_STEPS])
        held = 0 if slot is None else min(int(arrays["cnt"][slot, kc.K_HCOUNT]), K)
        latest = ran - 1
        pos = 0 if slot is None else int(arrays["cnt"][slot, kc.K_HPOS])
        seen = set()
        for i, s in enumerate(steps.tolist()):
            if s > latest:
                raise ValueError(f"label for step {s} of stream {sid!r} is in the future: its "
                                 f"latest step is {latest} (a chunk's own steps take their "
                                 "targets with the chunk)")
            if s < latest - D:
                raise ValueError(f"label for step {s} of stream {sid!r} is too late: "
                                 f"max_label_delay is {D} and the latest step is {latest}, so "
                                 f"steps from {max(latest - D, 0)} on can be labelled")
            if s < ran - held:
                raise ValueError(f"label for step {s} of stream {sid!r} is from before the "
                                 f"stream's last reset (step {ran - held} on can be labelled)")
            if s in seen:
                raise ValueError(f"step {s} of stream {sid!r} is labelled twice in this call")
            seen.add(s)
            e = (pos - 1 - (latest - s)) % K
            if arrays["hflag"][slot, e] != kc.FLAG_NONE:
                raise ValueError(f"step {s} of stream {sid!r} already has its target (sent "
                                 "with its chunk or in an earlier label)")
            back[b, i] = latest - s
        count[b] = n
    return count, back, ys, classes, np.full((B, L), np.nan, engine.dtype)


def _label_values(spec, sid, values, n, ys, classes):
    if spec.classify:
        c = np.atleast_1d(np.asarray(values))
        if c.shape != (n,) or not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"labels of stream {sid!r}: {n} target classes (integers) expected, "
                             f"got shape {c.shape} {c.dtype}")
        if c.min() < 0 or c.max() >= spec.num_classes:
            raise ValueError(f"label class out of range: every class must be in [0, "
                             f"{spec.num_classes}), got {c.min()}..{c.max()}")
        classes[:] = c
        return
    y = np.asarray(values)
    if y.shape != (n, spec.output_size) or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"labels of stream {sid!r}: targets of shape [{n}, output_size="
                         f"{spec.output_size}] expected, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"labels of stream {sid!r} hold NaN or Inf")
    ys[:] = y


def validated_reset(engine, stream_ids, reset_after):
    """A bool [B] array of the streams to reset after the call, or None."""
    if reset_after is None:
        return None
    flags = np.asarray(reset_after, dtype=bool)
    if flags.ndim == 0:
        flags = np.full(len(stream_ids), bool(flags))
    if flags.shape != (len(stream_ids),):
        raise ValueError(f"reset_after must be one bool, or one per stream ({len(stream_ids)}), "
                         f"got shape {flags.shape}")
    if not flags.any():
        return None
    if engine.spec.device != "cpu":
        raise ValueError("reset_after runs on device 'cpu' only; on cuda call reset_stream "
                         "after the chunk")
    return flags
