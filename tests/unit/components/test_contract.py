"""Contract harness over the whole registry: every registered variant of every kind obeys its protocol.

Model parts (trend, volatility, jumps, residuals, paths) are fitted through the
composer (`aetheris_ray.model.fit_model`), so each gets exactly the inputs it
declares; torch variants run when torch is installed (an artefact variant gets its
seeded untrained artefact, ``fitted_cls.from_params()``) and skip otherwise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from aetheris_ray.calibration import CalibrationConfig
from aetheris_ray.components import PROTOCOLS, Context, build_spec, load_component, names, spec_class
from aetheris_ray.components.registry import KINDS, PATH_PARTS, Variant, register, spec_from_dict, unregister, variant
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.model import MODEL_KINDS, ComponentChoice, EngineConfig, fit_model, resolve_config

ALL = [(k, n) for k in KINDS for n in names(k)]
MODEL_VARIANTS = [(k, n) for k, n in ALL if k in MODEL_KINDS]


def _param(kind: str, name: str, *, one: bool = False):
    """A test parameter ``(kind, name)`` (or the pair as one value, ``one=True``), marked ``torch`` for neural ones."""
    cls = spec_class(kind, name)
    marks = [pytest.mark.torch] if getattr(cls, "requires_torch", False) else []
    values = ((kind, name),) if one else (kind, name)
    return pytest.param(*values, id=f"{kind}/{name}", marks=marks)


def fit_variant(kind: str, name: str, returns: np.ndarray):
    """The variant fitted as the engine fits it (the baseline's other parts around it)."""
    if spec_class(kind, name).requires_torch:
        pytest.importorskip("torch")
    cfg = EngineConfig(**{kind: ComponentChoice(name=name)})
    artefacts = {}
    if variant(kind, name).artefact:
        artefacts[kind] = spec_class(kind, name).fitted_cls.from_params(seed=0)
        cfg = cfg.model_copy(update={"resolved": True})
    model = fit_model(resolve_config(cfg), cfg.specs(), returns, artefacts=artefacts)
    return model.part(kind)


@pytest.fixture(scope="module", params=[_param(k, n, one=True) for k, n in MODEL_VARIANTS])
def fitted(request, returns):
    return fit_variant(*request.param, returns)


def test_every_kind_has_variants_and_unknown_names_are_refused():
    assert set(KINDS) == {"trend", "volatility", "jumps", "residuals", "paths", "calibrator", "market_state",
                          "explainer"}
    for kind in KINDS:
        assert names(kind), kind
    with pytest.raises(InvalidInput, match=r"volatility component 'garhc' is not registered; valid names: .*garch"):
        build_spec("volatility", "garhc")
    with pytest.raises(InvalidInput, match=r"component kind 'drift' is not known; valid kinds: trend"):
        names("drift")
    with pytest.raises(InvalidInput, match=r"unknown parameter\(s\) \['lamda'\]; valid: \['lam', 'path_dependent'\]"):
        build_spec("volatility", "ewma", lamda=0.9)
    with pytest.raises(InvalidInput, match=r"lam=1.5 must be in \(0, 1\)"):
        build_spec("volatility", "ewma", lam=1.5)


@pytest.mark.parametrize(("kind", "name"), [_param(k, n) for k, n in ALL])
def test_every_registration_resolves_to_a_spec_of_its_kind(kind, name):
    cls = spec_class(kind, name)
    assert cls.kind == kind and cls.name == name
    assert isinstance(cls.requires_torch, bool)
    v = variant(kind, name)
    if v.artefact:
        assert v.fallback in names(kind) and not spec_class(kind, v.fallback).requires_torch
    if v.search_space is not None:
        assert hasattr(cls, "trainer"), f"{kind}/{name} has a search space but no trainer"


def test_register_plugs_a_new_variant_and_unregister_removes_it():
    from aetheris_ray.components.volatility import EwmaVolatility

    register("volatility", "_test_ewma", EwmaVolatility)
    try:
        assert build_spec("volatility", "_test_ewma", lam=0.9).lam == 0.9
        assert variant("volatility", "_test_ewma").source == "register()"
    finally:
        unregister("volatility", "_test_ewma")
    assert "_test_ewma" not in names("volatility")
    with pytest.raises(InvalidInput, match="built in"):
        unregister("volatility", "garch")
    with pytest.raises(InvalidInput, match="artefact=True needs fallback"):
        Variant("volatility", "x", EwmaVolatility, artefact=True)


def test_spec_is_frozen_and_fit_does_not_mutate_it(returns):
    spec = build_spec("volatility", "garch")
    before = spec.to_dict()
    spec.fit(returns)
    assert spec.to_dict() == before
    with pytest.raises(AttributeError):
        spec.dist = "normal"  # type: ignore[misc]
    assert spec_from_dict("volatility", before) == spec


def test_protocol_flags_and_declared_needs(fitted):
    assert isinstance(fitted, PROTOCOLS[fitted.kind]), f"{fitted.kind}/{fitted.name} misses a verb of its protocol"
    assert isinstance(fitted.requires_torch, bool) and isinstance(fitted.has_analytic_moments, bool)
    assert fitted.batch_size == 1
    for arg, ref in fitted.needs.items():
        kind, _, verb = ref.partition(".")
        assert kind in PATH_PARTS and verb, (arg, ref)
        assert callable(getattr(PROTOCOLS[kind], verb, None)), f"{ref}: not a verb of the {kind} protocol"


def test_sample_shape_finite_and_seed_deterministic(fitted, state):
    a = fitted.sample(state, 500, 9, np.random.default_rng(3))
    b = fitted.sample(state, 500, 9, np.random.default_rng(3))
    c = fitted.sample(state, 500, 9, np.random.default_rng(4))
    assert a.shape == (500, 9)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    if fitted.kind in ("volatility", "residuals", "jumps", "paths") and fitted.name not in ("none",):
        assert not np.array_equal(a, c)


def test_quantiles_increase_with_the_level(fitted, state):
    x = np.cumsum(fitted.sample(state, 2000, 7, np.random.default_rng(0)), axis=1)
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    assert np.all(np.diff(q, axis=0) >= 0)
    if fitted.kind in ("volatility", "paths"):
        assert np.all(q[-1] - q[0] > 0)


def test_batched_route_equals_the_single_state_route(fitted, returns, make):
    make_state = make.state
    states = [make_state(returns[:800]), make_state(returns), make_state(returns[:300], label="crisis")]
    ctx = Context.from_states(states, lookback=1000)
    batch = fitted.take(np.zeros(3, dtype=int))
    cond = batch.condition(ctx)
    one = fitted.condition(Context.from_states(states[1:2], lookback=1000))

    def check(a, b, path):
        if isinstance(b, dict):
            for k in b:
                check(a[k], b[k], f"{path}.{k}")
        elif isinstance(b, np.ndarray):
            np.testing.assert_allclose(np.asarray(a)[1:2], b, rtol=1e-12, atol=0, err_msg=path)

    check(cond, one, fitted.name)
    out = batch.simulate(cond, 100, 5, np.random.default_rng(0))
    assert out.shape == (3, 100, 5) and np.all(np.isfinite(out))


def test_shared_state_is_held_once(fitted):
    """What a part learned once is not copied per origin: take/stack leave ``shared`` alone."""
    many = type(fitted).stack([fitted.take(np.zeros(4, dtype=int)), fitted.take(np.zeros(3, dtype=int))])
    assert many.shared is fitted.shared or all(many.shared[k] is fitted.shared[k] for k in fitted.shared)
    for k, v in many.params.items():
        assert np.shape(v)[0] == 7, k
    if fitted.requires_torch:  # a network's weights live in shared, none in the per-fit params
        assert fitted.shared and not any(k.startswith("w.") for k in fitted.params)


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
    for f in d.rglob("*.npz"):
        with np.load(f, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files), f


@pytest.mark.parametrize(("kind", "name"), [_param(k, n) for k, n in MODEL_VARIANTS])
@pytest.mark.slow
def test_extreme_inputs_stay_finite(kind, name, make):
    make_state = make.state
    crash = np.concatenate([0.02 * np.random.default_rng(0).standard_normal(400), [np.log(0.1)],
                            0.05 * np.random.default_rng(1).standard_normal(20)])
    flat = np.zeros(500)
    short = 0.03 * np.random.default_rng(2).standard_normal(30)
    for r in (crash, flat, short):
        x = fit_variant(kind, name, r).sample(make_state(r), 200, 14, np.random.default_rng(0))
        assert np.all(np.isfinite(x)), (kind, name)


# -- calibrator, market state, explainer ------------------------------------------------------


@pytest.mark.parametrize("name", names("calibrator"))
def test_calibrator_variants(name, tmp_path):
    part = spec_class("calibrator", name)()
    cal = part.build(CalibrationConfig(window_days=200), "TEST-USD", "m1")
    assert isinstance(cal, PROTOCOLS["calibrator"])
    rng = np.random.default_rng(0)
    n = 400
    days = np.arange(n) + 19000
    cal.add(days, np.full(n, 1), np.full(n, "normal"), rng.random(n) ** 1.5)  # a mis-calibrated model
    lm = cal.level_map("normal", 19000 + n + 5, buckets=[0])
    levels = np.linspace(0.02, 0.98, 25)
    raw = lm.raw_levels(0, levels)
    assert np.all(np.diff(raw) >= 0) and len(cal) == n
    back = part.load(cal.save(tmp_path / "cal.json"))
    np.testing.assert_array_equal(back.level_map("normal", 19000 + n + 5, buckets=[0]).raw_levels(0, levels), raw)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_param("market_state", n).marks) for n in names("market_state")])
def test_market_state_variants(name):
    from aetheris_ray.data.synthetic import SyntheticSource
    from aetheris_ray.features.state import REGIME_LABELS

    part = spec_class("market_state", name)()
    assert isinstance(part, PROTOCOLS["market_state"])
    data = SyntheticSource(seed=1, start="2020-01-01", end="2021-12-31").history("SYN-BTC")
    origins = list(data.daily_close().index[[200, 400, 600]])
    many = part.compute_states(data, origins)
    one = part.compute_state(data, origins[1])
    assert [s.regime_label in REGIME_LABELS for s in many] == [True] * 3
    np.testing.assert_array_equal(many[1].regime_vector, one.regime_vector)
    assert many[1].mm_indices == one.mm_indices


@pytest.mark.parametrize("name", names("explainer"))
def test_explainer_variants_follow_the_protocol(name):
    assert isinstance(spec_class("explainer", name)(), PROTOCOLS["explainer"])
