"""One local Ray and one Serve app for the whole integration session (RAY_NOTES.md settings).

The app serves the synthetic market with one API key; tests reuse it.  Ray is
started once (``num_cpus=2``, no dashboard, no driver logs) and shut down at the end.
It runs as ``aetheris serve`` runs it: Ray's token authentication on, single-node on
127.0.0.1 (`aetheris_ray.distributed.serving.loopback_ray_env`), HAProxy hardened.
"""

from __future__ import annotations

import os

# Set before anything imports ray (Ray reads them at import); `ray_session` re-applies them
# in case another test module imported ray first.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import socket  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

API_KEY = "test-key-0123456789"
APP_NAME = "aetheris"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from aetheris_ray.distributed.serving import loopback_ray_env, require_ray_auth, use_serve_env

    require_ray_auth()
    loopback_ray_env()
    use_serve_env()  # the Ray environment `aetheris serve` uses (HAProxy -> ingress)
    # address="local": a new Ray even where another (or a stale bootstrap file) is on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@dataclass
class Served:
    url: str
    key: str
    home: Path
    args: object

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def run_app(self) -> None:
        from ray import serve

        from deployments.app import build_app

        from aetheris_ray.distributed.serving import wait_healthy

        serve.run(build_app(self.args), name=APP_NAME, route_prefix="/", blocking=False)
        wait_healthy(self.url, 60.0)


@pytest.fixture(scope="session")
def served(ray_session, tmp_path_factory) -> Served:
    """The Serve app on 127.0.0.1:<free port>, synthetic market, one API key, its own AETHERIS_HOME."""
    from ray import serve

    from deployments.app import AppArgs

    from aetheris_ray.distributed.serving import serve_logging

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    home = tmp_path_factory.mktemp("served_home")
    # reserve_cpus=False: the app stays up for the whole session and must not starve the
    # Tune / Data tests of whole CPUs (RAY_NOTES.md gotcha 3)
    args = AppArgs(synthetic=True, home=str(home), api_keys=[API_KEY], reserve_cpus=False)
    s = Served(url=f"http://127.0.0.1:{port}", key=API_KEY, home=home, args=args)
    s.run_app()
    return s


@pytest.fixture(scope="session")
def synthetic_source():
    from aetheris_ray.data.synthetic import SyntheticSource

    return SyntheticSource(seed=0)


def pytest_configure(config):
    # Ray Serve's own config models use pydantic-v1-style Field extras; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore::pydantic.warnings.PydanticDeprecatedSince20")


_REFERENCE = """
import json, sys
from aetheris_ray.api import forecast_request
from aetheris_ray.contract import parse_request
from aetheris_ray.data import SyntheticSource
src = SyntheticSource(seed=0)
out = [forecast_request(parse_request(b), src).to_response().model_dump(mode="json") for b in json.load(sys.stdin)]
sys.stdout.write(json.dumps(out))
"""


@pytest.fixture
def served_neural(served) -> Served:
    """`served` with every neural part that runs a network at forecast time registered in its home
    (untrained, seeded weights): the sota and jump_sde presets then use no fallback."""
    pytest.importorskip("torch")
    from aetheris_ray.components import spec_class
    from aetheris_ray.registry import Registry

    reg = Registry(served.home / "registry")
    for kind, name in (("volatility", "rough_vol"), ("residuals", "fm_gp"), ("trend", "mamba"), ("paths", "jump_sde")):
        if not reg.list_models(name):
            reg.register(spec_class(kind, name).fitted_cls.from_params(seed=0))
    return served


#: Environment variables of the session's own Ray, Serve and HAProxy that an `aetheris serve`
#: subprocess must not inherit (it starts its own local Ray, with the defaults).
OWN_RAY_ENV = ("RAY_ADDRESS", "RAY_SERVE_", "AETHERIS_HAPROXY", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS")


@pytest.fixture(scope="session")
def aetheris_serve():
    """``with aetheris_serve(args, env) as (proc, url, lines)``: ``aetheris serve ARGS`` in a subprocess with
    its own local Ray (the session's Ray, Serve and HAProxy settings removed, ``env`` added), once it printed
    its URL; SIGTERM (then kill after 60 s) on exit.  ``lines``: its output up to the URL."""
    import contextlib
    import re
    import signal
    import subprocess
    import sys

    @contextlib.contextmanager
    def run(args: list[str], env: dict[str, str], timeout_s: float = 150.0):
        full = {k: v for k, v in os.environ.items() if not k.startswith(OWN_RAY_ENV)}
        full.update(RAY_USAGE_STATS_ENABLED="0", **env)
        exe = Path(sys.executable).with_name("aetheris")
        proc = subprocess.Popen([str(exe), "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=full)
        try:
            lines, url = [], None
            deadline = time.monotonic() + timeout_s
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                line = proc.stdout.readline()
                lines.append(line)
                m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
                url = m.group(1) if m else None
            assert url, "".join(lines)[-3000:]
            yield proc, url, lines
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()

    return run


@pytest.fixture(scope="session")
def in_process(tmp_path_factory):
    """``in_process(source, body_or_bodies[, home_dir])``: the in-process answers (``api.forecast_request``, no Ray).

    ``home_dir`` is the AETHERIS_HOME to read (default: a fresh one; the served app's
    home makes the in-process answer see the outcomes posted to the service).

    They are computed in a plain subprocess with BLAS multi-threaded (at least two
    OpenBLAS threads), unlike Ray's workers (``OMP_NUM_THREADS=1``): the engine's fits
    change with the BLAS thread count, and ``forecast_request`` computes under one
    thread (`api.one_blas_thread`) so that the caller's setting does not matter; this
    checks it.  Only the synthetic market (seed 0) is supported.
    """
    import json
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("in_process_home")

    def run(source, body, home_dir=None):
        assert "SyntheticSource(seed=0" in repr(source), "the reference runs on SyntheticSource(seed=0) only"
        bodies = body if isinstance(body, list) else [body]
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env.update(OPENBLAS_NUM_THREADS=str(max(2, os.cpu_count() or 1)), AETHERIS_HOME=str(home_dir or home))
        r = subprocess.run([sys.executable, "-c", _REFERENCE], input=json.dumps(bodies, default=str),
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout)
        return out if isinstance(body, list) else out[0]

    return run
