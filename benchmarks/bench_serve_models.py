"""Served neural presets: each neural part's network in its own deployment vs in the calling replica.

    AETHERIS_HOME=/path/with/registry .venv/bin/python benchmarks/bench_serve_models.py \
        [--models baseline,sota,jump_sde] [--paths 1000,10000] [--horizon 14] [--concurrency 1,8] \
        [--requests 40] [--data ../shared/data | --synthetic] [--asset BTC-USD] [--thresholds 90000,110000]

Starts a local Ray (2 CPUs, `aetheris serve`'s Serve environment: HAProxy in front where
its binary exists) and the Serve app twice, one after the other, on the same
registry (``$AETHERIS_HOME``, where ``aetheris tune`` put the artefacts): ``networks``
(the default graph: RoughVolNet, FlowMatchingNet, MambaNet and JumpSdeNet run the
networks, batching concurrent calls) and ``in replica`` (``AppArgs(networks=False)``:
the replica that draws the request runs them).  For each model, path count and
concurrency: p50 / p99 latency and requests per second of ``POST /v1/forecast`` (every
request its own seed, keep-alive aiohttp client on the same cores), and the ratio of
p50 to the baseline engine's in the same app.  Then each network deployment's calls,
batches and mean batch size.  A model whose artefact is missing falls back part by part
and the row says so.  No timing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # never off (RAY_NOTES.md gotcha 5)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def load(url: str, body: dict, concurrency: int, n: int) -> dict:
    """``n`` requests (seeds 1000..) at ``concurrency``, after 2 warm-ups; latencies in ms."""
    import aiohttp

    lat: list[float] = []
    errors: list[str] = []
    seeds = iter(range(1000, 1000 + n))

    async def worker(session) -> None:
        for seed in seeds:
            t = time.perf_counter()
            async with session.post(url, json={**body, "seed": seed}) as r:
                text = await r.text()
                if r.status != 200:
                    errors.append(f"{r.status} {text[:200]}")
            lat.append((time.perf_counter() - t) * 1e3)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as session:
        for seed in (1, 2):
            async with session.post(url, json={**body, "seed": seed}) as r:
                first = await r.json()
                if r.status != 200:
                    raise SystemExit(f"{body}: HTTP {r.status}: {first}")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    fallbacks = ",".join(f["used"] for f in first["metadata"].get("fallbacks", [])) or "-"
    return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "rps": len(lat) / wall, "errors": len(errors),
            "fallbacks": fallbacks}


def run_app(args, networks: bool) -> tuple[list[dict], dict]:
    from ray import serve

    from aetheris_ray.distributed.serving import serve_logging, wait_healthy
    from deployments.app import AppArgs, build_app
    from deployments.models import NETWORK_DEPLOYMENTS

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    app_args = AppArgs(data=None if args.synthetic else str(args.data), synthetic=args.synthetic, api_keys=[],
                       home=os.environ.get("AETHERIS_HOME"), networks=networks)
    serve.run(build_app(app_args), name="aetheris", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}/v1/forecast"
    wait_healthy(f"http://127.0.0.1:{port}", 180.0)
    rows = []
    for paths in args.paths:
        for model in args.models:
            body = {"asset": args.asset, "horizon": args.horizon, "paths": paths, "model": model}
            if args.thresholds:
                body["thresholds"] = args.thresholds
            for c in args.concurrency:
                r = asyncio.run(load(url, body, c, args.requests))
                rows.append({"app": "networks" if networks else "in replica", "model": model, "paths": paths,
                             "concurrency": c, **r})
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    stats = {}
    if networks:
        for d in NETWORK_DEPLOYMENTS.values():
            stats[d] = serve.get_deployment_handle(d, app_name="aetheris").stats.remote().result()
    serve.delete("aetheris")
    serve.shutdown()
    return rows, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="baseline,sota,jump_sde")
    ap.add_argument("--paths", default="1000,10000")
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--synthetic", action="store_true", help="the synthetic market even if --data exists")
    ap.add_argument("--asset", default=None, help="default BTC-USD (SYN-BTC with --synthetic)")
    ap.add_argument("--thresholds", default="", help="prices to ask P(below / above) for in every request")
    args = ap.parse_args()
    args.thresholds = [float(x) for x in args.thresholds.split(",") if x]
    args.models = [m for m in args.models.split(",") if m]
    args.paths = [int(p) for p in args.paths.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.synthetic = args.synthetic or not (args.data / "daily").is_dir()
    args.asset = args.asset or ("SYN-BTC" if args.synthetic else "BTC-USD")
    if "AETHERIS_HOME" not in os.environ:
        sys.exit("set AETHERIS_HOME to the home whose registry holds the trained artefacts (aetheris tune)")

    import ray

    from aetheris_ray.distributed.serving import use_serve_env

    front = use_serve_env()  # the Ray environment `aetheris serve` uses (HAProxy where its binary exists)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows, stats = [], {}
        for networks in (True, False):
            r, s = run_app(args, networks)
            rows += r
            stats.update(s)
    finally:
        ray.shutdown()

    base = {(r["app"], r["paths"], r["concurrency"]): r["p50"] for r in rows if r["model"] == "baseline"}
    asked = f"; thresholds {', '.join(f'{x:,.0f}' for x in args.thresholds)}" if args.thresholds else ""
    print(f"\n{args.asset}, {args.horizon} days, {args.requests} requests per row, each its own seed{asked}; HTTP front "
          f"{front}; load {os.getloadavg()[0]:.1f}\n")
    print("| app | model | paths | concurrency | p50 ms | p99 ms | req/s | p50 / baseline | errors | fallbacks |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = r["p50"] / base[(r["app"], r["paths"], r["concurrency"])] if base else float("nan")
        print(f"| {r['app']} | {r['model']} | {r['paths']:,} | {r['concurrency']} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['rps']:.1f} | {ratio:.2f} | {r['errors']} | {r['fallbacks']} |")
    print("\n| deployment | calls | batches | mean batch | largest batch |")
    print("|---|---:|---:|---:|---:|")
    for d, s in stats.items():
        mean = s["calls"] / s["batches"] if s["batches"] else 0.0
        print(f"| {d} | {s['calls']} | {s['batches']} | {mean:.2f} | {s['largest_batch']} |")


if __name__ == "__main__":
    main()
