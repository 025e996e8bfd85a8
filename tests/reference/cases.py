"""Small random models and sequences shared by the reference's self-checks."""

import itertools

import numpy as np

from rnnstream.kernels import registry
from tests.reference.params import Config, init_params

# every cell x variant of the registry: (cell, {variant field: variant}), e.g. ("lstm",
# {"lstm_variant": "peephole"}); ("elman", {}) for a cell without variants
CELL_VARIANTS = [(c.name, {c.variant_field: v.name} if c.variant_field else {})
                 for c in registry.CELLS.values() for v in (c.variants or (None,))]


def cell_id(cell, kw):
    return cell + ("-" + next(iter(kw.values())) if kw else "")


def cell_cases():
    """One case per cell x variant for the engine suites' tables: {"lstm": dict(cell="lstm"),
    "lstm-no-forget": dict(cell="lstm", lstm_variant="no_forget"), ...}; a cell's default
    variant goes by the cell's name."""
    out = {}
    for c in registry.CELLS.values():
        out[c.name] = dict(cell=c.name)
        for v in c.variants[1:]:
            out[f"{c.name}-{v.name.replace('_', '-')}"] = {"cell": c.name, c.variant_field: v.name}
    return out


def all_configs(hidden=((3,), (4, 3)), heads=("regression", "classes"),
                inputs=("dense", "token"), **common):
    """Config for every cell x variant x head x stacking x input kind, with an id."""
    out = []
    for (cell, kw), hs, head, inp in itertools.product(CELL_VARIANTS, hidden, heads, inputs):
        cfg = make_config(cell, hs, head, inp, **kw, **common)
        out.append((f"{cell_id(cell, kw)}-{head}-{inp}-L{len(hs)}", cfg))
    return out


def make_config(cell, hidden_sizes=(3,), head="regression", inp="dense", **kw):
    base = dict(cell=cell, hidden_sizes=tuple(hidden_sizes), input_size=2,
                vocab_size=5 if inp == "token" else 0,
                output_size=2 if head == "regression" else 0,
                num_classes=4 if head == "classes" else 0)
    base.update(kw)
    return Config(**base)


def random_params(cfg, seed=0, jitter=0.3):
    """README init plus noise, so that every weight (peepholes, biases) is non-trivial."""
    rng = np.random.default_rng(seed + 1000)
    p = init_params(cfg, seed)
    return {k: v + jitter * rng.standard_normal(v.shape) for k, v in p.items()}


def random_sequence(cfg, T, seed=0):
    """(inps, targets) of length T: rows or tokens; target vectors or classes."""
    rng = np.random.default_rng(seed + 2000)
    if cfg.vocab_size > 0:
        inps = rng.integers(0, cfg.vocab_size, size=T)
    else:
        inps = rng.standard_normal((T, cfg.input_size))
    if cfg.classes:
        targets = rng.integers(0, cfg.num_classes, size=T)
    else:
        targets = rng.standard_normal((T, cfg.output_size))
    return inps, targets
