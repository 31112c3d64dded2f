"""Start and stop Ray and the Serve app (used by ``aetheris serve``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray import serve

from aetheris_ray.config import Settings

#: Environment of the Ray processes Serve runs in, read by each Serve process when it starts:
#:
#: * ``RAY_SERVE_PROXY_USE_GRPC=1``: the HTTP proxy hands each request to the ingress
#:   replica by value over gRPC instead of a Ray actor call.
#: * ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``: a replica runs its handlers on its
#:   own event loop instead of handing each request to a second thread's loop.  The
#:   ingress computes at most about a millisecond inline (`deployments.ingress.INLINE_MAX_CELLS`)
#:   and sends anything larger to a thread or the Simulator, so the loop never stalls.
#:
#: On the 2-core box, a served 1,000 x 7 forecast at concurrency 8 went from 172 to about
#: 245 req/s with the first and used about 1 ms less CPU per request with the second
#: (docs/serving.md).  `start_ray` sets them before starting a local Ray;
#: ``cluster/start_local.sh``, the cluster launcher YAML and the KubeRay manifests
#: export them (tests/unit/test_cluster_manifests.py checks).
SERVE_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def use_serve_env() -> None:
    """Put `SERVE_ENV` (and usage stats off) into this process's environment, keeping values already set."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for k, v in SERVE_ENV.items():
        os.environ.setdefault(k, v)


def serve_logging(access_log: bool = False) -> dict[str, Any]:
    """Serve's global logging config: the proxy's per-request access log costs about
    0.6 ms of proxy CPU per request, so it is off unless asked for."""
    return {"enable_access_log": bool(access_log)}


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray at ``address``, else to a running local Ray, else start one here.

    ``address="local"`` always starts a new local Ray, even when one is running.
    Returns whether this call started a new Ray (and so should shut it down).
    """
    use_serve_env()
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
                synthetic: bool = False, name: str = "aetheris", extra: dict[str, Any] | None = None,
                access_log: bool = False) -> str:
    """Start Serve's HTTP proxy on ``settings.host:port`` and run the app; returns its URL when ready."""
    from deployments.app import AppArgs, build_app

    serve.start(http_options={"host": settings.host, "port": settings.port}, logging_config=serve_logging(access_log))
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
