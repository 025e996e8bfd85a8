"""The model specification: DESIGN.md's ModelSpec in snake_case, validated."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

CELLS = ("elman", "jordan", "lstm", "gru")
LSTM_VARIANTS = ("standard", "peephole", "coupled", "no_forget")
GRU_VARIANTS = ("pytorch", "cho")
ALGORITHMS = ("rtrl", "tbptt", "snap1")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
SHARINGS = ("shared", "per_stream")
DEVICES = ("cpu", "cuda")
TARGET_MODES = ("explicit", "next_input")
NORMALIZATIONS = ("off", "shared", "per_stream")

# torch.optim's defaults
DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2}
DEFAULT_EPS = {"sgd": 0.0, "adam": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10}

MAX_WIDTH = 1 << 16
MAX_TAP = 1 << 12  # longest lag a stream keeps in its ring
# the token embedding width when input_size is left at 0 (never 1: a 1-wide embedding cannot
# tell tokens apart beyond an ordering); bench/quality.py measures it
DEFAULT_EMBEDDING_WIDTH = 32


@dataclass
class Spec:
    """What a model is and how it learns. Enum-like fields are lower-case strings."""

    name: str = ""
    cell: str = "lstm"
    lstm_variant: str = "standard"
    gru_variant: str = "pytorch"
    hidden_sizes: tuple = (32,)
    input_size: int = 0  # dense: the feature count (required); tokens: 0 = the default width
    vocab_size: int = 0
    output_size: int = 0
    num_classes: int = 0
    algorithm: str = "tbptt"
    tbptt_k1: int = 16
    tbptt_k2: int = 0  # 0: same as k1
    optimizer: str = "adam"
    lr: float | None = None  # None: torch.optim's default for the optimizer
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
    # online standardisation of dense inputs and regression targets (kernels/README.md,
    # "Features"): off, shared (one set of statistics per model) or per_stream; "" (unset)
    # follows `sharing`: shared weights share statistics, per-stream models (independent of
    # each other) keep their own, so a stream's results never depend on the others'
    normalize: str = ""
    normalize_decay: float = 0.0  # 0: plain Welford; in (0, 1): exponential forgetting
    input_taps: tuple = ()        # lags l of the input fed beside x_t (TDNN / NARX)
    output_taps: tuple = ()       # lags m of the observed target fed beside x_t (NARX)
    linear_skip: bool = False     # y = head(h) + skip.weight . features

    def __post_init__(self):
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        self.betas = tuple(float(b) for b in self.betas)
        self.input_taps = tuple(int(t) for t in self.input_taps)
        self.output_taps = tuple(int(t) for t in self.output_taps)
        if self.vocab_size and not self.input_size:
            self.input_size = DEFAULT_EMBEDDING_WIDTH
        if not self.normalize:
            self.normalize = "per_stream" if self.sharing == "per_stream" else "shared"

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
        (NEXT_INPUT's targets are the inputs, standardised with the input statistics)."""
        return (self.normalize != "off" and not self.classify
                and self.target_mode == "explicit")

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
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    @property
    def epsilon(self) -> float:
        return DEFAULT_EPS[self.optimizer] if self.eps is None else float(self.eps)

    # validation -----------------------------------------------------------------------
    def validate(self) -> "Spec":
        """Raise ValueError naming the first field that is wrong and what it should be."""
        _one_of("cell", self.cell, CELLS)
        _one_of("lstm_variant", self.lstm_variant, LSTM_VARIANTS)
        _one_of("gru_variant", self.gru_variant, GRU_VARIANTS)
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
        if (self.device == "cuda" and self.algorithm == "snap1" and self.cell == "jordan"
                and len(self.hidden_sizes) > 1):
            raise ValueError("snap1 on a stacked Jordan model runs on device 'cpu' only (its "
                             "CUDA kernel lacks the loop through the upper layers); use "
                             "device='cpu', or tbptt/rtrl on cuda")
        self._validate_features()
        if not (0 <= int(self.seed) < 1 << 64):
            raise ValueError(f"seed must be in [0, 2^64), got {self.seed}")
        return self

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
        return cls(**d)


def _one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _size(name, value):
    if not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
        raise ValueError(f"{name} must be an integer in [1, {MAX_WIDTH}], got {value!r}")
