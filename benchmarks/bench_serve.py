"""Serve vs in-process latency, and sharded Monte Carlo with 1 vs 2 actors.

    RAY_USAGE_STATS_ENABLED=0 .venv/bin/python benchmarks/bench_serve.py [--quick]

1. In-process ``api.forecast_request`` (1,000 paths x 7 days, engine cache warm) vs the
   served ``POST /v1/forecast`` at concurrency 1, 8 and 32 (aiohttp, request-count
   bounded): p50 / p99 latency, throughput, overhead ratio (served p50 / in-process p50).
   Targets: served p50 < 30 ms and p99 < 150 ms at concurrency 8.  The served rows come
   once per HTTP front, each on a fresh local Ray in a subprocess (Serve reads the choice
   when it starts): HAProxy, the default where its binary exists
   (``aetheris_ray.distributed.serving.SERVE_ENV``), and Serve's Python proxy.  The floor
   rows are a no-op FastAPI ingress on the same Serve (same request body, validated, a tiny
   JSON back): what the front and FastAPI cost before any forecasting.  A second table
   splits the CPU time per request at concurrency 8 between the HTTP front (HAProxy or
   Serve's proxy actor), the ingress replica, the client and the rest of Ray (``/proc``, Linux).
2. Monte Carlo 1,000,000 paths x 14 days: in the caller, and sharded on a pool of 1
   and of 2 simulator actors (paths + ``engine.finish``), best of N.

The client shares the machine's cores with Ray; numbers vary about 2x run to run
(RAY_NOTES.md).  Prints a markdown table.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # never off (RAY_NOTES.md gotcha 5)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray on 127.0.0.1 (serving.loopback_ray_env)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REQ = {"asset": "SYN-BTC", "horizon": 7, "paths": 1000, "seed": 7}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_in_process(n: int) -> dict[str, dict]:
    """Two in-process rows: the Python API (`api.forecast_request`, settings loaded once:
    it cuts the history at the origin and looks up the fitted model on every call), and
    the ingress's own work (prepared state reused, `forecast_prepared`, response JSON)."""
    from aetheris_ray import engine
    from aetheris_ray.api import forecast_request
    from aetheris_ray.config import load_settings
    from aetheris_ray.contract import parse_request
    from aetheris_ray.data import SyntheticSource
    from aetheris_ray.distributed.montecarlo import forecast_prepared

    src = SyntheticSource(seed=0)
    req = parse_request(REQ)
    settings = load_settings()
    prep = engine.prepare(src.history(req.asset), req)

    def timed(fn) -> dict:
        fn()  # warm: the engine's fit and calibration caches
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            fn()
            lat.append((time.perf_counter() - t) * 1e3)
        wall = time.perf_counter() - t0
        return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "rps": n / wall, "n": n}

    return {
        "in-process API (`forecast_request`)": timed(lambda: forecast_request(req, src, settings).to_json()),
        "in-process, prepared state reused (the ingress's work)":
            timed(lambda: forecast_prepared(prep, None).to_response().model_dump_json()),
    }


async def _load(url: str, concurrency: int, n: int, timeout_s: float = 120.0) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    left = n

    async def worker(session):
        nonlocal left, errors
        while left > 0:
            left -= 1
            t = time.perf_counter()
            async with session.post(url, json=REQ) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            lat.append((time.perf_counter() - t) * 1e3)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for _ in range(min(20, n)):  # warm-up
            async with session.post(url, json=REQ) as r:
                await r.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "rps": len(lat) / wall, "n": len(lat), "errors": errors}


def cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and each Ray process, by name (Linux /proc)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d.name) == os.getpid():
            name = "client (this process)"
        elif cmd.split(" ", 1)[0].endswith("/haproxy"):
            name = "haproxy"
        elif cmd.startswith("ray::"):
            name = cmd.split()[0].split(".")[0]  # ray::ProxyActor(.method) -> ray::ProxyActor
        elif "gcs_server" in cmd or "raylet" in cmd:
            name = "Ray core (gcs, raylet)"
        else:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _load_with_cpu(url: str, concurrency: int, n: int) -> dict:
    """`_load`, plus each process's CPU milliseconds per request over the run (where /proc exists)."""
    before = cpu_by_process() if Path("/proc/self/stat").exists() else {}
    r = _load_sync(url, concurrency, n)
    after = cpu_by_process() if before else {}
    r["cpu_ms"] = {k: (after[k] - before.get(k, 0.0)) * 1e3 / max(r["n"], 1) for k in after}
    return r


def _load_sync(url: str, concurrency: int, n: int) -> dict:
    return asyncio.run(_load(url, concurrency, n))


def floor_app():
    """A no-op ingress with the app's Serve settings: validates the body, answers ``{"ok": true}``.

    (This module has no ``from __future__ import annotations``: the class is pickled by
    value, and FastAPI must see the real ``ForecastRequest`` annotation in the replica.)
    """
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from ray import serve

    from aetheris_ray.contract import ForecastRequest
    from deployments.models import NO_ACCESS_LOG

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64, logging_config=NO_ACCESS_LOG)
    @serve.ingress(api)
    class Floor:
        @api.post("/v1/forecast")
        async def forecast(self, req: ForecastRequest):
            return JSONResponse({"ok": True})

    return Floor.bind()


def bench_served(levels: list[tuple[int, int]], floor_levels: list[tuple[int, int]]) -> tuple[dict, dict]:
    from ray import serve

    from deployments.app import AppArgs, build_app

    from aetheris_ray.distributed.serving import serve_logging

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    with tempfile.TemporaryDirectory(prefix="aetheris-bench-") as home:
        serve.run(build_app(AppArgs(synthetic=True, home=home, api_keys=[])), name="aetheris", route_prefix="/")
        url = f"http://127.0.0.1:{port}/v1/forecast"
        out = {c: _load_with_cpu(url, c, n) for c, n in levels}
        serve.delete("aetheris")
    serve.run(floor_app(), name="floor", route_prefix="/floor")
    floor = {c: _load_with_cpu(f"http://127.0.0.1:{port}/floor/v1/forecast", c, n) for c, n in floor_levels}
    serve.delete("floor")
    return out, floor


def bench_montecarlo(repeats: int) -> dict[str, float]:
    import numpy as np

    from aetheris_ray import engine
    from aetheris_ray.contract import parse_request
    from aetheris_ray.data import SyntheticSource
    from aetheris_ray.distributed.montecarlo import SimulatorPool, forecast_prepared

    src = SyntheticSource(seed=0)
    req = parse_request({"asset": "SYN-BTC", "horizon": 14, "paths": 1_000_000, "seed": 1})
    prep = engine.prepare(src.history("SYN-BTC"), req)
    out: dict[str, float] = {}
    ref = None

    def best(fn) -> float:
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fc = fn()
            ts.append(time.perf_counter() - t)
        nonlocal ref
        if ref is None:
            ref = fc.quantiles
        assert np.array_equal(fc.quantiles, ref), "sharded result differs"
        return min(ts)

    out["in the caller (no Ray)"] = best(lambda: forecast_prepared(prep, None))
    for n in (1, 2):
        pool = SimulatorPool(n, num_cpus=0.25)
        pool.ready()
        out[f"{n} actor{'s' if n > 1 else ''}"] = best(lambda: forecast_prepared(prep, pool, local_max_paths=0))
        pool.shutdown()
    return out


FRONT_NAMES = {"haproxy": "HAProxy", "python": "Python proxy"}


def served_in_subprocess(front: str, quick: bool) -> tuple[dict, dict]:
    """`bench_served` on a fresh local Ray whose Serve uses ``front``, in a child process."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--served", front, "--json", f.name] + (["--quick"] if quick else [])
        subprocess.run(cmd, check=True)
        out = json.loads(Path(f.name).read_text())
    as_int = lambda d: {int(k): v for k, v in d.items()}  # noqa: E731 - JSON keys are strings
    return as_int(out["served"]), as_int(out["floor"])


def run_served(front: str, quick: bool, out: str) -> None:
    """The child of `served_in_subprocess`: start Ray with ``front``, measure, write JSON."""
    import ray

    from aetheris_ray.distributed.serving import use_serve_env

    if use_serve_env(front) != front:
        raise SystemExit(f"no {FRONT_NAMES[front]} here")
    n_c1, n_c = (50, 200) if quick else (200, 2000)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        served, floor = bench_served([(1, n_c1), (8, n_c), (32, n_c)], [(1, n_c1), (8, n_c)])
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    Path(out).write_text(json.dumps({"served": served, "floor": floor}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    ap.add_argument("--served", choices=sorted(FRONT_NAMES), help=argparse.SUPPRESS)  # child process
    ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.served:
        return run_served(a.served, a.quick, a.json)
    import ray

    from aetheris_ray.distributed.serving import haproxy_binary

    inproc = bench_in_process(50 if a.quick else 200)
    fronts = (["haproxy"] if haproxy_binary() else []) + ["python"]
    results = {front: served_in_subprocess(front, a.quick) for front in fronts}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        mc = bench_montecarlo(2 if a.quick else 3)
    finally:
        ray.shutdown()

    print("\n## Forecast 1,000 paths x 7 days (SYN-BTC)\n")
    same = inproc["in-process, prepared state reused (the ingress's work)"]["p50"]
    print("| route | HTTP front | concurrency | requests | p50 ms | p99 ms | req/s | p50 / in-process (same work) p50 |")
    print("|---|---|---|---|---|---|---|---|")
    for route, r in inproc.items():
        print(f"| {route} | - | 1 | {r['n']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | "
              f"{r['p50'] / same:.1f} |")
    for front, (served, floor) in results.items():
        for route, rows in (("served", served), ("served no-op (floor)", floor)):
            for c, r in rows.items():
                err = f" ({r['errors']} errors)" if r["errors"] else ""
                print(f"| {route} | {FRONT_NAMES[front]} | {c} | {r['n']}{err} | {r['p50']:.2f} | {r['p99']:.2f} | "
                      f"{r['rps']:.0f} | {r['p50'] / same:.1f} |")
    print()
    for front, (served, _) in results.items():
        c8 = served[8]
        ok = c8["p50"] < 30 and c8["p99"] < 150
        default = " (the default)" if front == fronts[0] else ""
        print(f"target at concurrency 8 (p50 < 30 ms, p99 < 150 ms), {FRONT_NAMES[front]}{default}: "
              f"{'met' if ok else 'NOT met'} (p50 {c8['p50']:.1f} ms, p99 {c8['p99']:.1f} ms)")
    if any(served[8].get("cpu_ms") for served, _ in results.values()):
        print("\n## CPU per request at concurrency 8 (ms, from /proc; 2 cores = 2,000 ms per second)\n")
        cols = ("front process", "ingress replica", "client", "rest of Ray", "total")

        def group(name: str) -> str:
            if name in ("ray::ProxyActor", "haproxy"):
                return cols[0]
            if name in ("ray::ServeReplica:aetheris:Ingress", "ray::ServeReplica:floor:Floor"):
                return cols[1]
            return cols[2] if name.startswith("client") else cols[3]

        print("| route | HTTP front | " + " | ".join(cols) + " | req/s |")
        print("|---|---|" + "---|" * (len(cols) + 1))
        for front, (served, floor) in results.items():
            for route, r in (("served forecast", served[8]), ("served no-op (floor)", floor[8])):
                g = dict.fromkeys(cols, 0.0)
                for k, ms in r["cpu_ms"].items():
                    g[group(k)] += ms
                    g["total"] += ms
                print(f"| {route} | {FRONT_NAMES[front]} | " + " | ".join(f"{g[c]:.2f}" for c in cols)
                      + f" | {r['rps']:.0f} |")
    print("\n## Monte Carlo 1,000,000 paths x 14 days, paths + exact quantiles (best of runs)\n")
    print("| where | seconds | speed-up vs caller |")
    print("|---|---|---|")
    base = mc["in the caller (no Ray)"]
    for k, v in mc.items():
        print(f"| {k} | {v:.2f} | {base / v:.2f}x |")


if __name__ == "__main__":
    main()
