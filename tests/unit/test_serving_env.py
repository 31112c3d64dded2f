"""The Ray environment the Serve app is started with (no Ray needed)."""

from __future__ import annotations

import os

import pytest

from aetheris_ray.distributed.serving import HAPROXY, HAPROXY_PORTS, SERVE_ENV, haproxy_binary, serve_logging, use_serve_env

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test starts without the Serve variables; whatever it sets is undone afterwards."""
    for k in (*SERVE_ENV, "RAY_USAGE_STATS_ENABLED", "RAY_SERVE_HAPROXY_BINARY_PATH", *HAPROXY_PORTS):
        monkeypatch.delenv(k, raising=False)


def test_use_serve_env_fills_gaps_and_keeps_what_is_set(monkeypatch):
    first, *_ = SERVE_ENV
    monkeypatch.setenv(first, "0")  # an operator's explicit choice wins
    use_serve_env()
    assert os.environ[first] == "0"
    assert all(os.environ[k] == v for k, v in SERVE_ENV.items() if k != first)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] in ("0", "1")


def test_proxy_access_log_is_off_unless_asked():
    assert serve_logging() == {"enable_access_log": False}
    assert serve_logging(True) == {"enable_access_log": True}


def test_proxy_choice_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(HAPROXY, "1")
    assert use_serve_env("python") == "python" and os.environ[HAPROXY] == "0"
    with pytest.raises(ValueError, match="proxy must be one of"):
        use_serve_env("nginx")


def test_haproxy_falls_back_to_the_python_proxy_without_a_binary(monkeypatch, tmp_path):
    not_executable = tmp_path / "haproxy"
    not_executable.write_text("")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(not_executable))
    assert haproxy_binary() is None
    assert use_serve_env("haproxy") == "python" and os.environ[HAPROXY] == "0"
    not_executable.chmod(0o755)
    assert haproxy_binary() == str(not_executable)
    assert use_serve_env("haproxy") == "haproxy" and os.environ[HAPROXY] == "1"


def test_haproxy_side_ports_move_when_taken(monkeypatch, tmp_path):
    """A second HAProxy-mode Serve on one host would fail to bind HAProxy's stats and metrics ports."""
    import socket

    from aetheris_ray.distributed.serving import HAPROXY_PORTS

    binary = tmp_path / "haproxy"
    binary.write_text("")
    binary.chmod(0o755)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(binary))
    for name in HAPROXY_PORTS:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        monkeypatch.setitem(HAPROXY_PORTS, "RAY_SERVE_HAPROXY_STATS_PORT", port)
        assert use_serve_env("haproxy") == "haproxy"
    moved = int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"])
    assert moved != port and 0 < moved < 65536
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")  # an operator's choice is kept
    use_serve_env("haproxy")
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
