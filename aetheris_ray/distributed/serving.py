"""Start and stop Ray and the Serve app (used by ``aetheris serve``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray import serve

from aetheris_ray.config import Settings


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray at ``address``, else to a running local Ray, else start one here.

    ``address="local"`` always starts a new local Ray, even when one is running.
    Returns whether this call started a new Ray (and so should shut it down).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return True
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    try:
        ray.init(address="auto", log_to_driver=False)
        return False
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return True


def start_serve(settings: Settings, *, data: Path | str | None = None, store: Path | str | None = None,
                synthetic: bool = False, name: str = "aetheris", extra: dict[str, Any] | None = None) -> str:
    """Start Serve's HTTP proxy on ``settings.host:port`` and run the app; returns its URL when ready."""
    from deployments.app import AppArgs, build_app

    serve.start(http_options={"host": settings.host, "port": settings.port})
    args = AppArgs(data=str(data) if data else None, store=str(store) if store else None, synthetic=synthetic,
                   home=str(settings.home), **(extra or {}))
    serve.run(build_app(args), name=name, route_prefix="/", blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    return f"http://{host}:{settings.port}"


def stop_serve(name: str = "aetheris", *, shutdown_ray: bool = False) -> None:
    """Delete the app; shut Serve and Ray down when this process started Ray."""
    try:
        if shutdown_ray:
            serve.shutdown()
        else:
            serve.delete(name)
    finally:
        if shutdown_ray:
            ray.shutdown()
