"""The Ray environment the Serve app is started with (no Ray needed)."""

from __future__ import annotations

import os

from aetheris_ray.distributed.serving import SERVE_ENV, serve_logging, use_serve_env


def test_use_serve_env_fills_gaps_and_keeps_what_is_set(monkeypatch):
    for k in SERVE_ENV:
        monkeypatch.delenv(k, raising=False)
    first, *_ = SERVE_ENV
    monkeypatch.setenv(first, "0")  # an operator's explicit choice wins
    use_serve_env()
    assert os.environ[first] == "0"
    assert all(os.environ[k] == v for k, v in SERVE_ENV.items() if k != first)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] in ("0", "1")


def test_proxy_access_log_is_off_unless_asked():
    assert serve_logging() == {"enable_access_log": False}
    assert serve_logging(True) == {"enable_access_log": True}
