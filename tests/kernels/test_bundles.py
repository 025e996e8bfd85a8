"""The kernels read their bundles by the named indices of kernels/bundles.py; the engine builds
them in the order of the *_FIELDS names. Both must agree, position by position."""
from rnnstream.kernels import bundles
from rnnstream.service.engine import Engine, Spec


def test_constants_name_their_positions():
    for kind in ("MODEL", "WEIGHTS", "POOL", "BATCH", "OUT"):
        names = getattr(bundles, f"{kind}_FIELDS")
        for i, name in enumerate(names):
            assert getattr(bundles, f"{kind}_{name.upper()}") == i, (kind, name)
        count = sum(1 for k in vars(bundles) if k.startswith(kind + "_") and not k.endswith("FIELDS"))
        assert count == len(names), kind  # no constant without a field


def test_engine_builds_bundles_in_field_order():
    eng = Engine(Spec(cell="gru", hidden_sizes=(2,), input_size=1, output_size=1,
                      sharing="per_stream", algorithm="snap1"))
    eng.pool.slot("s")
    weights, pool = eng._bundles()
    assert len(pool) == len(bundles.POOL_FIELDS)
    for i, name in enumerate(bundles.POOL_FIELDS):
        assert pool[i] is eng.pool.arrays[name], name
    a = eng.pool.arrays
    assert weights[bundles.WEIGHTS_W] is a["weights"] and weights[bundles.WEIGHTS_STEPS] is a["opt_steps"]
    assert len(weights) == len(bundles.WEIGHTS_FIELDS)
    model = eng._model
    assert model[bundles.MODEL_CFG] is eng.layout.cfg and model[bundles.MODEL_LAY] is eng.layout.lay
    assert model[bundles.MODEL_HYP] is eng.hyp and len(model) == len(bundles.MODEL_FIELDS)
