"""The model specification: the proto's ModelSpec (protos/rnnstream/v1) in snake_case, validated."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from rnnstream.kernels import registry

# cells, variants, rules and optimizers: the kernels' registry is the one table
CELLS = registry.names("cell")
VARIANT_FIELDS = tuple(c.variant_field for c in registry.CELLS.values() if c.variant_field)
LSTM_VARIANTS = registry.names("lstm_variant")
GRU_VARIANTS = registry.names("gru_variant")
ALGORITHMS = registry.names("algorithm")
OPTIMIZERS = registry.names("optimizer")
SHARINGS = ("shared", "per_stream")
DEVICES = ("cpu", "cuda")
TARGET_MODES = ("explicit", "next_input")
NORMALIZATIONS = ("off", "shared", "per_stream")

# torch.optim's defaults
# torch.optim's defaults, except where bench/quality.py measured better untuned: Adam's 1e-3
# was the worst rate tried on most dense streams (1e-2 best); a GRU(512) on bytes wants 1e-3
DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-2, "rmsprop": 1e-2, "adagrad": 1e-2}
DEFAULT_TOKEN_LR = {"sgd": 1e-3, "adam": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2}
DEFAULT_EPS = {"sgd": 0.0, "adam": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10}

MAX_WIDTH = 1 << 16
MAX_TAP = 1 << 12  # longest lag a stream keeps in its ring
# the token embedding width when input_size is left at 0 (never 1: a 1-wide embedding cannot
# tell tokens apart beyond an ordering); bench/quality.py measures it
DEFAULT_EMBEDDING_WIDTH = 64

# What a field left unset becomes, measured by bench/quality.py (README, "Learning quality").
# Dense input: an LSTM(32) that updates every step looking 8 steps back, a linear skip from
# the features to the head, and (regression) the last observed target as an input (NARX).
# Token input: a wider GRU updated every 16 steps (per-step updates cost 10x for nothing there).
AUTO_DENSE = dict(cell="lstm", hidden_sizes=(32,), algorithm="tbptt", tbptt_k1=1, tbptt_k2=8,
                  optimizer="adam")
AUTO_TOKENS = dict(cell="gru", hidden_sizes=(512,), algorithm="tbptt", tbptt_k1=16,
                   tbptt_k2=16, optimizer="adam")
# A dense model given only its shape runs these members side by side, combined by Hedge:
# Adam won the classification streams, SGD the smooth regression ones, and no single member
# was best everywhere; all clip at norm 1 (SGD at lr 0.1 diverged without, and Adam lost
# nothing with it: geometric-mean ratio to the best peer 1.15 clipped at 1, 1.21 at 5).
AUTO_MEMBERS = ({"lr": 1e-2, "clip_norm": 1.0}, {"lr": 3e-2, "clip_norm": 1.0},
                {"optimizer": "sgd", "lr": 3e-2, "clip_norm": 1.0},
                {"optimizer": "sgd", "lr": 0.1, "clip_norm": 1.0})
# A dense regression model with explicit targets also runs persistence (the last observed
# target): on level series it beats every network member, and Hedge then weights it up; and
# a season with its period found online whose swing follows the series' magnitude
# (seasonal_scaled; AirlinePassengers: ratio to the best peer 1.52 -> 1.30 with seasonal
# naive, 1.07 with the scaled season in its place; the other regression streams unchanged).
# A running median (P^2), which Hedge, weighing regression members by absolute error, follows
# where no learner beats a constant: held-out SolarFlare (mostly-zero counts) MAE 0.414 ->
# 0.355, SP500 (near random walk) 0.581 -> 0.562; the other regression streams within 0.3%
# (bench/results/quality_defaults.md).
AUTO_BASELINES = ({"baseline": "last_target"}, {"baseline": "seasonal_scaled"},
                  {"baseline": "running_median"})
# The fields whose being unset makes a spec "shape only" (then it gets AUTO_MEMBERS).
LEARNING_FIELDS = ("cell", "hidden_sizes", "algorithm", "tbptt_k1", "tbptt_k2", "optimizer", "lr")

# Ensembles (online model selection, service/engine/ensemble.py): the fields a member may
# override. The rest (input/output shape, vocab, target mode, sharing, device) every member
# shares with the model, so their predictions can be combined step by step.
MEMBER_FIELDS = ("cell", "lstm_variant", "gru_variant", "hidden_sizes", "algorithm", "tbptt_k1",
                 "tbptt_k2", "optimizer", "lr", "momentum", "nesterov", "betas", "eps", "alpha",
                 "clip_norm", "weight_decay", "seed")
MAX_MEMBERS = 8
# members that are not networks ({"baseline": name}, service/engine/baseline.py)
BASELINES = ("last_target", "seasonal", "seasonal_scaled", "context", "knn", "knn_wide", "tree",
             "running_median")
# A dense classification model given only its shape also runs k nearest neighbours over its
# last labelled steps: River's Bananas 1.72 -> 0.86 of ARF(10)'s log loss, ImageSegments 0.55
# -> 0.46, Phishing unchanged (Hedge keeps the networks there). A second one with 30
# neighbours averages out label noise: held-out River SEA (10% noise) 1.05 -> 1.00 of ARF's log
# loss, Shuttle 0.0224 -> 0.0215, Bananas 0.2493 -> 0.2470, the other classification streams
# within 0.1% (bench/results/quality_heldout.md). A Hoeffding tree finds a class that is a
# threshold on one raw feature: held-out River Agrawal 1.31 -> 0.58 of River HoeffdingTree's log
# loss (0.2941 -> 0.1313), the other classification streams within 0.25%
# (`python -m bench.quality_probes with-tree`).
AUTO_CLASS_BASELINES = ({"baseline": "knn"}, {"baseline": "knn_wide"}, {"baseline": "tree"})
# A byte model (vocab_size <= 256, next_input) given only its shape also runs the context-mixing
# member beside its network: on pydoc_data.topics it alone scores 1.40 bits/byte in one pass
# against the GRU's 1.99 and bzip2 -9's 1.68, and Hedge follows whichever predicts better.
AUTO_TOKEN_BASELINES = ({"baseline": "context"},)
# its table: 2^22 slots (16 MiB); 2^20 scored 1.435 bits/byte on that text against 1.403
CONTEXT_TABLE_BITS = 22
CONTEXT_TABLE_RANGE = (10, 26)


@dataclass
class Spec:
    """What a model is and how it learns. Enum-like fields are lower-case strings."""

    name: str = ""
    cell: str = ""  # "": lstm (dense input) or gru (tokens), AUTO_DENSE / AUTO_TOKENS
    lstm_variant: str = "standard"
    gru_variant: str = "pytorch"
    hidden_sizes: tuple = ()  # (): (32,) dense, (512,) tokens
    input_size: int = 0  # dense: the feature count (required); tokens: 0 = the default width
    vocab_size: int = 0
    output_size: int = 0
    num_classes: int = 0
    algorithm: str = ""  # "": tbptt
    tbptt_k1: int = 0  # 0: 1 (dense) or 16 (tokens)
    tbptt_k2: int = 0  # 0: same as k1 when k1 is set, else 8 (dense) or 16 (tokens)
    optimizer: str = ""  # "": adam
    lr: float | None = None  # None: DEFAULT_LR (tokens: DEFAULT_TOKEN_LR) for the optimizer
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple = (0.9, 0.999)
    eps: float | None = None
    alpha: float = 0.99
    clip_norm: float = 0.0
    weight_decay: float = 0.0
    sharing: str = "shared"
    device: str = "cpu"
    seed: int = 0
    target_mode: str = "explicit"
    # K member overrides run side by side, combined by Hedge; () or one member: a plain model;
    # None: AUTO_MEMBERS when the spec names only its shape (no LEARNING_FIELDS, dense, cpu)
    members: tuple | None = None
    hedge_rate: float = 0.0  # 0: the default of service.engine.hedge (by head kind)
    max_label_delay: int = 0  # > 0: labels may arrive up to this many steps after their step
    # online standardisation of dense inputs and regression targets (kernels/README.md,
    # "Features"): off, shared (one set of statistics per model) or per_stream; "" (unset)
    # follows `sharing`: shared weights share statistics, per-stream models (independent of
    # each other) keep their own, so a stream's results never depend on the others'
    normalize: str = ""
    normalize_decay: float = 0.0  # 0: plain Welford; in (0, 1): exponential forgetting
    input_taps: tuple = ()        # lags l of the input fed beside x_t (TDNN / NARX)
    # lags m of the observed target fed beside x_t (NARX); None: (1,) for a dense regression
    # model with explicit targets on time (the last observed target), else ()
    output_taps: tuple | None = None
    linear_skip: bool | None = None  # y = head(h) + skip.weight . features; None: dense cpu
    # the context member's statistics table: 2^bits slots of 4 bytes; 0: CONTEXT_TABLE_BITS
    # when the model has a context member (the spec then names it), else unused
    context_table_bits: int = 0

    def __post_init__(self):
        self._fill_defaults()
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        self.betas = tuple(float(b) for b in self.betas)
        self.members = tuple(_member_overrides(m) for m in self.members)
        self.input_taps = tuple(int(t) for t in self.input_taps)
        self.output_taps = tuple(int(t) for t in self.output_taps)
        if self.vocab_size and not self.input_size:
            self.input_size = DEFAULT_EMBEDDING_WIDTH
        if not self.normalize:
            self.normalize = "per_stream" if self.sharing == "per_stream" else "shared"

    def _fill_defaults(self):
        """Unset fields take the measured defaults; the spec then names every value in
        effect (what a checkpoint stores and `models show` prints)."""
        dense = not self.vocab_size
        cpu = self.device in ("cpu", "")
        shape_only = all(not getattr(self, f) for f in LEARNING_FIELDS)
        # a dense regression on the CPU whose targets come with their steps: the last observed
        # target is an input (NARX) and, in the default ensemble, a member of its own
        narx = (dense and cpu and bool(self.output_size) and self.target_mode in ("explicit", "")
                and not self.max_label_delay)
        base = AUTO_DENSE if dense else AUTO_TOKENS
        k1_set = bool(self.tbptt_k1)
        for f in ("cell", "hidden_sizes", "algorithm", "optimizer"):
            if not getattr(self, f):
                setattr(self, f, base[f])
        if not k1_set:
            self.tbptt_k1 = self.tbptt_k2 or base["tbptt_k1"]
        if not self.tbptt_k2:
            self.tbptt_k2 = self.tbptt_k1 if k1_set else max(base["tbptt_k2"], self.tbptt_k1)
        if self.members is None:
            ensemble = shape_only and dense and cpu and not self.max_label_delay
            self.members = (AUTO_MEMBERS + (AUTO_BASELINES if narx else ())) if ensemble else ()
            if ensemble and self.knn_fits():
                self.members += AUTO_CLASS_BASELINES
            if shape_only and self.context_fits() and cpu:
                self.members = ({},) + AUTO_TOKEN_BASELINES
        if len(self.members) >= 2 and not self.hedge_rate:
            # named, so a stored model keeps its rate when the measured default changes
            from .hedge import default_rate
            self.hedge_rate = default_rate(self.classify)
        if not self.context_table_bits and any(isinstance(m, dict) and m.get("baseline") == "context"
                                               for m in self.members):
            self.context_table_bits = CONTEXT_TABLE_BITS
        if self.linear_skip is None:
            self.linear_skip = dense and cpu
        if self.output_taps is None:
            self.output_taps = (1,) if narx else ()

    # derived values -------------------------------------------------------------------
    @property
    def classify(self) -> bool:
        return self.num_classes > 0

    @property
    def out_size(self) -> int:
        return self.num_classes if self.classify else self.output_size

    @property
    def k2(self) -> int:
        return self.tbptt_k2 or self.tbptt_k1

    @property
    def normalizes_inputs(self) -> bool:
        """Dense inputs are standardised (tokens have nothing to standardise)."""
        return self.normalize != "off" and self.vocab_size == 0

    @property
    def normalizes_targets(self) -> bool:
        """Explicit regression targets are standardised with statistics of their own
        (NEXT_INPUT's targets are the inputs, standardised with the input statistics). Not
        with late labels: a label would meet statistics that moved since its step was
        predicted, so late regression targets are learned in their own units."""
        return (self.normalize != "off" and not self.classify
                and self.target_mode == "explicit" and self.max_label_delay == 0)

    @property
    def feature_size(self) -> int:
        """Width of the kernel's input row: x_t, then x_{t-l} per input tap, then y_{t-m}
        per output tap."""
        return (self.input_size * (1 + len(self.input_taps))
                + self.out_size * len(self.output_taps))

    @property
    def uses_features(self) -> bool:
        """Any option that the engine's feature path handles (no extra work when False)."""
        return (self.normalizes_inputs or self.normalizes_targets or bool(self.input_taps)
                or bool(self.output_taps))

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return (DEFAULT_TOKEN_LR if self.vocab_size else DEFAULT_LR)[self.optimizer]

    @property
    def epsilon(self) -> float:
        return DEFAULT_EPS[self.optimizer] if self.eps is None else float(self.eps)

    # validation -----------------------------------------------------------------------
    def validate(self) -> "Spec":
        """Raise ValueError naming the first field that is wrong and what it should be."""
        _one_of("cell", self.cell, CELLS)
        for field in VARIANT_FIELDS:
            _one_of(field, getattr(self, field), registry.names(field))
        _one_of("algorithm", self.algorithm, ALGORITHMS)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("sharing", self.sharing, SHARINGS)
        _one_of("device", self.device, DEVICES)
        _one_of("target_mode", self.target_mode, TARGET_MODES)
        if not self.hidden_sizes:
            raise ValueError("hidden_sizes must name at least one layer, e.g. [32]")
        for k, h in enumerate(self.hidden_sizes):
            _size(f"hidden_sizes[{k}]", h)
        if self.vocab_size == 0 and self.input_size == 0:
            raise ValueError("input_size must be set to the number of features of a dense "
                             "model (it may be left at 0 only for token input, where it is "
                             f"the embedding width, default {DEFAULT_EMBEDDING_WIDTH})")
        _size("input_size", self.input_size)
        if self.vocab_size < 0 or self.vocab_size > 1 << 24:
            raise ValueError(f"vocab_size must be in [0, 2^24], got {self.vocab_size}")
        if (self.output_size > 0) == (self.num_classes > 0):
            raise ValueError("set exactly one of output_size (regression) and num_classes "
                             f"(classification); got output_size={self.output_size}, "
                             f"num_classes={self.num_classes}")
        _size("output_size" if self.output_size else "num_classes", self.out_size)
        if self.classify and self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.target_mode == "next_input":
            if self.vocab_size > 0:
                if not self.classify or self.num_classes != self.vocab_size:
                    raise ValueError("next_input with token input predicts the next token: set "
                                     f"num_classes = vocab_size ({self.vocab_size})")
            elif self.classify or self.output_size != self.input_size:
                raise ValueError("next_input with dense input predicts the next input: set "
                                 f"output_size = input_size ({self.input_size})")
        if self.algorithm == "tbptt":
            if self.tbptt_k1 < 1:
                raise ValueError(f"tbptt_k1 must be >= 1, got {self.tbptt_k1}")
            if self.tbptt_k2 and self.tbptt_k2 < self.tbptt_k1:
                raise ValueError(f"tbptt_k1 ({self.tbptt_k1}) must be <= tbptt_k2 "
                                 f"({self.tbptt_k2})")
            if self.k2 > 100_000:
                raise ValueError(f"tbptt_k2 must be <= 100000, got {self.k2}")
        _label_delay_ok(self)
        lr = self.learning_rate
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.momentum) and self.momentum >= 0):
            raise ValueError(f"momentum must be a finite number >= 0, got {self.momentum}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not (0.0 <= self.alpha < 1.0):
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        eps = self.epsilon
        if not (math.isfinite(eps) and eps > 0) and self.optimizer != "sgd":
            # eps = 0 divides 0 by 0 for every parameter whose gradient is still zero
            raise ValueError(f"eps must be a finite number > 0, got {self.eps} "
                             f"(the default for {self.optimizer} is {DEFAULT_EPS[self.optimizer]})")
        for name in ("clip_norm", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        limit = registry.limit_for(self)
        if limit is not None:
            others = [r for r in ALGORITHMS if r != limit.rule]
            raise ValueError(f"{limit.rule} on a {'stacked ' if limit.stacked_only else ''}"
                             f"{limit.cell} model does not run on device '{limit.device}' "
                             f"({limit.why}); use another device, or {'/'.join(others)} "
                             f"on {limit.device}")
        self._validate_features()
        if not (0 <= int(self.seed) < 1 << 64):
            raise ValueError(f"seed must be in [0, 2^64), got {self.seed}")
        self._validate_members()
        return self

    # ensembles ------------------------------------------------------------------------
    def member_spec(self, k: int) -> "Spec":
        """Member ``k``: this spec with the member's overrides, as a plain (memberless) spec."""
        if self.is_baseline(k):
            raise ValueError(f"members[{k}] is the baseline {self.members[k]['baseline']!r}, "
                             "not a network: it has no spec of its own")
        return dataclasses.replace(self, members=(), hedge_rate=0.0, **self.members[k])

    def is_baseline(self, k: int) -> bool:
        """Member ``k`` is a baseline (``{"baseline": name}``), not a network."""
        return "baseline" in self.members[k]

    def network_members(self) -> list:
        """The indices of the members that are networks."""
        return [k for k in range(len(self.members)) if not self.is_baseline(k)]

    def _validate_members(self):
        if len(self.members) > MAX_MEMBERS:
            raise ValueError(f"members: at most {MAX_MEMBERS} members, got {len(self.members)}")
        if not (math.isfinite(self.hedge_rate) and self.hedge_rate >= 0):
            raise ValueError(f"hedge_rate must be a finite number >= 0 (0: the default), "
                             f"got {self.hedge_rate}")
        if len(self.members) > 1 and self.max_label_delay > 0:
            # the combination's weights are scored per step as it is predicted; a late label
            # would have to rescore a combination made steps ago
            raise ValueError("an ensemble (two or more members) takes its targets with its steps: "
                             "max_label_delay > 0 needs a single model")
        for k, overrides in enumerate(self.members):
            if "baseline" in overrides:
                self._validate_baseline(k, overrides)
                continue
            fixed = sorted(set(overrides) - set(MEMBER_FIELDS))
            if fixed:
                raise ValueError(
                    f"members[{k}] may not set {', '.join(fixed)}: a member overrides only "
                    f"{', '.join(MEMBER_FIELDS)}; shapes, vocab, target mode, sharing and "
                    "device are the model's, shared by every member")
            try:
                self.member_spec(k).validate()
            except (ValueError, TypeError) as exc:
                raise ValueError(f"members[{k}]: {exc}") from None
        if self.members and not self.network_members():
            raise ValueError("members: an ensemble needs at least one network member (a "
                             "baseline alone learns nothing and has no prediction before its "
                             "first target)")

    def knn_fits(self) -> bool:
        """A dense classifier whose classes come with their steps."""
        return (not self.vocab_size and self.num_classes > 0 and self.target_mode == "explicit"
                and not self.max_label_delay)

    def context_fits(self) -> bool:
        """A byte model: tokens of at most 256 kinds predicting the next token."""
        return 0 < self.vocab_size <= 256 and self.target_mode == "next_input"

    def _validate_baseline(self, k: int, overrides: dict):
        where = f"members[{k}]"
        if set(overrides) != {"baseline"}:
            raise ValueError(f"{where} is a baseline: it sets only 'baseline', got "
                             f"{', '.join(sorted(overrides))}")
        if overrides["baseline"] not in BASELINES:
            raise ValueError(f"{where}.baseline must be one of {', '.join(BASELINES)} (or the "
                             f"member is a network: leave it out); got {overrides['baseline']!r}")
        if overrides["baseline"] in ("knn", "knn_wide", "tree"):
            if not self.knn_fits():
                verb = "splits on" if overrides["baseline"] == "tree" else "votes with"
                raise ValueError(f"{where}: the baseline {overrides['baseline']} {verb} labelled dense inputs, so "
                                 "it needs a dense classification model (num_classes, no "
                                 "vocab_size) with target_mode explicit and max_label_delay 0")
            return
        if overrides["baseline"] == "context":
            if not self.context_fits() or self.device not in ("cpu", ""):
                raise ValueError(f"{where}: the baseline context models bytes, so it needs a "
                                 "token model with vocab_size at most 256, target_mode "
                                 "next_input, on the CPU")
            lo, hi = CONTEXT_TABLE_RANGE
            if not lo <= self.context_table_bits <= hi:
                raise ValueError(f"context_table_bits must be in {lo}..{hi} (a table of "
                                 f"2^bits slots of 4 bytes; 0: {CONTEXT_TABLE_BITS}), got "
                                 f"{self.context_table_bits}")
            return
        if self.classify or self.target_mode != "explicit" or self.max_label_delay:
            raise ValueError(f"{where}: the baseline {overrides['baseline']} predicts from the "
                             "observed targets, so it needs a regression model (output_size) with "
                             "target_mode explicit and max_label_delay 0")
    def _validate_features(self):
        _one_of("normalize", self.normalize, NORMALIZATIONS)
        d = self.normalize_decay
        if not (math.isfinite(d) and (d == 0.0 or 0.0 < d < 1.0)):
            raise ValueError(f"normalize_decay must be 0 (no forgetting) or in (0, 1), e.g. "
                             f"0.999; got {d}")
        for name in ("input_taps", "output_taps"):
            taps = getattr(self, name)
            if any(not 1 <= t <= MAX_TAP for t in taps) or len(set(taps)) != len(taps):
                raise ValueError(f"{name} must be distinct lags in [1, {MAX_TAP}], got "
                                 f"{list(taps)}")
        if (self.input_taps or self.output_taps) and self.vocab_size > 0:
            raise ValueError("input_taps/output_taps need dense input; a token model sees "
                             "its past through its state (or use a dense model)")
        if self.output_taps and self.target_mode == "next_input":
            raise ValueError("output_taps with target_mode next_input repeat the input: the "
                             "target of step t-m is input t-m+1; use input_taps instead")
        _size("feature row (input_size x (1 + input taps) + outputs x output taps)",
              self.feature_size)
        if self.device == "cuda" and (self.linear_skip or self.input_taps or self.output_taps):
            raise ValueError("linear_skip, input_taps and output_taps run on device 'cpu' "
                             "only for now (the CUDA kernels lack them); use device='cpu'")

    # serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["betas"] = list(self.betas)
        d["members"] = [{k: list(v) if isinstance(v, tuple) else v for k, v in m.items()}
                        for m in self.members]
        d["input_taps"] = list(self.input_taps)
        d["output_taps"] = list(self.output_taps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown spec field(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        if "normalize" not in d:  # stored before normalisation existed: it keeps running without
            d = dict(d, normalize="off")
        # stored before these had measured defaults: they keep running as they were
        d = {"members": (), "linear_skip": False, "output_taps": (), **d}
        return cls(**d)


def _member_overrides(m) -> dict:
    if not isinstance(m, dict):
        raise ValueError(f"each member must be a dict of overridden spec fields, got {m!r}")
    m = dict(m)
    if "hidden_sizes" in m:
        m["hidden_sizes"] = tuple(int(h) for h in m["hidden_sizes"])
    if "betas" in m:
        m["betas"] = tuple(float(b) for b in m["betas"])
    return m
def _label_delay_ok(spec):
    d = spec.max_label_delay
    if not isinstance(d, int) or not 0 <= d <= 100_000:
        raise ValueError(f"max_label_delay must be an integer in [0, 100000], got {d!r}")
    if d == 0:
        return
    if spec.target_mode != "explicit":
        raise ValueError("max_label_delay > 0 needs target_mode 'explicit': with next_input the "
                         "target of a step is the next input, it never arrives late")
    if not registry.RULES[spec.algorithm].late_labels:
        late = " or ".join(f"'{r.name}'" for r in registry.RULES.values() if r.late_labels)
        raise ValueError(f"max_label_delay > 0 needs algorithm {late}: {spec.algorithm} cannot "
                         "learn from a label after its step (RTRL would keep an S x P "
                         "sensitivity for every step a label may still name)")
    if spec.device != "cpu":
        raise ValueError("max_label_delay > 0 runs on device 'cpu' only (the CUDA kernels have "
                         "no late-label path yet)")
    if spec.output_taps:
        raise ValueError("max_label_delay > 0 cannot use output_taps: a tap feeds the observed "
                         "target of an earlier step, which a late label has not brought yet")


def _one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _size(name, value):
    if not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
        raise ValueError(f"{name} must be an integer in [1, {MAX_WIDTH}], got {value!r}")
