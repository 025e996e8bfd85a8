"""The reference's model configuration and parameter layout (kernels/README.md, "Parameters").

One model is one flat parameter vector; ``layout`` names its pieces in the README's order,
with PyTorch's names and shapes, so ``flatten``/``unflatten`` map a ``state_dict``-like dict of
arrays to the vector and back. Everything here is float64.
"""

from dataclasses import dataclass, fields

import numpy as np

from rnnstream.kernels import registry  # the declared table (names, gates); the math here is the reference's own

CELLS = registry.names("cell")
LSTM_VARIANTS = registry.names("lstm_variant")
GRU_VARIANTS = registry.names("gru_variant")
ALGORITHMS = registry.names("algorithm")


@dataclass(frozen=True)
class Config:
    """A model as the reference sees it; field names follow the engine's ``Spec``.

    Only the fields the reference uses are here; ``Config.from_spec`` copies them from any
    object (the engine's ``Spec``) that has attributes of the same names.
    """

    cell: str = "lstm"
    lstm_variant: str = "standard"
    gru_variant: str = "pytorch"
    hidden_sizes: tuple = (4,)
    input_size: int = 3
    vocab_size: int = 0
    output_size: int = 2
    num_classes: int = 0
    algorithm: str = "rtrl"
    tbptt_k1: int = 4
    tbptt_k2: int = 4
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    clip_norm: float = 0.0
    weight_decay: float = 0.0
    sharing: str = "shared"
    seed: int = 0
    target_mode: str = "explicit"
    max_label_delay: int = 0
    # features (tests/reference/features.py); off here unless copied from a Spec
    normalize: str = "off"
    normalize_decay: float = 0.0
    input_taps: tuple = ()
    output_taps: tuple = ()
    linear_skip: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "input_taps", tuple(int(t) for t in self.input_taps))
        object.__setattr__(self, "output_taps", tuple(int(t) for t in self.output_taps))
        assert self.cell in CELLS, self.cell
        assert self.lstm_variant in LSTM_VARIANTS, self.lstm_variant
        assert self.gru_variant in GRU_VARIANTS, self.gru_variant
        assert self.algorithm in ALGORITHMS, self.algorithm
        assert (self.output_size > 0) != (self.num_classes > 0), "regression xor classes"

    @classmethod
    def from_spec(cls, spec, **overrides):
        kwargs = {f.name: getattr(spec, f.name) for f in fields(cls) if hasattr(spec, f.name)}
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def num_layers(self):
        return len(self.hidden_sizes)

    @property
    def classes(self):
        """True for a softmax head (classes or tokens), False for a linear regression head."""
        return self.num_classes > 0

    @property
    def out_size(self):
        return self.num_classes if self.classes else self.output_size

    @property
    def gates(self):
        return registry.CELLS[self.cell].n_gates

    @property
    def variant(self):
        """The cell's registry Variant (None for a cell without variants)."""
        return registry.CELLS[self.cell].variant_of(self)

    @property
    def peephole(self):
        return self.variant is not None and self.variant.peephole

    @property
    def feature_size(self):
        """Width of the model's input row: x_t, its input taps, the output taps."""
        return (self.input_size * (1 + len(self.input_taps))
                + self.out_size * len(self.output_taps))

    def layer_input_size(self, k):
        return self.feature_size if k == 0 else self.hidden_sizes[k - 1]


def layout(cfg):
    """Ordered [(name, shape)] of the flat parameter vector (kernels/README.md table)."""
    out = []
    if cfg.vocab_size > 0:
        out.append(("embedding.weight", (cfg.vocab_size, cfg.input_size)))
    G = cfg.gates
    for k, H in enumerate(cfg.hidden_sizes):
        recurrent_in = cfg.out_size if (cfg.cell == "jordan" and k == 0) else H
        out.append((f"weight_ih_l{k}", (G * H, cfg.layer_input_size(k))))
        # IndRNN (Li et al. 2018): one recurrent weight per unit, on its own h_{t-1}
        out.append((f"weight_hh_l{k}", (G * H,) if cfg.cell == "indrnn" else (G * H, recurrent_in)))
        out.append((f"bias_ih_l{k}", (G * H,)))
        out.append((f"bias_hh_l{k}", (G * H,)))
        if cfg.peephole:
            out.append((f"weight_ch_l{k}", (3, H)))
    out.append(("head.weight", (cfg.out_size, cfg.hidden_sizes[-1])))
    out.append(("head.bias", (cfg.out_size,)))
    if cfg.linear_skip:
        out.append(("skip.weight", (cfg.out_size, cfg.feature_size)))
    return out


def offsets(cfg):
    """{name: (start, stop, shape)} into the flat vector."""
    out, start = {}, 0
    for name, shape in layout(cfg):
        size = int(np.prod(shape))
        out[name] = (start, start + size, shape)
        start += size
    return out


def num_params(cfg):
    return sum(int(np.prod(shape)) for _, shape in layout(cfg))


def flatten(cfg, params):
    """dict name -> array  ->  flat float64 vector in layout order."""
    parts = []
    for name, shape in layout(cfg):
        a = np.asarray(params[name], dtype=np.float64)
        assert a.shape == tuple(shape), (name, a.shape, shape)
        parts.append(a.reshape(-1))
    return np.concatenate(parts)


def unflatten(cfg, vec):
    """flat vector -> dict name -> float64 array (copies)."""
    vec = np.asarray(vec, dtype=np.float64)
    assert vec.shape == (num_params(cfg),), vec.shape
    return {name: vec[a:b].reshape(shape).copy() for name, (a, b, shape) in offsets(cfg).items()}


def zeros_like_params(cfg):
    return {name: np.zeros(shape) for name, shape in layout(cfg)}


def init_params(cfg, seed=None):
    """Initial weights as the README says: PyTorch's uniform ranges, forget bias 1.0.

    Drawn in layout order from ``numpy.random.default_rng(seed)``. The tests that compare
    with the engine load the engine's own weights; this only gives the reference a start.
    """
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    p = {}
    for name, shape in layout(cfg):
        if name == "embedding.weight":
            p[name] = rng.standard_normal(shape)
        elif name == "skip.weight":
            p[name] = np.zeros(shape)
        else:
            fan = cfg.hidden_sizes[-1] if name.startswith("head.") else cfg.hidden_sizes[int(name[-1])]
            bound = 1.0 / np.sqrt(fan)
            if cfg.cell == "indrnn" and name.startswith("weight_hh"):
                p[name] = rng.uniform(0.0, 1.0, shape)  # the paper's range for u
            else:
                p[name] = rng.uniform(-bound, bound, shape)
    if cfg.variant is not None and cfg.variant.forget_bias:
        f = registry.CELLS[cfg.cell].gates.index("f")
        for k, H in enumerate(cfg.hidden_sizes):
            p[f"bias_ih_l{k}"][f * H:(f + 1) * H] = 1.0
            p[f"bias_hh_l{k}"][f * H:(f + 1) * H] = 0.0
    return p


def layer_params(params, k):
    """The arrays of layer k under short names: w_ih, w_hh, b_ih, b_hh (and w_ch)."""
    lp = {
        "w_ih": params[f"weight_ih_l{k}"],
        "w_hh": params[f"weight_hh_l{k}"],
        "b_ih": params[f"bias_ih_l{k}"],
        "b_hh": params[f"bias_hh_l{k}"],
    }
    if f"weight_ch_l{k}" in params:
        lp["w_ch"] = params[f"weight_ch_l{k}"]
    return lp


LAYER_NAMES = {"w_ih": "weight_ih_l{}", "w_hh": "weight_hh_l{}", "b_ih": "bias_ih_l{}",
               "b_hh": "bias_hh_l{}", "w_ch": "weight_ch_l{}"}
