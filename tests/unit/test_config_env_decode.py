"""A list setting whose environment variable is not JSON: one line naming the variable, exit 2 (not 70)."""

from __future__ import annotations

import pytest

from aetheris_ray.cli import main
from aetheris_ray.config import load_settings
from aetheris_ray.errors import InvalidInput


@pytest.mark.parametrize("value", ["abc", "[unclosed", "{\"a\": 1"])
def test_api_keys_not_json_is_invalid_input_naming_the_variable(monkeypatch, tmp_path, value):
    monkeypatch.setenv("AETHERIS_HOME", str(tmp_path))
    monkeypatch.setenv("AETHERIS_API_KEYS", value)
    with pytest.raises(InvalidInput, match="AETHERIS_API_KEYS"):
        load_settings()


def test_cli_exits_2_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AETHERIS_HOME", str(tmp_path))
    monkeypatch.delenv("AETHERIS_DEBUG", raising=False)
    monkeypatch.setenv("AETHERIS_API_KEYS", "abc")
    code = main(["models"])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and "AETHERIS_API_KEYS" in lines[0] and "internal error" not in err, err


def test_a_json_list_still_works(monkeypatch, tmp_path):
    monkeypatch.setenv("AETHERIS_HOME", str(tmp_path))
    monkeypatch.setenv("AETHERIS_API_KEYS", '["k1", "k2"]')
    assert load_settings().api_keys == ["k1", "k2"]
