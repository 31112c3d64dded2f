import pytest

from aetheris_ray.config import load_settings
from aetheris_ray.errors import InvalidInput


def test_precedence_defaults_file_env_args(tmp_path, monkeypatch):
    assert load_settings().paths == 10_000  # default
    cfg = tmp_path / "c.toml"
    cfg.write_text("paths = 2000\nhorizon = 3\n")
    monkeypatch.setenv("AETHERIS_CONFIG", str(cfg))
    s = load_settings()
    assert (s.paths, s.horizon) == (2000, 3)  # file beats defaults
    monkeypatch.setenv("AETHERIS_PATHS", "3000")
    assert load_settings().paths == 3000  # env beats file
    assert load_settings().horizon == 3
    assert load_settings(paths=4000).paths == 4000  # explicit beats env
    assert load_settings(paths=None).paths == 3000  # None means "not given"


def test_home_drives_paths(isolated_home):
    s = load_settings()
    assert s.home == isolated_home
    assert s.store_path == isolated_home / "store"
    assert s.registry_path == isolated_home / "registry"


def test_errors_name_the_field(tmp_path, monkeypatch):
    with pytest.raises(InvalidInput, match=r"settings: paths: .*greater than or equal to 100"):
        load_settings(paths=1)
    monkeypatch.setenv("AETHERIS_QUANTILES", '["0.9", "0.1"]')
    with pytest.raises(InvalidInput, match=r"quantiles: .*strictly increasing"):
        load_settings()
    monkeypatch.delenv("AETHERIS_QUANTILES")
    monkeypatch.setenv("AETHERIS_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(InvalidInput, match="AETHERIS_CONFIG=.*missing.toml: no such file"):
        load_settings()


def test_settings_are_rebuilt_when_an_input_changes_and_copied_out(tmp_path, monkeypatch):
    """`load_settings` reuses a build only while the environment, the working directory and the files are the same."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AETHERIS_PATHS", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text("paths = 2000\n")
    monkeypatch.setenv("AETHERIS_CONFIG", str(cfg))
    a = load_settings()
    a.paths = 7  # a caller changing its copy ...
    assert load_settings().paths == 2000  # ... does not change the next caller's
    cfg.write_text("paths = 2500\nhorizon = 4\n")  # the file changes (size differs)
    assert (load_settings().paths, load_settings().horizon) == (2500, 4)
    (tmp_path / ".env").write_text("AETHERIS_HORIZON=5\n")  # a .env appears in the working directory
    assert load_settings().horizon == 5
    monkeypatch.setenv("AETHERIS_HORIZON", "6")  # the environment beats .env
    assert load_settings().horizon == 6
