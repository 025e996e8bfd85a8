"""Contract checks generated for every cell x rule x optimizer (after River's
``check_estimator``): inputs not mutated, same seed same result, state_dict round trip, bad
input refused with ValueError and nothing changed, inf loss skipped, chunked equals unchunked,
NEXT_INPUT equals EXPLICIT with shifted targets."""

import copy
import itertools

import numpy as np
import pytest

from rnnstream.kernels import registry
from rnnstream.service.engine import Spec
from tests.kernels.engine_support import (CELL_VARIANTS, OPTIMIZERS, RULES, Engine,
                                          assert_layout, assert_weights_close, cell_id,
                                          dataclasses, make_spec, random_chunks, rule_id)

COMBOS = list(itertools.product(CELL_VARIANTS, [r for r in RULES if r != ("tbptt", 3, 3)],
                                OPTIMIZERS))
IDS = [f"{cell_id(c, v)}-{rule_id(r)}-{o}" for (c, v), r, o in COMBOS]
PARAMS = [(c, v, r, o) for (c, v), r, o in COMBOS]
combos = pytest.mark.parametrize("cell,variant,rule,opt", PARAMS, ids=IDS)
EXACT = dict(rtol=1e-6, atol=1e-7)


def spec_for(cell, variant, rule, opt, **kw):
    alg, k1, k2 = rule
    return make_spec(cell, variant, alg, k1, k2, optimizer=opt,
                     lr=0.05 if opt in ("sgd", "adagrad") else 0.01, **kw)


def run(eng, chunks, sids=("a", "b")):
    return [eng.step(list(sids), **c) for c in chunks]


def assert_same_runs(r1, r2, **tol):
    tol = tol or EXACT
    for (p1, l1), (p2, l2) in zip(r1, r2):
        np.testing.assert_allclose(p1, p2, **tol)
        np.testing.assert_allclose(l1, l2, equal_nan=True, **tol)


def stats_keys_ok(stats):
    assert {"steps", "updates", "running_loss", "gradient_norm", "skipped_updates"} <= set(stats)


@combos
def test_inputs_not_mutated(cell, variant, rule, opt):
    for inp in ("dense", "token"):
        spec = spec_for(cell, variant, rule, opt, inp=inp)
        eng = Engine(spec)
        chunks = random_chunks(spec, 2, (3, 2))
        before = copy.deepcopy(chunks)
        run(eng, chunks)
        for c, b in zip(chunks, before):
            for k in b:
                np.testing.assert_array_equal(c[k], b[k], err_msg=k)
        sd = eng.state_dict()
        sd_copy = copy.deepcopy(sd)
        eng.load_state_dict(sd)
        run(eng, random_chunks(spec, 2, (2,), seed=3))
        for k in sd_copy:
            np.testing.assert_array_equal(sd[k], sd_copy[k], err_msg=f"exported {k} aliased")


@combos
def test_same_seed_same_result(cell, variant, rule, opt):
    spec = spec_for(cell, variant, rule, opt)
    chunks = random_chunks(spec, 2, (3, 2))
    e1, e2 = Engine(spec), Engine(spec)
    assert_weights_close(e2.state_dict(), {k: np.asarray(v, np.float64)
                                           for k, v in e1.state_dict().items()}, rtol=0, atol=0)
    assert_same_runs(run(e1, chunks), run(e2, chunks), rtol=0, atol=0)
    other = Engine(dataclasses.replace(spec, seed=spec.seed + 1))
    assert any(not np.array_equal(other.state_dict()[k], e1.state_dict()[k])
               for k in e1.state_dict())


@combos
def test_state_dict_round_trip(cell, variant, rule, opt):
    spec = spec_for(cell, variant, rule, opt, inp="token")
    eng = Engine(spec)
    sd = eng.state_dict()
    assert_layout(spec, sd)
    assert all(np.asarray(v).dtype == np.float32 for v in sd.values())
    v = registry.CELLS[cell].variant_of(spec)
    if v is not None and v.forget_bias:
        H = spec.hidden_sizes[0]
        np.testing.assert_array_equal(sd["bias_ih_l0"][H:2 * H], 1.0)
        np.testing.assert_array_equal(sd["bias_hh_l0"][H:2 * H], 0.0)
    other = Engine(dataclasses.replace(spec, seed=5))
    other.load_state_dict(sd)
    back = other.state_dict()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    chunks = random_chunks(spec, 2, (3, 2))
    assert_same_runs(run(eng, chunks), run(other, chunks))


TORCH_LOADABLE = [(c, v) for c, v in CELL_VARIANTS if registry.CELLS[c].torch_module]


@pytest.mark.parametrize("cell,variant", TORCH_LOADABLE,
                         ids=[cell_id(c, v) for c, v in TORCH_LOADABLE])
def test_state_dict_loads_into_torch(cell, variant):
    torch = pytest.importorskip("torch")
    spec = make_spec(cell, variant, layers=(4, 4), inp="token")
    sd = Engine(spec).state_dict()
    mod = getattr(torch.nn, registry.CELLS[cell].torch_module)(spec.input_size, 4, num_layers=2)
    rnn_keys = {k: torch.tensor(np.asarray(v)) for k, v in sd.items()
                if k.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh"))}
    missing, unexpected = mod.load_state_dict(rnn_keys, strict=False)
    assert not missing and not unexpected
    head = torch.nn.Linear(4, spec.num_classes)
    head.load_state_dict({"weight": torch.tensor(sd["head.weight"]),
                          "bias": torch.tensor(sd["head.bias"])})
    emb = torch.nn.Embedding(spec.vocab_size, spec.input_size)
    emb.load_state_dict({"weight": torch.tensor(sd["embedding.weight"])})


def bad_chunks(spec, good):
    """(name, kwargs of a refused Engine.step) built from one good chunk of 2 streams."""
    out = []
    key = "tokens" if spec.vocab_size > 0 else "inputs"
    tkey = "target_classes" if spec.num_classes > 0 else "targets"
    x = good[key]
    if spec.vocab_size > 0:
        for name, tok in (("token_too_big", spec.vocab_size), ("token_negative", -1)):
            bad = x.copy()
            bad[1, 1] = tok
            out.append((name, dict(good, tokens=bad)))
        out.append(("tokens_wrong_ndim", dict(good, tokens=x[..., None])))
    else:
        for name, val in (("input_nan", np.nan), ("input_inf", np.inf), ("input_-inf", -np.inf)):
            bad = x.copy()
            bad[1, 1, 0] = val
            out.append((name, dict(good, inputs=bad)))
        out.append(("input_wrong_width", dict(good, inputs=np.zeros(x.shape[:2] + (x.shape[2] + 1,),
                                                                   np.float32))))
        out.append(("input_wrong_ndim", dict(good, inputs=x[0])))
    out.append(("batch_mismatch", dict(good, **{key: x[:1]})))
    if spec.target_mode == "explicit":
        t = good[tkey]
        out.append(("target_length_mismatch", dict(good, **{tkey: t[:, :-1]})))
        out.append(("targets_missing", {k: v for k, v in good.items() if k != tkey}))
        if spec.num_classes > 0:
            bad = t.copy()
            bad[0, 0] = spec.num_classes
            out.append(("class_out_of_range", dict(good, target_classes=bad)))
        else:
            for name, val in (("target_nan", np.nan), ("target_inf", np.inf)):
                bad = t.copy()
                bad[0, -1, 0] = val
                out.append((name, dict(good, targets=bad)))
            out.append(("target_wrong_width", dict(good, targets=t[..., :-1])))
    return out


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
@pytest.mark.parametrize("inp", ["dense", "token"])
@combos
def test_bad_input_refused_and_nothing_changes(cell, variant, rule, opt, inp, sharing):
    spec = spec_for(cell, variant, rule, opt, inp=inp, sharing=sharing)
    first, good, last = random_chunks(spec, 2, (3, 3, 2), seed=11)
    clean, dirty = Engine(spec), Engine(spec)
    run(clean, [first])
    run(dirty, [first])
    sid = "a"
    weights = dirty.state_dict(stream_id=sid if sharing == "per_stream" else None)
    stats = dict(dirty.stream_stats(sid))
    for name, kwargs in bad_chunks(spec, good):
        with pytest.raises(ValueError):
            dirty.step(["a", "b"], **kwargs)
        assert dict(dirty.stream_stats(sid)) == stats, name
    after = dirty.state_dict(stream_id=sid if sharing == "per_stream" else None)
    for k in weights:
        np.testing.assert_array_equal(after[k], weights[k], err_msg=k)
    assert_same_runs(run(clean, [good, last]), run(dirty, [good, last]), rtol=0, atol=0)


@combos
def test_bad_state_dicts_refused(cell, variant, rule, opt):
    for sharing in ("shared", "per_stream"):
        spec = spec_for(cell, variant, rule, opt, sharing=sharing)
        eng = Engine(spec)
        run(eng, random_chunks(spec, 2, (2,)))
        sd = eng.state_dict(stream_id="a" if sharing == "per_stream" else None)
        if sharing == "per_stream":
            with pytest.raises(ValueError):
                eng.state_dict(stream_id="never-seen")
        sid = "a" if sharing == "per_stream" else None
        bad = [dict(sd, **{"not_a_parameter": np.zeros(3, np.float32)}),
               {k: v for k, v in sd.items() if k != "head.bias"},
               dict(sd, **{"head.weight": np.zeros((7, 7), np.float32)})]
        for b in bad:
            with pytest.raises(ValueError):
                eng.load_state_dict(b, stream_id=sid)
        now = eng.state_dict(stream_id=sid)
        for k in sd:
            np.testing.assert_array_equal(now[k], sd[k])


@combos
def test_inf_loss_skips_update(cell, variant, rule, opt):
    # normalize off: standardised, the steps after the first huge target are finite again
    # (the statistics have taken it), so only the kernel's own skip is checked here
    spec = spec_for(cell, variant, rule, opt, output_size=1, normalize="off")
    eng = Engine(spec)
    first = random_chunks(spec, 1, (2,))[0]
    eng.step(["a"], **first)
    before = eng.state_dict()
    T = spec.tbptt_k1 if spec.algorithm == "tbptt" else 2
    huge = dict(inputs=np.ones((1, T, spec.input_size), np.float32),
                targets=np.full((1, T, 1), 3.0e38, np.float32))
    _, losses = eng.step(["a"], **huge)
    assert not np.all(np.isfinite(losses))
    stats = eng.stream_stats("a")
    stats_keys_ok(stats)
    assert stats["skipped_updates"] >= 1
    after = eng.state_dict()
    for k in before:
        assert np.all(np.isfinite(after[k])), k
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    preds, losses = eng.step(["a"], **random_chunks(spec, 1, (3,), seed=2)[0])
    assert np.all(np.isfinite(preds)) and np.all(np.isfinite(losses))
    assert np.all([np.isfinite(v).all() for v in eng.state_dict().values()])


@combos
def test_chunked_equals_unchunked(cell, variant, rule, opt):
    for sharing in ("shared", "per_stream"):
        spec = spec_for(cell, variant, rule, opt, sharing=sharing)
        whole = random_chunks(spec, 2, (7,))[0]
        parts = [{k: v[:, a:b] for k, v in whole.items()} for a, b in ((0, 2), (2, 3), (3, 7))]
        e1, e2 = Engine(spec), Engine(spec)
        (p1, l1), = run(e1, [whole])
        r2 = run(e2, parts)
        np.testing.assert_allclose(p1, np.concatenate([p for p, _ in r2], 1), **EXACT)
        np.testing.assert_allclose(l1, np.concatenate([l for _, l in r2], 1), **EXACT)
        for sid in ("a", "b") if sharing == "per_stream" else (None,):
            s1, s2 = e1.state_dict(stream_id=sid), e2.state_dict(stream_id=sid)
            for k in s1:
                np.testing.assert_allclose(s1[k], s2[k], **EXACT, err_msg=k)
        for sid in ("a", "b"):
            assert e1.stream_stats(sid)["steps"] == e2.stream_stats(sid)["steps"] == 7


@pytest.mark.parametrize("inp", ["dense", "token"])
@combos
def test_next_input_equals_explicit_shifted(cell, variant, rule, opt, inp):
    # normalize off: standardised, explicit targets have statistics of their own (those of
    # x_1..x_t), next_input's are the inputs' (x_0..x_t), so the two differ by design
    nxt = spec_for(cell, variant, rule, opt, inp=inp, target_mode="next_input",
                   normalize="off")
    exp = dataclasses.replace(nxt, target_mode="explicit")
    seq = random_chunks(nxt, 2, (7,))[0]
    key = "tokens" if inp == "token" else "inputs"
    tkey = "target_classes" if inp == "token" else "targets"
    x = seq[key]
    e_next, e_exp = Engine(nxt), Engine(exp)
    (pn1, ln1), (pn2, ln2) = run(e_next, [{key: x[:, :3]}, {key: x[:, 3:]}])
    (pe, le), = run(e_exp, [{key: x[:, :-1], tkey: x[:, 1:].astype(
        np.int64 if inp == "token" else np.float32)}])
    pn = np.concatenate([pn1, pn2], 1)
    ln = np.concatenate([ln1, ln2], 1)
    assert np.all(np.isnan(ln[:, 0])) and np.all(np.isfinite(ln[:, 1:]))
    np.testing.assert_allclose(pn[:, :-1], pe, **EXACT)
    np.testing.assert_allclose(ln[:, 1:], le, **EXACT)
    sn, se = e_next.state_dict(), e_exp.state_dict()
    for k in se:
        np.testing.assert_allclose(sn[k], se[k], **EXACT, err_msg=k)


@combos
def test_stats_and_reset(cell, variant, rule, opt):
    spec = spec_for(cell, variant, rule, opt)
    eng = Engine(spec)
    chunk = random_chunks(spec, 2, (3,))[0]
    p1, _ = eng.step(["a", "b"], **chunk)
    stats = eng.stream_stats("a")
    stats_keys_ok(stats)
    assert stats["steps"] == 3 and stats["skipped_updates"] == 0
    assert stats["updates"] >= 1
    assert np.isfinite(stats["running_loss"]) and np.isfinite(stats["gradient_norm"])
    # After a reset the stream starts from the zero state: with learning off, a fresh stream
    # and the reset one predict the same.
    eng.reset_stream("a")
    pa, _ = eng.step(["a", "c"], learn=False, **{k: np.stack([v[0], v[0]])
                                                 for k, v in chunk.items()})
    np.testing.assert_allclose(pa[0], pa[1], **EXACT)


@pytest.mark.parametrize("sharing", ["shared", "per_stream"])
def test_non_finite_weights_refused(sharing):
    spec = make_spec("gru", sharing=sharing)
    eng = Engine(spec)
    sd = eng.state_dict()
    with pytest.raises(ValueError):
        eng.load_state_dict(dict(sd, **{"head.bias": np.full_like(sd["head.bias"], np.nan)}))
    for k, v in eng.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad"])
def test_zero_eps_refused_where_it_divides(optimizer):
    """eps = 0 would divide 0 by 0 for every parameter whose gradient is still zero."""
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        Spec(cell="elman", hidden_sizes=(2,), input_size=1, output_size=1,
             optimizer=optimizer, eps=0.0).validate()
    Spec(cell="elman", hidden_sizes=(2,), input_size=1, output_size=1,
         optimizer="sgd", eps=0.0).validate()  # SGD has no eps


@pytest.mark.parametrize("inp,head", [("dense", "regression"), ("dense", "classes"), ("token", None)])
def test_arrays_kept_per_batch_shape_stay_as_made(inp, head):
    """Engine.step keeps the arrays the kernels only read (absent targets, tokens or classes,
    lengths, weight rows) per batch shape: whatever calls come, predict-only, learning,
    ragged, they still hold zeros (lengths: T) afterwards."""
    spec = make_spec("lstm", algorithm="tbptt", inp=inp, head=head)
    eng = Engine(spec)
    for k, c in enumerate(random_chunks(spec, 2, [1, 3, 1, 3, 2])):
        eng.step(["a", "b"], **c)
        no_targets = {n: v for n, v in c.items() if n in ("inputs", "tokens")}
        eng.step(["a", "b"], learn=False, **no_targets)
        eng.step(["a", "b"], lengths=np.array([1, next(iter(c.values())).shape[1]]), **c)
    assert eng._constant_cache
    for (B, T), const in eng._constant_cache.items():
        np.testing.assert_array_equal(const.lengths, np.full(B, T))
        for name in ("tokens", "inputs", "targets", "classes", "rows"):
            assert not np.any(getattr(const, name)), name


@pytest.mark.parametrize("rule", [("rtrl", 1, 1), ("tbptt", 4, 4)], ids=rule_id)
def test_a_growing_pool_runs_as_separate_engines(rule):
    """Streams added one by one past the pool's capacity (its arrays are replaced as it grows,
    and the cached kernel bundles with them) predict and learn as each would alone."""
    spec = make_spec("gru", algorithm=rule[0], k1=rule[1], k2=rule[2], sharing="per_stream")
    together = Engine(spec)
    chunks = random_chunks(spec, 1, [3] * 11)
    ids = [f"s{k}" for k in range(11)]
    got = {}
    for k, c in enumerate(chunks):  # stream k joins at call k; every stream steps every call
        sids = ids[:k + 1]
        batch = {n: np.repeat(v, len(sids), axis=0) for n, v in c.items()}
        preds, _ = together.step(sids, **batch)
        got[k] = preds
    for j, sid in enumerate(ids):
        alone = Engine(spec)
        for k in range(j, len(chunks)):
            preds, _ = alone.step([sid], **chunks[k])
            np.testing.assert_allclose(got[k][j], preds[0], **EXACT)
