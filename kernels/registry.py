"""The one table of cells, their variants, the learning rules and the optimizers.

Everything outside the kernels' math that names, numbers or sizes one of them is derived from
here: the parameter and state layout (``service/engine/layout.py``), spec validation
(``service/engine/spec.py``), the wire's enum values (``service/convert.py``), the tests' case
tables (``tests/reference/cases.py``) and the kernels' gate count (``GATES_BY_CODE``). A test
(``tests/kernels/test_registry.py``) checks the proto, the kernel codes and the SDK's
documented names against it. Plain Python: no numba, so the service imports it for free.

Names are the spec's lower-case strings; the proto spells each one ``<PREFIX><NAME>``
(``CELL_LSTM``, ``LSTM_VARIANT_NO_FORGET``, ``ALGORITHM_SNAP1``, ``OPTIMIZER_KIND_ADAM``).
``kernels/README.md`` ("Adding a cell", "Adding a learning rule") lists what else to edit.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import codes


@dataclass(frozen=True)
class Variant:
    """One variant of a cell, chosen by the spec field ``Cell.variant_field``."""

    name: str
    code: int                   # cfg[C_VARIANT]
    peephole: bool = False      # adds weight_ch_l{k} [3, H] (rows i, f, o)
    forget_bias: bool = False   # the f block of bias_ih starts at 1.0 (of bias_hh at 0.0)
    torch_exact: bool = False   # the cell's torch.nn module computes exactly this variant


@dataclass(frozen=True)
class Cell:
    """One recurrent cell: what the layout, the state and the spec need to know of it."""

    name: str
    code: int                   # cfg[C_CELL], lay[k, L_CELL]
    unit: int                   # lay[k, L_UNIT]: whose per-unit math (TANH_UNIT, LSTM_UNIT, ...)
    gates: tuple                # gate blocks stacked in weight_ih/weight_hh, PyTorch's order
    diagonal: bool = False      # weight_hh is a vector [G*H]: unit j sees only its own h_{t-1}
    cell_state: bool = False    # the state carries c beside h (L_SC)
    extra_cache: bool = False   # one more H-vector cached per step (L_CX)
    feeds_back_output: bool = False  # layer 0's recurrent input is y_{t-1} (Jordan)
    upper: str = ""             # the cell of layers k >= 1; "": this cell
    variant_field: str = ""     # the Spec field that picks a variant; "": none
    variants: tuple = ()        # Variant, the default (the proto's UNSPECIFIED) first
    torch_module: str = ""      # torch.nn class whose state_dict the layers load into; "": none

    def __post_init__(self):
        # the loops' diagonal products exist for the units whose gates all sum W_hh h_{t-1}
        # (GRU's reset gate scales a full product) and for a recurrent input of width H
        if self.diagonal and (self.unit == codes.GRU_UNIT or self.feeds_back_output):
            raise ValueError(f"cell {self.name}: a diagonal recurrence needs a tanh or LSTM "
                             "unit fed back its own h")
        if len(self.gates) != {codes.TANH_UNIT: 1, codes.LSTM_UNIT: 4, codes.GRU_UNIT: 3}[self.unit]:
            raise ValueError(f"cell {self.name}: {len(self.gates)} gates for its unit")

    @property
    def n_gates(self) -> int:
        return len(self.gates)

    @property
    def variant_names(self) -> tuple:
        return tuple(v.name for v in self.variants)

    def variant_of(self, spec) -> Variant | None:
        """The variant ``spec`` (anything with the Spec's fields) picks; None when the cell has none."""
        if not self.variant_field:
            return None
        name = getattr(spec, self.variant_field)
        for v in self.variants:
            if v.name == name:
                return v
        raise ValueError(f"{self.variant_field} must be one of {', '.join(self.variant_names)}; "
                         f"got {name!r}")

    def layer_cell(self, k: int) -> "Cell":
        """The cell of layer ``k``."""
        return CELLS[self.upper] if k > 0 and self.upper else self

    def torch_exact(self, spec) -> bool:
        """``torch.nn.<torch_module>`` computes what ``spec`` asks of this cell."""
        v = self.variant_of(spec)
        return bool(self.torch_module) and (v is None or v.torch_exact)


@dataclass(frozen=True)
class Rule:
    """One learning rule (kernels/README.md, "Learning rules")."""

    name: str
    code: int                   # cfg[C_RULE]
    late_labels: bool           # may learn from labels that arrive after their step


@dataclass(frozen=True)
class Optimizer:
    name: str
    code: int                   # hyper[O_KIND]


@dataclass(frozen=True)
class Limit:
    """A combination whose kernel does not exist yet: ``Spec.validate`` refuses it."""

    cell: str
    rule: str
    device: str
    stacked_only: bool          # refused only with two or more layers
    why: str


_LSTM_VARIANTS = (
    Variant("standard", codes.STANDARD, forget_bias=True, torch_exact=True),
    Variant("peephole", codes.PEEPHOLE, peephole=True, forget_bias=True),
    Variant("coupled", codes.COUPLED),      # f = 1 - i: the f rows are kept, never used
    Variant("no_forget", codes.NO_FORGET),  # f = 1
)
_GRU_VARIANTS = (
    Variant("pytorch", codes.GRU_PYTORCH, torch_exact=True),
    Variant("cho", codes.GRU_CHO),          # reset gate before the recurrent matrix
)

# in code order: the kernels index GATES_BY_CODE by the code
CELLS = {c.name: c for c in (
    Cell("elman", codes.ELMAN, codes.TANH_UNIT, ("h",), torch_module="RNN"),
    Cell("jordan", codes.JORDAN, codes.TANH_UNIT, ("h",), feeds_back_output=True, upper="elman"),
    Cell("lstm", codes.LSTM, codes.LSTM_UNIT, ("i", "f", "g", "o"), cell_state=True,
         extra_cache=True, variant_field="lstm_variant", variants=_LSTM_VARIANTS,
         torch_module="LSTM"),
    Cell("gru", codes.GRU, codes.GRU_UNIT, ("r", "z", "n"), extra_cache=True,
         variant_field="gru_variant", variants=_GRU_VARIANTS, torch_module="GRU"),
    # Li et al. 2018: h_t = tanh(W_ih x_t + b_ih + u * h_{t-1} + b_hh), u a vector
    Cell("indrnn", codes.INDRNN, codes.TANH_UNIT, ("h",), diagonal=True),
)}
RULES = {r.name: r for r in (
    Rule("rtrl", codes.RTRL, late_labels=False),  # would keep an S x P sensitivity per step
    Rule("tbptt", codes.TBPTT, late_labels=True),
    Rule("snap1", codes.SNAP1, late_labels=True),
)}
OPTIMIZERS = {o.name: o for o in (
    Optimizer("sgd", codes.SGD),
    Optimizer("adam", codes.ADAM),
    Optimizer("rmsprop", codes.RMSPROP),
    Optimizer("adagrad", codes.ADAGRAD),
)}
# none today: every cell x variant x rule runs on both devices (their per-unit math is one
# source, kernels/cellmath.py)
LIMITS: tuple = ()

# for the kernels (numba folds a global tuple into a constant)
GATES_BY_CODE = tuple(c.n_gates for c in sorted(CELLS.values(), key=lambda c: c.code))

PROTO_PREFIX = {"cell": "CELL_", "algorithm": "ALGORITHM_", "optimizer": "OPTIMIZER_KIND_",
                **{c.variant_field: c.variant_field.upper() + "_" for c in CELLS.values()
                   if c.variant_field}}


def names(field: str) -> tuple:
    """The spec values of an enum-like field: ``cell``, ``algorithm``, ``optimizer`` or a
    cell's variant field (``lstm_variant``), in the table's order."""
    if field == "cell":
        return tuple(CELLS)
    if field == "algorithm":
        return tuple(RULES)
    if field == "optimizer":
        return tuple(OPTIMIZERS)
    for c in CELLS.values():
        if c.variant_field == field:
            return c.variant_names
    raise KeyError(f"no registry field {field!r}")


def limit_for(spec) -> Limit | None:
    """The first Limit that refuses ``spec`` (cell, algorithm, device, hidden_sizes), if any."""
    for lim in LIMITS:
        if (spec.cell == lim.cell and spec.algorithm == lim.rule and spec.device == lim.device
                and (len(spec.hidden_sizes) > 1 or not lim.stacked_only)):
            return lim
    return None
