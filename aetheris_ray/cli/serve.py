"""``aetheris serve``: the Ray Serve app on a local (or existing) Ray."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import DataOpt, OptPath, StoreOpt, SyntheticOpt

APP_NAME = "aetheris"


class Proxy(str, Enum):
    haproxy = "haproxy"
    python = "python"


def deployment_config_path(option: Path | None) -> Path | None:
    """The Serve config ``--deployment-config`` names: the shipped one by default, None for 'none'."""
    from aetheris_ray.errors import InvalidInput
    from deployments.app import SERVE_CONFIG

    if option is None:
        return SERVE_CONFIG
    if str(option).lower() == "none":
        return None
    if not option.is_file():
        raise InvalidInput(f"--deployment-config {option}: no such file")
    return option


@app.command("serve")
def serve_cmd(
    host: Optional[str] = typer.Option(None, "--host", help="HTTP host (default 127.0.0.1; 0.0.0.0 exposes it)"),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP port (default 8000)"),
    data: OptPath = DataOpt,
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: a running local "
                                          "Ray if there is one, else a new one started here; 'local': always a "
                                          "new one, stopped with the command)"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs of the local Ray this command starts"),
    access_log: bool = typer.Option(False, "--access-log", help="log every request in Serve's proxy log "
                                    "(costs about 0.6 ms of CPU per request)"),
    proxy: Optional[Proxy] = typer.Option(None, "--proxy", help="HTTP front of a Ray this command starts: 'haproxy' "
                                        "(default where its binary exists; about 3x the throughput) or 'python' "
                                        "(Serve's own proxy)"),
    deployment_config: Optional[Path] = typer.Option(
        None, "--deployment-config", help="Serve config whose application 'aetheris' gives each deployment's "
        "options: autoscaling bounds, CPUs, max_ongoing_requests, user_config (default: deployments/serve_config.yaml, "
        "1..2 replicas of Ingress, Features and Simulator; 'none': fixed single replicas)"),
    network_deployments: bool = typer.Option(
        True, "--network-deployments/--networks-in-replica", help="run each neural part's network in its own "
        "deployment (default; batched, scaled and placed on its own) or in the replica that draws the request "
        "(on a CPU-only machine about half the latency of a neural preset)"),
    insecure_ray: bool = typer.Option(False, "--insecure-ray", help="run even when RAY_AUTH_MODE is not 'token' "
                                      "(anyone who can reach Ray's ports could then run commands as this user)"),
) -> None:
    """Serve forecasts over HTTP (POST /v1/forecast, web page at /, OpenAPI at /docs) until Ctrl-C / SIGTERM."""
    import signal
    import threading

    from aetheris_ray.config import load_settings
    from aetheris_ray.distributed.serving import require_ray_auth, start_ray, start_serve, stop_serve, use_serve_env

    require_ray_auth(insecure_ray)
    front = use_serve_env(proxy.value if proxy else None)

    settings = load_settings(store=store, host=host, port=port)
    config = deployment_config_path(deployment_config)

    started_ray = start_ray(address, num_cpus=num_cpus, insecure=insecure_ray)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = start_serve(settings, data=data, store=store, synthetic=synthetic, name=APP_NAME,
                          access_log=access_log, deployment_config=config,
                          extra={"networks": network_deployments})
        via = f"; {'HAProxy' if front == 'haproxy' else 'Serve Python proxy'}" if started_ray else ""
        typer.echo(f"serving on {url}  (web page {url}/, API docs {url}/docs{via}); Ctrl-C to stop", err=False)
        while not stop.wait(0.5):
            pass
        typer.echo("stopping ...")
    finally:
        stop_serve(APP_NAME, shutdown_ray=started_ray)
        for s, h in previous.items():
            signal.signal(s, h)
