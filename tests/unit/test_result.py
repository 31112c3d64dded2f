import json

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.contract import ForecastResponse
from aetheris_ray.errors import InvalidInput
from aetheris_ray.result import Forecast

LEVELS = (0.05, 0.5, 0.95)


def make(quantiles=None, **kw):
    q = np.array([[90.0, 100.0, 110.0], [85.0, 100.0, 116.0]]) if quantiles is None else quantiles
    args = dict(
        asset="BTC-USD",
        origin=pd.Timestamp("2024-12-09"),
        spot=100.0,
        horizons=np.array([1, 2]),
        levels=LEVELS,
        quantiles=q,
        thresholds=np.array([90.0]),
        p_below=np.array([0.2]),
        cdf_levels=np.array([0.05, 0.5, 0.95]),
        cdf_prices=np.array([85.0, 100.0, 116.0]),
        regime={"label": "normal"},
        mm_indices={},
        drivers=None,
        conditional=False,
        seed=7,
        model_version="m",
        calibration_version="c",
        coverage={},
        n_paths=1000,
    )
    args.update(kw)
    return Forecast(**args)


def test_queries():
    fc = make()
    np.testing.assert_array_equal(fc.quantile("q95"), [110.0, 116.0])
    np.testing.assert_array_equal(fc.quantile(0.5), [100.0, 100.0])
    assert fc.prob_below(90.0) == 0.2 and fc.prob_above(90.0) == pytest.approx(0.8)
    assert fc.prob_below(100.0) == pytest.approx(0.5)
    assert 0.05 < fc.prob_below(95.0) < 0.5
    with pytest.raises(InvalidInput, match=r"quantile 0.25 was not computed; available: q05, q50, q95"):
        fc.quantile(0.25)


def test_json_follows_the_contract():
    fc = make()
    payload = json.loads(fc.to_json())
    ForecastResponse.model_validate(payload)
    assert payload["as_of"] == "2024-12-09" and payload["horizons"] == [1, 2]
    assert list(payload["quantiles"]) == ["q05", "q50", "q95"]
    assert payload["thresholds"] == [{"price": 90.0, "p_below": 0.2, "p_above": 0.8, "estimator": "monte_carlo",
                                      "std_error": None}]


def test_frame_and_csv_follow_export_format():
    fc = make()
    df = fc.to_frame()
    assert list(df.columns) == ["asset", "origin", "horizon", "ts", "q05", "q50", "q95"]
    assert fc.to_csv().splitlines()[0] == "asset,origin,horizon,q05,q50,q95"
    assert fc.to_csv().splitlines()[1] == "BTC-USD,2024-12-09,1,90,100,110"


@pytest.mark.parametrize(
    "q, match",
    [
        (np.array([[90.0, 100.0, np.nan], [85.0, 100.0, 116.0]]), "non-finite"),
        (np.array([[90.0, 100.0, 95.0], [85.0, 100.0, 116.0]]), "do not increase"),
        (np.array([[-1.0, 100.0, 110.0], [85.0, 100.0, 116.0]]), "non-positive"),
        (np.ones((3, 3)), "shape"),
    ],
)
def test_post_init_rejects(q, match):
    with pytest.raises(InvalidInput, match=match):
        make(quantiles=q)


def test_plot_writes_png(tmp_path):
    out = tmp_path / "fan.png"
    make().plot(str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_threshold_estimators_and_errors_on_the_wire():
    fc = make(thresholds=np.array([90.0, 50.0]), p_below=np.array([0.2, 1e-5]),
              p_above=np.array([0.8, 1.0 - 1e-5]), threshold_se=np.array([0.01, 2e-7]),
              threshold_estimator=("monte_carlo", "importance_sampling"))
    rows = json.loads(fc.to_json())["thresholds"]
    assert rows[1] == {"price": 50.0, "p_below": 1e-5, "p_above": 1.0 - 1e-5, "estimator": "importance_sampling",
                       "std_error": 2e-7}
    assert fc.prob_above(50.0) == 1.0 - 1e-5 and fc.prob_below(50.0) == 1e-5
    # a response written before these fields existed still validates (they have defaults)
    old = json.loads(make().to_json())
    old["thresholds"] = [{"price": 90.0, "p_below": 0.2, "p_above": 0.8}]
    back = ForecastResponse.model_validate(old)
    assert back.thresholds[0].estimator == "monte_carlo" and back.thresholds[0].std_error is None


@pytest.mark.parametrize("kw,msg", [
    ({"p_above": np.array([np.nan])}, "p_above must be finite"),
    ({"threshold_se": np.array([0.1, 0.2])}, "threshold_se must be finite, in"),
    ({"threshold_estimator": ("monte_carlo", "monte_carlo")}, "one entry per threshold"),
])
def test_bad_threshold_fields_are_refused(kw, msg):
    with pytest.raises(InvalidInput, match=msg):
        make(**kw)
