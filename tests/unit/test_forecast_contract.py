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
    ],
)
def test_validation_names_the_field(payload, match):
    with pytest.raises(InvalidInput, match=match):
        parse_request(payload)


def test_request_passthrough():
    req = ForecastRequest(asset="A", horizon=3)
    assert parse_request(req) is req
