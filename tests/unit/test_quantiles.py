import pytest

from aetheris_ray.errors import InvalidInput
from aetheris_ray.quantiles import DEFAULT_LEVELS, Quantile, labels, parse_levels


@pytest.mark.parametrize(
    "raw, value, label",
    [
        (0.05, 0.05, "q05"),
        ("0.05", 0.05, "q05"),
        ("q05", 0.05, "q05"),
        ("p05", 0.05, "q05"),
        ("P5", 0.05, "q05"),
        ("P95", 0.95, "q95"),
        (0.5, 0.5, "q50"),
        (0.025, 0.025, "q025"),
        ("q975", 0.975, "q975"),
        (0.001, 0.001, "q001"),
    ],
)
def test_parse_forms_and_labels(raw, value, label):
    q = Quantile.parse(raw)
    assert q.value == pytest.approx(value)
    assert q.label == label
    assert Quantile.parse(q.label) == q  # labels round-trip


@pytest.mark.parametrize("bad", ["x05", "q", "", "1.5", 0.0, 1.0, -0.1, True, None, "P0"])
def test_parse_rejects_with_forms(bad):
    with pytest.raises(InvalidInput, match=r"quantile level .* (not valid|outside \(0, 1\))"):
        Quantile.parse(bad)


def test_parse_levels():
    assert parse_levels(None) == DEFAULT_LEVELS
    assert parse_levels("0.1, q50 ,P90") == (0.1, 0.5, 0.9)
    with pytest.raises(InvalidInput, match="strictly increasing"):
        parse_levels([0.5, 0.1])
    with pytest.raises(InvalidInput, match="strictly increasing"):
        parse_levels([0.5, 0.5])
    with pytest.raises(InvalidInput, match="empty"):
        parse_levels("")


def test_default_labels():
    assert labels(DEFAULT_LEVELS) == ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]
