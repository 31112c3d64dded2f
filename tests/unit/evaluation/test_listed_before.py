import pandas as pd

from aetheris_ray.data import CsvSource
from aetheris_ray.evaluation.backtest import listed_before


def _write(path, start, n):
    dates = pd.date_range(start, periods=n, freq="D")
    pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": 1.0, "high": 1.1, "low": 0.9, "close": 1.0}).to_csv(
        path, index=False)


def test_listed_before_keeps_assets_with_earlier_history(tmp_path):
    (tmp_path / "daily").mkdir()
    _write(tmp_path / "daily" / "OLD-USD.csv", "2019-05-01", 100)
    _write(tmp_path / "daily" / "NEW-USD.csv", "2021-03-01", 100)
    src = CsvSource(tmp_path)
    assert listed_before(src, src.assets(), "2021-01-01") == ["OLD-USD"]
    assert listed_before(src, src.assets(), "2022-01-01") == ["NEW-USD", "OLD-USD"]
    assert listed_before(src, src.assets(), "2019-05-01") == []
