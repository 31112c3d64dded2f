import pytest

from aetheris_ray.contract import ForecastRequest, parse_request
from aetheris_ray.errors import InvalidInput


def test_defaults():
    req = parse_request({"asset": "BTC-USD", "horizon": 7})
    assert req.paths == 10_000 and req.quantiles == [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    assert req.thresholds == [] and req.scenario is None and req.seed is None


def test_quantile_labels_accepted():
    assert parse_request({"asset": "X", "horizon": 1, "quantiles": ["q10", "P50", 0.9]}).quantiles == [0.1, 0.5, 0.9]


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"asset": "BTC-USD", "horizon": 0}, r"horizon: Input should be greater than or equal to 1 \(got 0\)"),
        ({"asset": "BTC-USD", "horizon": 91}, r"horizon: Input should be less than or equal to 90"),
        ({"asset": "BTC-USD", "horizon": 7, "paths": 99}, r"paths: .*greater than or equal to 100"),
        ({"asset": "BTC-USD", "horizon": 7, "paths": 1_000_001}, r"paths: .*less than or equal to 1000000"),
        ({"asset": "BTC-USD", "horizon": 7, "quantiles": [0.5, 0.1]}, r"quantiles: .*strictly increasing"),
        ({"asset": "BTC-USD", "horizon": 7, "quantiles": [0.5, 1.5]}, r"quantiles: .*outside \(0, 1\)"),
        ({"asset": "BTC-USD", "horizon": 7, "thresholds": [-5]}, r"thresholds: threshold -5.0 must be a positive"),
        ({"horizon": 7}, r"asset: Field required"),
        ({"asset": "BTC-USD", "horizon": 7, "colour": "red"}, r"colour: Extra inputs are not permitted"),
        ({"asset": "BTC-USD", "horizon": 7, "as_of": "2024-13-40"}, r"as_of: "),
        # issue 14 item 3: hostile inputs are bad input, naming the field
        ({"asset": "BTC-USD", "horizon": True}, r"horizon: Input should be a valid integer, not bool"),
        ({"asset": "BTC-USD", "horizon": "7"}, r"horizon: Input should be a valid integer, not str"),
        ({"asset": "BTC-USD", "horizon": 7, "paths": False}, r"paths: .*not bool"),
        ({"asset": "BTC-USD", "horizon": 7, "seed": True}, r"seed: .*not bool"),
        ({"asset": "BTC-USD", "horizon": 7, "thresholds": [True]}, r"thresholds.0: .*valid number, not bool"),
        ({"asset": "BTC-USD", "horizon": 7, "thresholds": ["90000"]}, r"thresholds.0: .*valid number, not str"),
        ({"asset": "BTC-USD", "horizon": 7, "scenario": {"iv_level": True}}, r"scenario.iv_level: .*not bool"),
        ({"asset": "BTC-USD", "horizon": 7, "explain": 1}, r"explain: "),
        ({"asset": "BTC-USD", "horizon": 7, "quantiles": [1e-12, 0.5]}, r"quantiles: .*1e-12 rounds to 0 at the label"),
        ({"asset": "BTC-USD", "horizon": 7, "quantiles": [0.5, 0.99999999999]}, r"quantiles: .*rounds to 1 at the"),
        ({"asset": "BTC-USD", "horizon": 7, "quantiles": [0.1, 0.10000000000001]}, r"quantiles: .*strictly increasing"),
        ({"asset": "BTC-USD", "horizon": 7, "quantiles": ["q" + "1" * 1000]}, r"quantiles: .*1,001 characters long"),
        ({"asset": "BTC-USD", "horizon": 7, "as_of": "9999-12-31"}, r"as_of: 9999-12-31 is outside 2009-01-03 \.\. "),
        ({"asset": "BTC-USD", "horizon": 7, "as_of": "2000-01-01"}, r"as_of: 2000-01-01 is outside 2009-01-03"),
        ({"asset": "BTC-USD", "horizon": 7, "thresholds": [float("nan")]}, r"thresholds: threshold nan must be"),
        ({"asset": "BTC-USD", "horizon": 7, "model": "m" * 201}, r"model: "),
    ],
)
def test_validation_names_the_field(payload, match):
    with pytest.raises(InvalidInput, match=match):
        parse_request(payload)


def test_request_passthrough():
    req = ForecastRequest(asset="A", horizon=3)
    assert parse_request(req) is req


def test_integral_numbers_still_accepted():
    """Only bools and strings are refused: integral floats and numpy scalars are numbers (Python callers)."""
    import numpy as np

    req = parse_request({"asset": "A", "horizon": np.int64(7), "paths": 1000.0, "seed": 3,
                         "thresholds": [1, np.float64(2.5)], "scenario": {"iv_level": 80}})
    assert (req.horizon, req.paths, req.thresholds, req.scenario) == (7, 1000, [1.0, 2.5], {"iv_level": 80.0})


def test_as_of_bounds():
    import datetime as dt

    from aetheris_ray.contract import MIN_DATE, max_date

    assert parse_request({"asset": "A", "horizon": 1, "as_of": MIN_DATE}).as_of == MIN_DATE
    assert parse_request({"asset": "A", "horizon": 1, "as_of": max_date()}).as_of == max_date()
    with pytest.raises(InvalidInput, match="as_of: "):
        parse_request({"asset": "A", "horizon": 1, "as_of": max_date() + dt.timedelta(days=1)})
    with pytest.raises(InvalidInput, match="as_of: "):
        parse_request({"asset": "A", "horizon": 1, "as_of": MIN_DATE - dt.timedelta(days=1)})


def test_finest_levels_keep_distinct_labels():
    from aetheris_ray.quantiles import labels

    req = parse_request({"asset": "A", "horizon": 1, "quantiles": [1e-10, 0.5, 1 - 1e-10]})
    assert labels(req.quantiles) == ["q0000000001", "q50", "q9999999999"]


@pytest.mark.parametrize(
    "payload",
    [
        {"asset": "A", "horizon": 7, "thresholds": list(range(1, 1_000_001))},
        {"asset": "A", "horizon": 7, "thresholds": [-1.0] * 64},
        {"asset": "A", "horizon": 7, "seed": "x" * 1_000_000},
        {"asset": "A", "horizon": 10 ** 4000},
        {"asset": "A", "horizon": 7, "scenario": {f"k{i}": "x" * 1000 for i in range(10_000)}},
        {"asset": "A", "horizon": 7, "thresholds": [[[[[[[1.0] * 1000] * 10]]]]]},
        {f"x{i}": i for i in range(10_000)},
    ],
    ids=["1M-thresholds", "64-bad-thresholds", "1MB-string", "4000-digit-int", "big-dict", "nested", "many-fields"],
)
def test_error_messages_are_bounded(payload):
    """A message never echoes a large input whole (a 26M-number array once gave a 78.6 MB 422)."""
    with pytest.raises(InvalidInput) as e:
        parse_request(payload)
    assert len(str(e.value)) < 3_000


def test_outcome_strict_types_and_origin_bounds():
    from pydantic import ValidationError

    from aetheris_ray.contract import validation_message
    from aetheris_ray.outcomes import Outcome

    good = {"asset": "X", "origin": "2024-01-01", "horizon": 1, "price": 10}
    assert Outcome.model_validate(good).price == 10.0
    for bad, field in [({"horizon": True}, "horizon"), ({"price": "5"}, "price"), ({"price": True}, "price"),
                       ({"origin": "9999-12-31"}, "origin"), ({"origin": "2008-12-31"}, "origin")]:
        with pytest.raises(ValidationError) as e:
            Outcome.model_validate({**good, **bad})
        assert validation_message(e.value).startswith(f"{field}: ")
