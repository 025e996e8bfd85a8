"""The reference's online loop: any rule, plain SGD, "test, then train", many streams.

``Learner.step`` has the engine's signature (``Engine.step``), so a test can feed both the
same chunks and compare. With normalisation or taps (tests/reference/features.py) the model
sees standardised, widened rows; predictions and losses are reported in the caller's units.
Order of events (kernels/README.md, "Order of events"): at each
position j of a chunk, every stream predicts step j with the weights in force, then the step's
loss is scored and the rule's gradient (if any) is applied; with shared weights the gradients
of all streams at position j are summed into one update. NEXT_INPUT: a step's loss is scored
against the next input when it arrives, and its update is done before that input is
predicted; ``losses[j]`` is the previous step's loss (NaN for a stream's first step).

Late labels (kernels/README.md, "Late labels"): a call's labels are learned first, in rounds
(the r-th label of every stream, then one summed update per weight set), then its steps run
(without targets they wait for labels; with D > 0, TBPTT first learns a pending step that
would leave its ring), then ``reset_after`` learns what is pending and zeroes the state.

SGD follows ``torch.optim.SGD`` (momentum, dampening 0, nesterov, weight_decay) and clipping
``clip_grad_norm_`` (coef = clip / (norm + 1e-6) when < 1), decay added after clipping.
"""

import numpy as np

from tests.reference.cells import loss_and_grad, model_step, zero_state
from tests.reference.features import Features
from tests.reference.params import flatten, unflatten
from tests.reference.rules import make_rule


def sgd_update(cfg, theta, grad, slot):
    """One torch.optim.SGD step on the flat vector (in place); ``slot`` holds the momentum."""
    g = grad.copy()
    if cfg.clip_norm > 0:
        coef = cfg.clip_norm / (np.linalg.norm(g) + 1e-6)
        if coef < 1.0:
            g *= coef
    if cfg.weight_decay:
        g += cfg.weight_decay * theta
    if cfg.momentum:
        slot["buf"] = g.copy() if slot.get("buf") is None else cfg.momentum * slot["buf"] + g
        g = g + cfg.momentum * slot["buf"] if cfg.nesterov else slot["buf"]
    theta -= cfg.lr * g


class Learner:
    """Streams, weights (shared or per stream) and one rule object per stream."""

    def __init__(self, cfg, params, **rule_kwargs):
        self.cfg = cfg
        self.template = flatten(cfg, params)
        self.weights = {}          # key (None if shared, else stream id) -> {"theta", "slot"}
        self.streams = {}
        self.rule_kwargs = rule_kwargs
        self.skipped = 0
        self.features = Features(cfg)
        self.taps = bool(cfg.input_taps or cfg.output_taps)

    def _key(self, sid):
        return None if self.cfg.sharing == "shared" else sid

    def _weights(self, sid):
        key = self._key(sid)
        if key not in self.weights:
            self.weights[key] = {"theta": self.template.copy(), "slot": {}}
        return self.weights[key]

    def _stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = {"state": zero_state(self.cfg), "pending": None, "steps": 0,
                                 "pending_units": None, "pending_pred": None,
                                 "rule": make_rule(self.cfg, **self.rule_kwargs)}
        return self.streams[sid]

    def params(self, sid=None):
        """The weights as a dict (the shared ones, or stream ``sid``'s)."""
        if sid is None or self._key(sid) is None:
            return unflatten(self.cfg, self.weights[None]["theta"] if None in self.weights
                             else self.template)
        return unflatten(self.cfg, self._weights(sid)["theta"])

    def _apply(self, grads):
        """grads: {key: [(sid, flat gradient)]}; one summed update per weight set."""
        for key, items in grads.items():
            total = sum(g for _, g in items)
            if not np.all(np.isfinite(total)):
                self.skipped += 1
                for sid, g in items:
                    if not np.all(np.isfinite(g)):
                        self.streams[sid]["rule"].forget()
                continue
            w = self.weights[key]
            sgd_update(self.cfg, w["theta"], total, w["slot"])

    def _score(self, sid, cache, target, learn, grads):
        """Loss of one predicted step; collects the rule's gradient (if any)."""
        st = self.streams[sid]
        w = self._weights(sid)
        params = unflatten(self.cfg, w["theta"])
        loss, dz = loss_and_grad(self.cfg, cache["z"], target)
        g = st["rule"].gradient(params, cache, dz, learn, target=target)
        if g is not None:
            grads.setdefault(self._key(sid), []).append((sid, g))
        return loss

    def _rule_grads(self, stream_ids, call):
        """One round: ``call(sid, rule, params)`` -> gradient or None per stream, then one
        summed update per weight set."""
        grads = {}
        for sid in stream_ids:
            st = self._stream(sid)
            g = call(sid, st["rule"], unflatten(self.cfg, self._weights(sid)["theta"]))
            if g is not None:
                grads.setdefault(self._key(sid), []).append((sid, g))
        self._apply(grads)

    def _labels(self, stream_ids, labels):
        """labels[b] = None or (stream step indices, targets): returns each stream's losses."""
        out = [[] for _ in stream_ids]
        todo = {sid: list(zip(*lab)) for sid, lab in zip(stream_ids, labels) if lab is not None}
        rounds = max((len(v) for v in todo.values()), default=0)
        for r in range(rounds):
            def one(sid, rule, params, r=r):
                if r >= len(todo.get(sid, ())):
                    return None
                step, target = todo[sid][r]
                loss, g = rule.label(params, self.streams[sid]["steps"] - 1 - int(step), target)
                out[stream_ids.index(sid)].append(loss)
                return g
            self._rule_grads(stream_ids, one)
        return out

    def step(self, stream_ids, inputs=None, tokens=None, targets=None, target_classes=None,
             learn=True, labels=None, reset_after=False):
        cfg = self.cfg
        fx = self.features
        self.label_losses = self._labels(stream_ids, labels) if labels is not None else []
        seq = tokens if cfg.vocab_size > 0 else inputs
        seq = np.zeros((len(stream_ids), 0)) if seq is None else np.asarray(seq)
        B, T = seq.shape[:2]
        tgt = None
        if cfg.target_mode == "explicit":
            raw = target_classes if cfg.classes else targets
            tgt = None if raw is None else np.asarray(raw)
        preds = np.zeros((B, T, cfg.out_size))
        losses = np.full((B, T), np.nan)
        for j in range(T):
            if cfg.max_label_delay > 0 and cfg.algorithm == "tbptt":
                self._rule_grads(stream_ids, lambda sid, rule, params: rule.due(params))
            # the model's inputs and targets at position j (standardised when asked), and the
            # (mean, scale) that map a prediction back to the caller's units
            xs = [seq[b, j] for b in range(B)]
            units = [None] * B
            if fx.on_inputs:
                xs = [z for z, _, _ in fx.standardize("x", stream_ids, xs)]
                if cfg.target_mode == "next_input":  # predicts the next input: stats after j
                    units = [fx.current("x", sid) for sid in stream_ids]
            ys = None if tgt is None else [tgt[b, j] for b in range(B)]
            if fx.on_targets:
                if ys is None:
                    units = [fx.current("y", sid) for sid in stream_ids]
                else:
                    scaled = fx.standardize("y", stream_ids, ys)
                    ys = [z for z, _, _ in scaled]
                    units = [(m, s) for _, m, s in scaled]
            if cfg.target_mode == "next_input":
                grads = {}
                for b, sid in enumerate(stream_ids):
                    st = self._stream(sid)
                    if st["pending"] is not None:
                        losses[b, j] = self._score(sid, st["pending"], xs[b], learn, grads)
                        if st["pending_units"] is not None:
                            losses[b, j] = np.mean((st["pending_pred"] - seq[b, j]) ** 2)
                self._apply(grads)
            for b, sid in enumerate(stream_ids):
                st = self._stream(sid)
                params = unflatten(cfg, self._weights(sid)["theta"])
                prev = st["state"]
                row = fx.row(sid, xs[b]) if self.taps else xs[b]
                st["state"], cache = model_step(cfg, params, prev, row)
                st["rule"].observe(params, prev, row, cache)
                y = cache["y"]
                preds[b, j] = y if units[b] is None else units[b][0] + units[b][1] * y
                if self.taps:
                    fx.remember(sid, xs[b], cache["y"] if ys is None else fx.target_row(ys[b]))
                st.update(pending=cache, pending_units=units[b], pending_pred=preds[b, j])
                st["steps"] += 1
            if ys is not None:
                grads = {}
                for b, sid in enumerate(stream_ids):
                    losses[b, j] = self._score(sid, self.streams[sid]["pending"], ys[b], learn,
                                               grads)
                    if fx.on_targets:
                        losses[b, j] = np.mean((preds[b, j] - tgt[b, j]) ** 2)
                self._apply(grads)
        reset = np.broadcast_to(np.asarray(reset_after, dtype=bool), (B,))
        if reset.any():
            ids = [sid for sid, r in zip(stream_ids, reset) if r]
            if cfg.algorithm == "tbptt":
                self._rule_grads(ids, lambda sid, rule, params: rule.flush(params))
            for sid in ids:
                st = self._stream(sid)
                st["state"], st["pending"] = zero_state(cfg), None
                st["rule"].reset()
        return preds, losses


def online_sgd(cfg, params, inputs=None, tokens=None, targets=None, target_classes=None,
               chunk_sizes=None):
    """One stream, any rule, SGD, test-then-train: returns (predictions, losses, final weights).

    ``chunk_sizes`` splits the sequence into chunks (the result must not depend on it).
    """
    seq = tokens if cfg.vocab_size > 0 else inputs
    T = len(seq)
    chunk_sizes = chunk_sizes or [T]
    learner = Learner(cfg, params)
    preds, losses, start = [], [], 0
    for n in chunk_sizes:
        sl = slice(start, start + n)
        p, l = learner.step(
            ["s"],
            inputs=None if inputs is None else np.asarray(inputs)[None, sl],
            tokens=None if tokens is None else np.asarray(tokens)[None, sl],
            targets=None if targets is None else np.asarray(targets)[None, sl],
            target_classes=None if target_classes is None else np.asarray(target_classes)[None, sl])
        preds.append(p[0])
        losses.append(l[0])
        start += n
    return np.concatenate(preds), np.concatenate(losses), learner.params("s")
