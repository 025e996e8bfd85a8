"""The reference's feature path (kernels/README.md, "Features"), slow and obvious.

``Welford`` is one set of running statistics; ``Features`` turns one position of a chunk
into the model's input rows: every stream's input is standardised with the statistics as they
were before this position, then the statistics take the position's rows (one shared set, or
one per stream), and each row is widened with the stream's delay taps, read from plain lists
of its past (standardised) inputs and targets.
"""

import numpy as np

VAR_FLOOR_REL = 1e-20
Z_ERROR = 1e20  # an error value (|z| this large): clipped, and the statistics skip its row


class Welford:
    """Weighted Welford with forgetting: n = decay n + 1, mean += delta / n,
    m2 = decay m2 + delta (x - mean); var = m2 / n."""

    def __init__(self, size, decay):
        self.n = 0.0
        self.mean = np.zeros(size)
        self.m2 = np.zeros(size)
        self.decay = decay or 1.0

    def scale(self):
        """sqrt(var), or 0 while it is unknown (n < 2) or below the floor."""
        if self.n <= 0:
            return np.zeros_like(self.mean)
        var = self.m2 / self.n
        known = (var > 0) & (var > VAR_FLOOR_REL * self.mean ** 2)
        return np.where(known, np.sqrt(np.where(known, var, 1.0)), 0.0)

    def standardize(self, x):
        s = self.scale()
        z = np.where(s > 0, (np.asarray(x, np.float64) - self.mean) / np.where(s > 0, s, 1.0), 0.0)
        return np.clip(z, -Z_ERROR, Z_ERROR), self.mean.copy(), s

    def add(self, x):
        x = np.asarray(x, np.float64)
        self.n = self.decay * self.n + 1.0
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.decay * self.m2 + delta * (x - self.mean)


class Features:
    """Standardisation and taps for the streams of one learner."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.stats = {}     # (what, key) -> Welford; key None when shared
        self.past_x = {}    # sid -> [standardised inputs, oldest first]
        self.past_y = {}    # sid -> [standardised targets or predictions]

    @property
    def on_inputs(self):
        return self.cfg.normalize != "off" and self.cfg.vocab_size == 0

    @property
    def on_targets(self):
        # late labels: regression targets stay in their own units (Spec.normalizes_targets)
        return (self.cfg.normalize != "off" and not self.cfg.classes
                and self.cfg.target_mode == "explicit"
                and getattr(self.cfg, "max_label_delay", 0) == 0)

    def _welford(self, what, sid):
        key = (what, None if self.cfg.normalize == "shared" else sid)
        if key not in self.stats:
            size = self.cfg.input_size if what == "x" else self.cfg.out_size
            self.stats[key] = Welford(size, self.cfg.normalize_decay)
        return self.stats[key]

    def standardize(self, what, sids, rows):
        """One position: [(z, mean, scale)] per stream, then the statistics take the rows."""
        out = [self._welford(what, sid).standardize(r) for sid, r in zip(sids, rows)]
        for sid, r, (z, _, _) in zip(sids, rows, out):
            if np.all(np.abs(z) < Z_ERROR):
                self._welford(what, sid).add(r)
        return out

    def current(self, what, sid):
        return self._welford(what, sid).standardize(np.zeros(1))[1:]

    def row(self, sid, z):
        """[z, x_{t-l} per input tap, y_{t-m} per output tap], zeros before the stream has them."""
        cfg = self.cfg
        px, py = self.past_x.setdefault(sid, []), self.past_y.setdefault(sid, [])
        parts = [np.asarray(z, np.float64)]
        for lag in cfg.input_taps:
            parts.append(px[-lag] if lag <= len(px) else np.zeros(cfg.input_size))
        for lag in cfg.output_taps:
            parts.append(py[-lag] if lag <= len(py) else np.zeros(cfg.out_size))
        return np.concatenate(parts)

    def remember(self, sid, z, y):
        """After a step: its standardised input and what stands for its target."""
        self.past_x.setdefault(sid, []).append(np.asarray(z, np.float64))
        self.past_y.setdefault(sid, []).append(np.asarray(y, np.float64))

    def target_row(self, target):
        """What the output taps see of an observed target (one-hot for classes)."""
        if self.cfg.classes:
            return np.eye(self.cfg.out_size)[int(target)]
        return np.asarray(target, np.float64)
