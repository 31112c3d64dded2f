"""Issue 14, item 6: a hostile but fair user at the command line.

Future rows, malformed side-series files, out-of-range ``--as-of``, a ``--data`` that is
neither file nor folder, a ``--plot`` into a missing folder and a request above the
HTTP memory budget: each is one readable error line and exit 2 or 3, never exit 70.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest

from aetheris_ray.cli import main
from aetheris_ray.errors import DataError, InvalidInput

START, DAYS = "2024-01-01", 60  # daily rows 2024-01-01 .. 2024-02-29 (line 61 of the file)


def daily_csv(start: str = START, n: int = DAYS, extra: str = "") -> str:
    rows = [f"{d.date()},{100 + i},{102 + i},{99 + i},{101 + i}" for i, d in
            enumerate(pd.date_range(start, periods=n, freq="D"))]
    return "date,open,high,low,close\n" + "\n".join(rows) + "\n" + extra


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "daily").mkdir(parents=True)
    (root / "daily" / "X-USD.csv").write_text(daily_csv())
    return root


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("AETHERIS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AETHERIS_DEBUG", raising=False)
    return tmp_path / "home"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str, pattern: str) -> str:
    """The one error line of stderr (warnings aside), checked against ``pattern``."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def pin_now(monkeypatch, when: str) -> None:
    now = pd.Timestamp(when, tz="UTC")
    monkeypatch.setattr("aetheris_ray.data.validation.utc_now", lambda: now)
    monkeypatch.setattr("aetheris_ray.data.store.utc_now", lambda: now)


# -- 1. rows after the time of ingest ------------------------------------------------------------


def test_ingest_refuses_rows_dated_2099_and_writes_nothing(capsys, data, tmp_path):
    store = tmp_path / "store"
    assert run(capsys, "ingest", "--data", data, "--store", store)[0] == 0
    before = hashes(store)
    (data / "daily" / "X-USD.csv").write_text(daily_csv(extra="2099-01-01,1,1.6,0.9,1.5\n2099-01-02,1,1.6,0.9,1.5\n"))
    code, out, err = run(capsys, "ingest", "--data", data, "--store", store)
    assert code == 3
    one_error(err, r"^error: .*daily/X-USD\.csv, line 62: date 2099-01-01 \(known at 2099-01-01 22:00:00 UTC\) "
                   r"is in the future")
    assert "new" not in out
    assert hashes(store) == before


def test_todays_daily_bar_is_future_until_its_22_utc_close(capsys, data, tmp_path, monkeypatch):
    last = pd.Timestamp(START) + pd.Timedelta(days=DAYS - 1)  # 2024-02-29
    pin_now(monkeypatch, f"{last.date()} 21:59:59")
    code, _, err = run(capsys, "ingest", "--data", data, "--store", tmp_path / "store")
    assert code == 3
    one_error(err, rf"line 61: date {last.date()} \(known at {last.date()} 22:00:00 UTC\) is in the future "
                   rf"\(now {last.date()} 21:59:59 UTC\)")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.parquet"))
    pin_now(monkeypatch, f"{last.date()} 22:00:00")
    code, out, err = run(capsys, "ingest", "--data", data, "--store", tmp_path / "store")
    assert code == 0, err
    assert "+60 new" in out


def test_future_side_series_value_is_refused(capsys, data, tmp_path):
    write = data / "derivatives" / "X_funding_daily_aggregate.csv"
    write.parent.mkdir()
    write.write_text("date,funding_rate_daily_pct\n2024-01-01,0.01\n2099-01-01,0.01\n")
    code, _, err = run(capsys, "ingest", "--data", data, "--store", tmp_path / "store")
    assert code == 3
    one_error(err, r"X_funding_daily_aggregate\.csv, line 3: date 2099-01-01 \(known at 2099-01-02 UTC\) is in the future")


def test_future_rows_of_a_non_csv_source_are_refused(tmp_path, monkeypatch):
    from aetheris_ray.data import ParquetStore, SyntheticSource

    pin_now(monkeypatch, "2024-06-30 12:00")
    store = ParquetStore(tmp_path / "store")
    with pytest.raises(DataError, match=r"asset=SYN-BTC series=\w+, row \d+: 2024-06-30 \S+ UTC is in the future"):
        store.ingest(SyntheticSource(seed=0, start="2024-01-01", end="2024-07-31", assets=("SYN-BTC",)))
    assert not list((tmp_path / "store").rglob("*.parquet"))


# -- 2. malformed side-series files are errors -------------------------------------------------


@pytest.mark.parametrize("name, body, pattern", [
    ("derivatives/X_funding_daily_aggregate.csv", "date,funding_rate_daily_pct\n2024-01-02,abc\n",
     r"X_funding_daily_aggregate\.csv, line 2: non-numeric value 'abc' in column 'funding_rate_daily_pct'"),
    ("derivatives/X-USDT_binance_funding_8h.csv", "time;rate\n1;2\n",
     r"X-USDT_binance_funding_8h\.csv: missing column\(s\) timestamp,funding_rate"),
    ("derivatives/X_deribit_dvol_daily.csv", "", r"X_deribit_dvol_daily\.csv: empty file"),
    ("derivatives/X_funding_daily.csv", "date,funding_rate_daily_pct\n2024-01-02,0.01\n",
     r"X_funding_daily\.csv: the name matches none of the derivatives/ patterns \(.*_funding_daily_aggregate\.csv"),
    ("derivatives/X-USDT_funding_8h.csv", "timestamp,funding_rate\n2024-01-02 00:00:00,0.0001\n",
     r"X-USDT_funding_8h\.csv: the name matches none of the derivatives/ patterns"),
    ("onchain/X_tx_count_daily.csv", "date,tx_count\n2024-01-02,5\n", r"X_tx_count_daily\.csv: the name matches none"),
    ("intraday/X-USD_2h.csv", "timestamp,open,high,low,close,volume\n",
     r"intraday/X-USD_2h\.csv: the name matches none of the intraday/ patterns \(<BASE>-<QUOTE>_<venue>_<cadence>\.csv\)"),
])
def test_malformed_side_series_file_is_an_error(capsys, data, tmp_path, name, body, pattern):
    (data / name).parent.mkdir(exist_ok=True)
    (data / name).write_text(body)
    code, out, err = run(capsys, "ingest", "--data", data, "--store", tmp_path / "store")
    assert code == 3
    one_error(err, "^error: .*" + pattern)
    assert not list(tmp_path.glob("store/**/*.parquet"))


def test_unknown_and_absent_side_files_stay_fine(capsys, data, tmp_path):
    (data / "derivatives").mkdir()
    (data / "derivatives" / "X_options_oi.csv").write_text("date,oi\n2024-01-01,1\n")  # no kind claimed: a note
    (data / "derivatives" / "README.txt").write_text("notes\n")
    code, out, err = run(capsys, "ingest", "--data", data, "--store", tmp_path / "store")
    assert code == 0, err
    assert "X_options_oi.csv: skipped, the name matches no known pattern" in out


# -- 3. no exit 70 for bad user input ------------------------------------------------------------


@pytest.mark.parametrize("as_of", ["9999-12-31", "2262-04-12", "2100-01-01", "1900-01-01", "0001-01-01"])
@pytest.mark.parametrize("from_store", [False, True])
def test_far_future_or_pre_listing_as_of_names_as_of(capsys, data, tmp_path, as_of, from_store):
    if from_store:
        assert run(capsys, "ingest", "--data", data, "--store", tmp_path / "store")[0] == 0
        source = ["--store", tmp_path / "store"]
    else:
        source = ["--data", data]
    code, _, err = run(capsys, "forecast", *source, "--asset", "X-USD", "--as-of", as_of, "--paths", 200)
    assert code in (2, 3)
    one_error(err, rf"^error: as_of:? {as_of}")


def test_resolve_origin_far_future_is_a_data_error_not_an_overflow():
    from aetheris_ray.history import resolve_origin

    close = pd.Series([1.0, 2.0], index=pd.to_datetime(["2024-01-01", "2024-01-02"]))
    with pytest.raises(DataError, match=r"^as_of 9999-12-31: the newest X-USD close on or before it is 2024-01-02"):
        resolve_origin(close, "9999-12-31", "X-USD")


@pytest.mark.parametrize("command", ["forecast", "ingest"])
def test_data_that_is_neither_file_nor_folder_is_exit_2_naming_data(capsys, command):
    argv = [command, "--data", "/dev/null"] + (["--asset", "X-USD"] if command == "forecast" else [])
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_error(err, r"^error: --data '/dev/null' is neither a CSV file nor a directory")


def test_csv_source_refuses_a_device():
    from aetheris_ray.data import CsvSource

    with pytest.raises(InvalidInput, match="is neither a CSV file nor a directory"):
        CsvSource("/dev/null")


def test_plot_into_a_missing_folder_is_refused_before_the_forecast(capsys, data, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the forecast ran")

    monkeypatch.setattr("aetheris_ray.api.forecast", boom)
    target = tmp_path / "missing" / "dir" / "x.png"
    code, _, err = run(capsys, "forecast", "--data", data, "--asset", "X-USD", "--plot", target)
    assert code == 2
    one_error(err, rf"^error: --plot '{re.escape(str(target))}': the folder '{re.escape(str(target.parent))}' "
                   "does not exist")
    code, _, err = run(capsys, "forecast", "--data", data, "--asset", "X-USD", "--plot", tmp_path)
    assert code == 2
    one_error(err, r"^error: --plot .* is a folder; give a file name")


# -- 4. the HTTP budget of paths x horizon -------------------------------------------------------


def test_cli_applies_the_http_budget_with_the_memory_estimate(capsys, data, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("data was read")

    monkeypatch.setattr("aetheris_ray.api.resolve_source", boom)
    code, _, err = run(capsys, "forecast", "--data", data, "--asset", "X-USD", "--paths", 1_000_000, "--horizon", 90)
    assert code == 2
    one_error(err, r"^error: paths x horizon = 1,000,000 x 90 = 90,000,000 exceeds the budget of 32,000,000 .*"
                   r"about 2\.2 GB of memory at peak.*--force")


def test_force_lifts_the_budget(capsys, data, monkeypatch):
    seen = {}

    def fake(req, source, settings=None):
        seen.update(paths=req.paths, horizon=req.horizon)
        raise DataError("stopped before the simulation")

    monkeypatch.setattr("aetheris_ray.api.forecast_request", fake)
    code, _, err = run(capsys, "forecast", "--data", data, "--asset", "X-USD", "--paths", 1_000_000, "--horizon", 90,
                       "--force")
    assert code == 3 and seen == {"paths": 1_000_000, "horizon": 90}
    one_error(err, "stopped before the simulation")


def test_python_api_budget_and_force(data, monkeypatch):
    from aetheris_ray import api

    with pytest.raises(InvalidInput, match=r"90,000,000 exceeds the budget .*GB of memory at peak"):
        api.forecast("X-USD", 90, paths=1_000_000, data=data)
    monkeypatch.setattr(api, "forecast_request", lambda req, source, settings=None: (req.paths, req.horizon))
    assert api.forecast("X-USD", 90, paths=1_000_000, data=data, force=True) == (1_000_000, 90)
    assert api.forecast("X-USD", 32, paths=1_000_000, data=data) == (1_000_000, 32)  # at the budget: allowed


def test_an_as_of_before_the_first_close_names_as_of():
    import pandas as pd

    from aetheris_ray.errors import DataError
    from aetheris_ray.history import resolve_origin

    empty = pd.Series(dtype=float, index=pd.DatetimeIndex([]))
    with pytest.raises(DataError, match=r"^as_of 2010-01-01: X-USD has no daily close on or before it"):
        resolve_origin(empty, "2010-01-01", "X-USD")
    with pytest.raises(DataError, match=r"^X-USD: no daily closes in the data source"):
        resolve_origin(empty, None, "X-USD")
