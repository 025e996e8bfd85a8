"""The registry of cells and rules (kernels/registry.py) is the one table: the proto, the kernel
codes, the layout, spec validation and the SDK's documented names all agree with it. No numba
compilation: these run in seconds."""
import inspect

import pytest

from rnnstream.clients.spec import ModelSpec
from rnnstream.kernels import registry
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service import convert
from rnnstream.service.engine.layout import build_layout
from rnnstream.service.engine.spec import Spec
from tests.reference.cases import CELL_VARIANTS, cell_id, make_config
from tests.reference.params import layout as reference_layout

ENUMS = {"cell": pb.Cell, "lstm_variant": pb.LstmVariant, "gru_variant": pb.GruVariant,
         "algorithm": pb.Algorithm, "optimizer": pb.OptimizerKind}
TABLES = {"cell": convert.CELLS, "lstm_variant": convert.LSTM_VARIANTS,
          "gru_variant": convert.GRU_VARIANTS, "algorithm": convert.ALGORITHMS,
          "optimizer": convert.OPTIMIZERS}


def test_codes_are_dense_and_distinct():
    """The kernels index GATES_BY_CODE by a cell's code, and dispatch on the others."""
    cells = registry.CELLS.values()
    assert sorted(c.code for c in cells) == list(range(len(registry.CELLS)))
    assert all(registry.GATES_BY_CODE[c.code] == c.n_gates for c in cells)
    for c in cells:
        assert len({v.code for v in c.variants}) == len(c.variants)
        assert not c.variants or c.variants[0].code == 0  # a cell without variants gets 0 too
        assert not c.upper or c.upper in registry.CELLS
    for table in (registry.RULES, registry.OPTIMIZERS):
        assert len({x.code for x in table.values()}) == len(table)


def test_cpu_kernel_gate_count_is_the_registrys():
    from rnnstream.kernels.cells import n_gates
    for c in registry.CELLS.values():
        assert n_gates(c.code) == c.n_gates, c.name


@pytest.mark.parametrize("field", sorted(ENUMS))
def test_proto_enum_names_the_registrys_values(field):
    """Every non-zero proto value is a registry name and back: neither side has one the
    other lacks, and the service's wire table maps each to its own name."""
    enum, prefix = ENUMS[field], registry.PROTO_PREFIX[field]
    wire = {enum.Name(n) for n in enum.values() if n}
    assert wire == {prefix + name.upper() for name in registry.names(field)}
    table = TABLES[field]
    for name in registry.names(field):
        assert table[enum.Value(prefix + name.upper())] == name


@pytest.mark.parametrize("field", sorted(ENUMS))
def test_sdk_documents_every_name(field):
    """clients/spec.py may not import the registry (clients never import kernels); its
    docstring names the choices, and this keeps them equal."""
    doc = inspect.getdoc(ModelSpec)
    line = next(ln for ln in doc.splitlines() if ln.strip().startswith(field + ":"))
    for name in registry.names(field):
        assert f'``"{name}"``' in line, (field, name)


@pytest.mark.parametrize("cell,kw", CELL_VARIANTS, ids=[cell_id(c, kw) for c, kw in CELL_VARIANTS])
@pytest.mark.parametrize("hidden,vocab", [((3,), 0), ((4, 3), 5)], ids=["L1-dense", "L2-token"])
def test_layout_equals_the_references(cell, kw, hidden, vocab):
    """The engine's layout (from the registry) against the reference's (names and shapes in
    the README's order), for every cell x variant."""
    head = dict(num_classes=4) if vocab else dict(output_size=2)
    spec = Spec(cell=cell, hidden_sizes=hidden, input_size=2, vocab_size=vocab, linear_skip=False,
                output_taps=(), **head, **kw).validate()
    got = [(p.name, p.shape) for p in build_layout(spec).params]
    want = [(n, tuple(s)) for n, s in reference_layout(make_config(
        cell, hidden, "classes" if vocab else "regression", "token" if vocab else "dense", **kw))]
    assert got == want


def test_every_cell_takes_every_rule_but_the_limits():
    for cell in registry.CELLS:
        for rule in registry.RULES:
            for device in ("cpu", "cuda"):
                spec = Spec(cell=cell, algorithm=rule, device=device, hidden_sizes=(2, 2),
                            input_size=1, output_size=1)
                if registry.limit_for(spec) is None:
                    spec.validate()
                else:
                    with pytest.raises(ValueError, match=f"{rule} on a stacked {cell} model"):
                        spec.validate()


def test_late_labels_follow_the_rules_table():
    for rule in registry.RULES.values():
        spec = Spec(cell="gru", algorithm=rule.name, hidden_sizes=(2,), input_size=1,
                    output_size=1, max_label_delay=2)
        if rule.late_labels:
            spec.validate()
        else:
            with pytest.raises(ValueError, match="max_label_delay > 0 needs algorithm"):
                spec.validate()


def test_reference_has_every_rule():
    from tests.reference.rules import make_rule
    for rule in registry.RULES:
        assert make_rule(make_config("elman", algorithm=rule)) is not None, rule


def test_unknown_variant_is_refused_by_name():
    spec = Spec(cell="lstm", lstm_variant="bogus", hidden_sizes=(2,), input_size=1, output_size=1)
    with pytest.raises(ValueError, match="lstm_variant must be one of standard, peephole"):
        registry.CELLS["lstm"].variant_of(spec)
    with pytest.raises(ValueError, match="lstm_variant must be one of"):
        spec.validate()


@pytest.mark.parametrize("cell", list(registry.CELLS))
def test_rtrl_of_one_diagonal_layer_keeps_a_unit_local_sensitivity(cell):
    """One layer of a diagonal recurrence on dense input runs RTRL with SnAp-1's O(P)
    sensitivity (exact there: the trajectory tests' ``<cell>-rtrl-*-dense-L1`` cases hold it
    to the reference's full RTRL); an embedding or a second layer, and every full recurrence,
    keep the S x P one."""
    from rnnstream.kernels import codes
    from rnnstream.service.engine.pool import sensitivity_width

    def widths(**kw):
        spec = Spec(cell=cell, input_size=2, algorithm="rtrl", **kw)
        lay = build_layout(spec)
        P, S = lay.num_parameters, lay.state_size
        return int(lay.cfg[codes.C_RULE]), sensitivity_width(spec, lay), P, S

    rule, width, P, S = widths(hidden_sizes=(4,), output_size=1)
    if registry.CELLS[cell].diagonal:
        assert (rule, width) == (codes.SNAP1, 2 * P)
    else:
        assert (rule, width) == (codes.RTRL, S * P)
    for kw in (dict(hidden_sizes=(4, 3), output_size=1),
               dict(hidden_sizes=(4,), vocab_size=5, num_classes=5)):
        rule, width, P, S = widths(**kw)
        assert (rule, width) == (codes.RTRL, S * P), kw
