"""Contract harness over the component registry: every baseline variant obeys the same verbs."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.components import Context, FittedComponent, build_spec, load_component, names, spec_class
from aetheris_ray.components.registry import KINDS, REGISTRY, register, spec_from_dict
from aetheris_ray.errors import InvalidInput, ModelNotFound

VARIANTS = [(k, n) for k in KINDS for n in names(k) if not spec_class(k, n).requires_torch]


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"{k}/{n}" for k, n in VARIANTS])
def fitted(request, returns):
    kind, name = request.param
    return build_spec(kind, name).fit(returns)


def test_registry_lists_every_kind_and_refuses_unknown_names():
    assert set(REGISTRY) == set(KINDS)
    assert {"zero", "ar_es"} <= set(names("trend"))
    assert {"ewma", "garch", "har", "blend"} <= set(names("volatility"))
    assert {"none", "poisson", "hawkes"} <= set(names("jumps"))
    assert {"gaussian", "fhs", "student_t"} <= set(names("residuals"))
    with pytest.raises(InvalidInput, match=r"volatility component 'garhc' is not registered; valid names: .*garch"):
        build_spec("volatility", "garhc")
    with pytest.raises(InvalidInput, match=r"component kind 'drift' is not known; valid kinds: trend"):
        names("drift")
    with pytest.raises(InvalidInput, match=r"unknown parameter\(s\) \['lamda'\]; valid: \['lam', 'path_dependent'\]"):
        build_spec("volatility", "ewma", lamda=0.9)
    with pytest.raises(InvalidInput, match=r"lam=1.5 must be in \(0, 1\)"):
        build_spec("volatility", "ewma", lam=1.5)


def test_neural_variants_are_registered_lazily():
    assert "rough_vol" in names("volatility")
    assert isinstance(REGISTRY["volatility"]["rough_vol"], (str, type))


def test_register_plugs_a_new_variant(returns):
    from aetheris_ray.components.volatility import EwmaVolatility

    register("volatility", "_test_ewma", EwmaVolatility)
    try:
        assert build_spec("volatility", "_test_ewma", lam=0.9).lam == 0.9
    finally:
        del REGISTRY["volatility"]["_test_ewma"]


def test_spec_is_frozen_and_fit_does_not_mutate_it(returns):
    spec = build_spec("volatility", "garch")
    before = spec.to_dict()
    spec.fit(returns)
    assert spec.to_dict() == before
    with pytest.raises(AttributeError):
        spec.dist = "normal"  # type: ignore[misc]
    assert spec_from_dict("volatility", before) == spec


def test_protocol_and_flags(fitted):
    assert isinstance(fitted, FittedComponent)
    assert isinstance(fitted.requires_torch, bool) and isinstance(fitted.has_analytic_moments, bool)
    assert fitted.kind in KINDS and fitted.batch_size == 1


def test_sample_shape_finite_and_seed_deterministic(fitted, state):
    a = fitted.sample(state, 500, 9, np.random.default_rng(3))
    b = fitted.sample(state, 500, 9, np.random.default_rng(3))
    c = fitted.sample(state, 500, 9, np.random.default_rng(4))
    assert a.shape == (500, 9)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    if fitted.kind in ("volatility", "residuals", "jumps") and fitted.name not in ("none",):
        assert not np.array_equal(a, c)


def test_quantiles_increase_with_the_level(fitted, state):
    x = np.cumsum(fitted.sample(state, 2000, 7, np.random.default_rng(0)), axis=1)
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    assert np.all(np.diff(q, axis=0) >= 0)
    if fitted.kind == "volatility":
        assert np.all(q[-1] - q[0] > 0)


def test_batched_route_equals_the_single_state_route(fitted, returns, make):
    make_state = make.state
    states = [make_state(returns[:800]), make_state(returns), make_state(returns[:300], label="crisis")]
    ctx = Context.from_states(states, lookback=1000)
    batch = fitted.take(np.zeros(3, dtype=int))
    cond = batch.condition(ctx)
    one = fitted.condition(Context.from_states(states[1:2], lookback=1000))
    for k, v in one.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_allclose(np.asarray(cond[k])[1:2], v, rtol=1e-12, atol=0, err_msg=k)
    out = batch.simulate(cond, 100, 5, np.random.default_rng(0))
    assert out.shape == (3, 100, 5) and np.all(np.isfinite(out))


def test_save_load_round_trip(fitted, state, tmp_path):
    d = fitted.save(tmp_path / "comp")
    back = load_component(d)
    assert type(back) is type(fitted) and back.spec == fitted.spec
    np.testing.assert_array_equal(back.sample(state, 300, 6, np.random.default_rng(1)),
                                  fitted.sample(state, 300, 6, np.random.default_rng(1)))
    assert type(fitted).load(d).name == fitted.name
    with pytest.raises(InvalidInput, match="exists; pass overwrite=True"):
        fitted.save(d)
    fitted.save(d, overwrite=True)
    assert not list(tmp_path.glob(".comp*"))  # no temporary left behind


def test_load_refuses_a_wrong_schema_version(fitted, tmp_path):
    import json

    d = fitted.save(tmp_path / "comp")
    man = json.loads((d / "manifest.json").read_text())
    man["schema_version"] = 99
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelNotFound, match="schema version 99"):
        load_component(d)
    with pytest.raises(ModelNotFound, match="no manifest.json"):
        load_component(tmp_path)


def test_no_pickle_in_artefacts(fitted, tmp_path):
    d = fitted.save(tmp_path / "comp")
    with np.load(d / "params.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_extreme_inputs_stay_finite(make):
    make_state = make.state
    crash = np.concatenate([0.02 * np.random.default_rng(0).standard_normal(400), [np.log(0.1)],
                            0.05 * np.random.default_rng(1).standard_normal(20)])
    flat = np.zeros(500)
    short = 0.03 * np.random.default_rng(2).standard_normal(30)
    for r in (crash, flat, short):
        st = make_state(r)
        for kind, name in VARIANTS:
            x = build_spec(kind, name).fit(r).sample(st, 200, 14, np.random.default_rng(0))
            assert np.all(np.isfinite(x)), (kind, name)
