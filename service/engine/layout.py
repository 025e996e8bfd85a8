"""From a Spec to the kernels' view of a model: the flat parameter layout with PyTorch's
names, the state layout, the int64 tables ``cfg`` and ``lay``, and the initial weights."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnstream.kernels import codes as kc
from rnnstream.kernels.registry import CELLS, OPTIMIZERS, RULES

OPT_CODE = {name: o.code for name, o in OPTIMIZERS.items()}


@dataclass(frozen=True)
class Param:
    name: str
    shape: tuple
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Layout:
    params: tuple          # Param, in flat order
    num_parameters: int
    state_size: int
    cfg: np.ndarray        # int64 [C_NFIELDS]
    lay: np.ndarray        # int64 [layers, L_NFIELDS]

    def by_name(self) -> dict:
        return {p.name: p for p in self.params}


def build_layout(spec) -> Layout:
    params = []
    offset = 0

    def add(name, shape):
        nonlocal offset
        params.append(Param(name, tuple(int(s) for s in shape), offset))
        offset += int(np.prod(shape))
        return params[-1].offset

    O = spec.out_size
    I = spec.input_size
    F = spec.feature_size  # layer 0's input row: I, or I widened by the delay taps
    emb = add("embedding.weight", (spec.vocab_size, I)) if spec.vocab_size > 0 else -1
    model_cell = CELLS[spec.cell]
    variant = model_cell.variant_of(spec)
    lay = np.full((len(spec.hidden_sizes), kc.L_NFIELDS), -1, dtype=np.int64)
    state = 0
    cache = 0
    gh_max = 0
    for k, H in enumerate(spec.hidden_sizes):
        cell = model_cell.layer_cell(k)  # Jordan: Elman layers above layer 0
        G = cell.n_gates
        gh_max = max(gh_max, G * H)
        nin = F if k == 0 else spec.hidden_sizes[k - 1]
        nrec = O if cell.feeds_back_output else H
        row = lay[k]
        row[kc.L_CELL] = cell.code
        row[kc.L_H] = H
        row[kc.L_IN] = nin
        row[kc.L_REC] = nrec
        row[kc.L_UNIT] = cell.unit
        row[kc.L_DIAG] = int(cell.diagonal)
        row[kc.L_WIH] = add(f"weight_ih_l{k}", (G * H, nin))
        row[kc.L_WHH] = add(f"weight_hh_l{k}", (G * H,) if cell.diagonal else (G * H, nrec))
        row[kc.L_BIH] = add(f"bias_ih_l{k}", (G * H,))
        row[kc.L_BHH] = add(f"bias_hh_l{k}", (G * H,))
        if cell is model_cell and variant is not None and variant.peephole:
            row[kc.L_WCH] = add(f"weight_ch_l{k}", (3, H))
        row[kc.L_SH] = state
        state += H
        if cell.cell_state:
            row[kc.L_SC] = state
            state += H
        row[kc.L_CG] = cache
        cache += G * H
        if cell.extra_cache:
            row[kc.L_CX] = cache
            cache += H
    HL = spec.hidden_sizes[-1]
    hw = add("head.weight", (O, HL))
    hb = add("head.bias", (O,))
    skip = add("skip.weight", (O, F)) if spec.linear_skip else -1
    y = -1
    if model_cell.feeds_back_output:
        y = state
        state += O
    cfg = np.zeros(kc.C_NFIELDS, dtype=np.int64)
    cfg[kc.C_CELL] = model_cell.code
    cfg[kc.C_VARIANT] = variant.code if variant is not None else 0
    cfg[kc.C_NL] = len(spec.hidden_sizes)
    cfg[kc.C_IN] = F
    cfg[kc.C_OUT] = O
    cfg[kc.C_CLASSIFY] = int(spec.classify)
    cfg[kc.C_VOCAB] = spec.vocab_size
    cfg[kc.C_EMB] = emb
    cfg[kc.C_HW] = hw
    cfg[kc.C_HB] = hb
    cfg[kc.C_S] = state
    cfg[kc.C_P] = offset
    cfg[kc.C_Y] = y
    cfg[kc.C_HTOP] = lay[-1, kc.L_SH]
    cfg[kc.C_HLAST] = HL
    cfg[kc.C_CACHE] = max(cache, 1)
    cfg[kc.C_GHMAX] = gh_max
    cfg[kc.C_WMAX] = max(max(spec.hidden_sizes), F, O)
    cfg[kc.C_HIST] = history_length(spec)
    cfg[kc.C_RULE] = kc.SNAP1 if rtrl_is_unit_local(spec) else RULES[spec.algorithm].code
    cfg[kc.C_NEXT] = int(spec.target_mode == "next_input")
    cfg[kc.C_K1] = spec.tbptt_k1
    cfg[kc.C_SHARED] = int(spec.sharing == "shared")
    cfg[kc.C_DELAY] = spec.max_label_delay
    cfg[kc.C_SKIP] = skip
    return Layout(tuple(params), offset, state, cfg, lay)


def rtrl_is_unit_local(spec) -> bool:
    """Exact RTRL whose sensitivity never leaves each unit's own parameters: one layer with a
    diagonal recurrence (IndRNN) on dense input. Its state Jacobian J_t is diagonal, so
    M_t = J_t M_{t-1} + I_t keeps I_t's pattern (unit j depends only on the parameters that
    write unit j), which is SnAp-1's recursion with nothing dropped: the kernels run
    SnAp-1's O(P) step and get RTRL's gradient, instead of the S x P sensitivity. An embedding
    (every unit reads the token's row) or a second layer (W_ih mixes units) breaks that."""
    return (spec.algorithm == "rtrl" and len(spec.hidden_sizes) == 1 and spec.vocab_size == 0
            and CELLS[spec.cell].diagonal)


def history_length(spec) -> int:
    """Steps of the per-stream ring. TBPTT: a late label's window (k2 steps) may end
    max_label_delay steps back. SnAp-1 with late labels: the steps a label may still name."""
    if spec.algorithm == "tbptt":
        return spec.k2 + spec.max_label_delay
    return spec.max_label_delay + 1


def init_weights(spec, layout: Layout, dtype=np.float32) -> np.ndarray:
    """PyTorch's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for recurrent weights and biases
    (a diagonal recurrence's own weights: U(0, 1)),
    nn.Linear's for the head, N(0, 1) for the embedding; LSTM forget bias 1.0 (on bias_ih);
    the linear skip starts at zero (the model starts as the recurrent one)."""
    cell = CELLS[spec.cell]
    variant = cell.variant_of(spec)
    forget = variant is not None and variant.forget_bias
    f = cell.gates.index("f") if forget else 0
    rng = np.random.default_rng(spec.seed)
    theta = np.zeros(layout.num_parameters, dtype=np.float64)
    for p in layout.params:
        view = theta[p.offset:p.offset + p.size]
        if p.name == "embedding.weight":
            view[:] = rng.standard_normal(p.size)
            continue
        if p.name == "skip.weight":
            continue
        if p.name.startswith("head."):
            bound = 1.0 / np.sqrt(spec.hidden_sizes[-1])
        else:
            k = int(p.name.rsplit("_l", 1)[1])
            bound = 1.0 / np.sqrt(spec.hidden_sizes[k])
        if p.name.startswith("weight_hh") and cell.layer_cell(k).diagonal:
            # a unit's own recurrent weight: U(0, 1) as IndRNN (Li et al., 2018) starts it,
            # so that each unit keeps a memory of its own of a few steps or many
            view[:] = rng.uniform(0.0, 1.0, p.size)
            continue
        view[:] = rng.uniform(-bound, bound, p.size)
        if forget and p.name.startswith("bias_"):
            H = p.shape[0] // cell.n_gates
            view[f * H:(f + 1) * H] = 1.0 if p.name.startswith("bias_ih") else 0.0
    return theta.astype(dtype)
