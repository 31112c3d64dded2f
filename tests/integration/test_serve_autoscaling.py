"""Autoscaling of ``aetheris serve`` (issue 16 item 5): under load the Ingress scales up, back down after, no request fails.

The service runs as a user runs it (``aetheris serve --synthetic --address local``, its own
local Ray of 2 CPUs, HAProxy in front) with ``--deployment-config``: a copy of
deployments/serve_config.yaml whose Ingress reacts in seconds (target 2 ongoing requests,
metrics every second, 3 s down-scale delay) so the test stays short.  Replicas are
counted from outside, as the Ray worker processes named ``ray::ServeReplica:aetheris:<name>``
in the service's process tree that listen on a TCP port (a replica opens its servers once
its actor is up; a stopped replica's process exits).  Every wait polls with a generous deadline; nothing
asserts a duration.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from aetheris_ray.distributed.serving import HAPROXY_PORTS

#: serve_config.yaml sets the Ingress's ``metrics_interval_s`` (deprecated in Ray 2.60 in favour of an
#: environment variable that Ray does not read yet).
IGNORE_METRICS_INTERVAL = pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")
KEY = "autoscale-key-0123456789"
BODY = {"asset": "SYN-BTC", "horizon": 7, "paths": 1000}
#: Ingress autoscaling of the test's config: scale at 2 ongoing requests, decide within seconds.
QUICK = {"target_ongoing_requests": 2, "metrics_interval_s": 1, "look_back_period_s": 2, "upscale_delay_s": 1,
         "downscale_delay_s": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick_config(path: Path) -> Path:
    """deployments/serve_config.yaml with the Ingress's autoscaling delays shortened (`QUICK`), written to ``path``."""
    from deployments.app import SERVE_CONFIG

    doc = yaml.safe_load(SERVE_CONFIG.read_text())
    app = next(a for a in doc["applications"] if a["name"] == "aetheris")
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    ingress["autoscaling_config"].update(QUICK)
    path.write_text(yaml.safe_dump(doc))
    return path


def replicas(root_pid: int, deployment: str) -> int:
    """Replicas of ``deployment`` in the process tree of ``root_pid`` that listen on a TCP port."""
    import ray  # noqa: F401, I001  (ray ships psutil in its third-party path: import it first)
    import psutil

    tag = f"ray::ServeReplica:aetheris:{deployment}"
    pids = set()
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith(tag):
                pids.add(p.pid)
        except psutil.Error:  # exited meanwhile
            continue
    listening = {c.pid for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    return len(pids & listening)


class Load:
    """Closed-loop clients in threads, each posting forecasts with a new seed; ``concurrency`` can change."""

    def __init__(self, url: str, most: int) -> None:
        self.url, self.concurrency = url, 0
        self.ok, self.failed = 0, []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seed = iter(range(10**9))
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(most)]
        for t in self._threads:
            t.start()

    def _client(self, i: int) -> None:
        with requests.Session() as s:
            while not self._stop.is_set():
                if i >= self.concurrency:
                    time.sleep(0.05)
                    continue
                with self._lock:
                    seed = next(self._seed)
                try:
                    r = s.post(f"{self.url}/v1/forecast", json={**BODY, "seed": seed},
                               headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
                    outcome = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                except requests.RequestException as e:
                    outcome = f"{type(e).__name__}: {e}"[:300]
                with self._lock:
                    if outcome is None:
                        self.ok += 1
                    else:
                        self.failed.append(outcome)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


def wait_for(what: str, cond, timeout_s: float = 90.0, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(every_s)


@pytest.fixture(scope="module")
def service(tmp_path_factory, aetheris_serve):
    """``aetheris serve --synthetic --address local --deployment-config <quick copy>``; yields (process, url)."""
    tmp = tmp_path_factory.mktemp("autoscale")
    config = quick_config(tmp / "serve_config.yaml")
    port = free_port()
    env = {"AETHERIS_HOME": str(tmp / "home"), "AETHERIS_API_KEYS": f'["{KEY}"]'}
    env.update({name: str(free_port()) for name in HAPROXY_PORTS})  # HAProxy's side ports: free ones, not Serve's fixed defaults
    with aetheris_serve(["--synthetic", "--port", str(port), "--num-cpus", "2", "--address", "local",
                         "--deployment-config", str(config)], env) as (proc, url, _):
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
        wait_for("the app answers /healthz", lambda: _healthy(url), timeout_s=120)
        yield proc, url


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.integration
@pytest.mark.slow
def test_ingress_scales_up_under_load_and_back_down_without_a_failed_request(service):
    proc, url = service
    assert replicas(proc.pid, "Ingress") == 1
    load = Load(url, most=16)
    try:
        load.concurrency = 16
        wait_for("a second Ingress replica under load", lambda: replicas(proc.pid, "Ingress") >= 2)
        served_at_peak = load.ok
        wait_for("requests served by both replicas", lambda: load.ok >= served_at_peak + 200)
        load.concurrency = 1  # light load while the extra replica drains and stops
        wait_for("back to one Ingress replica", lambda: replicas(proc.pid, "Ingress") == 1)
        after_down = load.ok
        wait_for("requests served after the downscale", lambda: load.ok >= after_down + 20)
    finally:
        load.stop()
    assert not load.failed, (len(load.failed), load.failed[:5])
    assert load.ok > 0
    assert replicas(proc.pid, "Calibrator") == 1 and replicas(proc.pid, "Simulator") == 1
    assert proc.poll() is None


@pytest.mark.integration
@IGNORE_METRICS_INTERVAL
def test_shipped_config_fits_two_cpus_at_max_replicas(tmp_path):
    """serve_config.yaml's bounds: at max replicas (plus each Simulator's pool actors) the app reserves <= 2 CPUs."""
    from aetheris_ray.distributed.serving import cpu_reservation, cpu_shortfall
    from deployments.app import SERVE_CONFIG, AppArgs

    args = AppArgs(synthetic=True, home=str(tmp_path), deployment_config=str(SERVE_CONFIG))
    parts = cpu_reservation(args)
    assert sum(parts.values()) <= 2.0, parts
    assert cpu_shortfall(args, 2) is None
    assert parts["simulator pool actors"] == 2 * args.pool_actors * args.actor_num_cpus  # 2 Simulator replicas
    assert "stay PENDING" in cpu_shortfall(args, 1)
    fixed = cpu_reservation(AppArgs(synthetic=True, home=str(tmp_path)))  # no config: single replicas
    assert fixed["Ingress"] == 0 and fixed["simulator pool actors"] == args.pool_actors * args.actor_num_cpus


@pytest.mark.integration
def test_network_deployments_are_in_the_graph_unless_asked_in_replica(tmp_path):
    """One deployment per neural network part by default; ``aetheris serve --networks-in-replica`` has none."""
    from aetheris_ray.config import load_settings
    from aetheris_ray.distributed.serving import app_args, cpu_reservation
    from deployments.models import NETWORK_DEPLOYMENTS

    settings = load_settings(home=tmp_path)
    with_nets = cpu_reservation(app_args(settings, synthetic=True))
    in_replica = cpu_reservation(app_args(settings, synthetic=True, extra={"networks": False}))
    assert set(NETWORK_DEPLOYMENTS.values()) <= set(with_nets)
    assert not set(NETWORK_DEPLOYMENTS.values()) & set(in_replica)
    assert {"Ingress", "Features", "Simulator", "Calibrator"} <= set(in_replica)


@pytest.mark.integration
def test_deployment_config_option(tmp_path, capsys):
    """``--deployment-config``: the shipped file by default, 'none' for fixed replicas, a missing file exits 2."""
    from aetheris_ray.cli import main
    from aetheris_ray.cli.serve import deployment_config_path
    from deployments.app import SERVE_CONFIG

    assert deployment_config_path(None) == SERVE_CONFIG
    assert deployment_config_path(Path("none")) is None
    assert deployment_config_path(SERVE_CONFIG) == SERVE_CONFIG
    assert main(["serve", "--deployment-config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
