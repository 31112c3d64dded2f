"""Autoscaling under a load ramp: replicas per deployment against time, the app run as ``aetheris serve`` runs it.

    .venv/bin/python benchmarks/autoscale_ramp.py [--nodes 1|3|both] [--step-s 15] [--quick]
        [--data ../shared/data | --synthetic] [--config deployments/serve_config.yaml] [--no-baseline]
        [--proxy haproxy|python]
        [--markdown FILE] [--csv FILE]

For each topology (``1``: one local Ray of 2 CPUs, started by `serving.start_ray` as
``aetheris serve --address local`` starts it; ``3``: a simulated cluster on this machine,
``ray.cluster_utils.Cluster`` with a head of 0 CPUs and two worker nodes of 1 CPU each,
joined by `serving.start_ray` as ``aetheris serve --address ADDR`` joins one), the app is
started by `serving.start_serve` with the Serve config's deployment options (autoscaling
bounds; ``aetheris serve``'s default), HTTP on 127.0.0.1:<free port> behind HAProxy where
its binary exists.  An aiohttp client (closed loop, on the same cores) then drives
``POST /v1/forecast`` (BTC-USD from ``--data``, else SYN-BTC; 1,000 paths x 7 days, a new
seed per request) at concurrency 1, 2, 4, 8, 16, 32, 16, 8, 4, 2, 1 for ``--step-s`` each,
then stops and waits (up to the longest ``downscale_delay_s`` + 60 s) for every deployment
to return to its minimum.  ``serve.status()`` is polled every 0.5 s.

The baseline, on the same Ray (a fresh Serve) in the same run just before: the same ramp against the app
with fixed single replicas (``aetheris serve --deployment-config none``, what ``aetheris
serve`` ran before it read the Serve config).  Each step prints the autoscaled req/s next
to it as a ratio.

Prints per topology: one row per step (time, concurrency, RUNNING replicas per
deployment at the step's end (``a-b``: the range seen during the step), requests, failed
requests, p50 / p99 ms, req/s, baseline req/s and the ratio), then the downscale phase,
then every change of replica states with its time.  The client shares the two cores with
Ray; numbers vary about 2x run to run (RAY_NOTES.md).
"""

import argparse
import asyncio
import csv
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_serve, run as a script or imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # deployments

from bench_serve import free_port, pct  # also sets Ray's auth and usage-stats environment

RAMP = (1, 2, 4, 8, 16, 32, 16, 8, 4, 2, 1)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KEY = "autoscale-ramp-key-0123456789"


@dataclass
class Step:
    """One load step: its concurrency, start time and what the client saw."""

    concurrency: int
    t0: float
    t1: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies) / max(self.t1 - self.t0, 1e-9)


class ReplicaMonitor:
    """Polls ``serve.status()`` in a thread: (time, {deployment: {state: count}}) samples."""

    def __init__(self, app: str, period_s: float = 0.5) -> None:
        self.app, self.period_s = app, period_s
        self.samples: list[tuple[float, dict[str, dict[str, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from ray import serve

        while not self._stop.is_set():
            try:
                deps = serve.status().applications[self.app].deployments
                states = {name: {str(getattr(s, "value", s)): n for s, n in d.replica_states.items() if n}
                          for name, d in deps.items()}
                self.samples.append((time.monotonic(), states))
            except Exception as e:  # noqa: BLE001 - a status call can fail while the controller is busy; keep polling
                self.samples.append((time.monotonic(), {"error": {type(e).__name__: 1}}))
            self._stop.wait(self.period_s)

    def start(self) -> "ReplicaMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def running(self, t0: float, t1: float) -> dict[str, tuple[int, int, int]]:
        """RUNNING replicas per deployment between t0 and t1: (min, max, last)."""
        out: dict[str, list[int]] = {}
        for t, states in self.samples:
            if t0 <= t <= t1:
                for name, st in states.items():
                    out.setdefault(name, []).append(st.get("RUNNING", 0))
        return {k: (min(v), max(v), v[-1]) for k, v in out.items() if k != "error"}

    def changes(self) -> list[tuple[float, str, dict[str, int]]]:
        """(time, deployment, states) each time a deployment's replica states changed."""
        last: dict[str, dict[str, int]] = {}
        out = []
        for t, states in self.samples:
            for name, st in states.items():
                if last.get(name) != st:
                    out.append((t, name, st))
                    last[name] = st
        return out


async def ramp(url: str, body: dict, levels: tuple[int, ...], step_s: float, headers: dict[str, str]) -> list[Step]:
    """Closed-loop load: ``levels[i]`` clients for ``step_s`` each; a new seed per request."""
    import aiohttp

    seed = iter(range(10**9))
    steps: list[Step] = []

    async def client(session, step: Step, deadline: float) -> None:
        while time.monotonic() < deadline:
            t = time.monotonic()
            try:
                async with session.post(url, json={**body, "seed": next(seed)}, headers=headers) as r:
                    await r.read()
                    ok, why = r.status == 200, f"HTTP {r.status}"
            except (TimeoutError, aiohttp.ClientError) as e:
                ok, why = False, type(e).__name__
            step.latencies.append((time.monotonic() - t) * 1e3)
            if not ok:
                step.failed += 1
                step.errors[why] = step.errors.get(why, 0) + 1

    conn = aiohttp.TCPConnector(limit=max(levels))
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for c in levels:
            step = Step(c, time.monotonic())
            await asyncio.gather(*(client(session, step, step.t0 + step_s) for _ in range(c)))
            step.t1 = time.monotonic()
            steps.append(step)
    return steps


def at_min(monitor: ReplicaMonitor, minimum: dict[str, int]) -> bool:
    """Whether the last sample shows every deployment of the app at its minimum (1 when not in the config), RUNNING only."""
    if not monitor.samples or "error" in monitor.samples[-1][1]:
        return False
    return all(st == {"RUNNING": minimum.get(name, 1)} for name, st in monitor.samples[-1][1].items())


def bounds(config: Path | None) -> tuple[dict[str, int], float]:
    """Each deployment's minimum replicas in ``config``, and its longest ``downscale_delay_s`` (Serve's default 600)."""
    from deployments.app import deployment_options

    if config is None:
        return {}, 0.0
    minimum, delay = {}, 0.0
    for name, opts in deployment_options(config).items():
        auto = opts.get("autoscaling_config")
        minimum[name] = auto.get("min_replicas", 1) if auto else opts.get("num_replicas", 1)
        delay = max(delay, auto.get("downscale_delay_s", 600.0)) if auto else delay
    return minimum, delay


def run_app(settings, source: dict, config: Path | None, levels, step_s: float, body: dict,
            downscale: bool) -> dict:
    """Start the app as ``aetheris serve`` does (`serving.start_serve`), ramp the load, wait for the downscale."""
    from ray import serve

    from aetheris_ray.distributed.serving import start_serve

    url = start_serve(settings, name="aetheris", deployment_config=config, **source)  # returns once healthy
    monitor = ReplicaMonitor("aetheris").start()
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        t_start = time.monotonic()
        steps = asyncio.run(ramp(f"{url}/v1/forecast", body, levels, step_s, headers))
        down: list[tuple[float, dict]] = []
        minimum, delay = bounds(config)
        if downscale:
            deadline = time.monotonic() + delay + 60
            t_next = time.monotonic()
            while time.monotonic() < deadline:
                time.sleep(0.5)
                if time.monotonic() >= t_next:
                    down.append((time.monotonic(), monitor.running(t_next - 5, time.monotonic())))
                    t_next += 5
                if at_min(monitor, minimum):
                    if time.monotonic() - down[-1][0] > 1:
                        down.append((time.monotonic(), monitor.running(time.monotonic() - 1, time.monotonic())))
                    break
        reached_min = at_min(monitor, minimum) if downscale else None
    finally:
        monitor.stop()
        serve.shutdown()  # each app on a fresh Serve (and HTTP front), as each `aetheris serve` starts one
    return {"t_start": t_start, "steps": steps, "monitor": monitor, "down": down, "reached_min": reached_min}


def start_topology(nodes: int, proxy: str | None = None):
    """Ray for a topology, started the way ``aetheris serve`` starts or joins one; returns a stop function."""
    import ray

    from aetheris_ray.distributed.serving import HAPROXY_PORTS, require_ray_auth, start_ray, use_serve_env

    require_ray_auth()
    for name in HAPROXY_PORTS:  # HAProxy's side ports: free ones (another Serve on this host may hold the defaults)
        os.environ.setdefault(name, str(free_port()))
    front = use_serve_env(proxy)  # before any Ray process starts: Serve reads it at start
    if proxy and front != proxy:
        raise SystemExit(f"no {proxy} here")
    if nodes == 1:
        start_ray("local", num_cpus=2)
        return ray.shutdown
    from ray.cluster_utils import Cluster

    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a multi-node Ray (bench_serve sets it for one node)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    start_ray(cluster.address)
    cluster.wait_for_nodes()

    def stop() -> None:
        ray.shutdown()
        cluster.shutdown()

    return stop


def fmt_replicas(r: dict[str, tuple[int, int, int]], names: list[str]) -> list[str]:
    out = []
    for n in names:
        lo, hi, last = r.get(n, (0, 0, 0))
        out.append(str(last) if lo == hi else f"{lo}-{hi}")
    return out


def topology(nodes: int, a) -> list[str]:
    """Run the baseline and the autoscaled ramp on one topology; returns its markdown lines."""
    from aetheris_ray.config import load_settings
    from deployments.app import deployment_options

    stop = start_topology(nodes, a.proxy)
    lines: list[str] = []
    try:
        import ray

        cpus = ray.cluster_resources().get("CPU", 0)
        home = tempfile.mkdtemp(prefix="aetheris-ramp-")
        os.environ["AETHERIS_API_KEYS"] = f'["{KEY}"]'
        settings = load_settings(home=home, host="127.0.0.1", port=free_port())
        source = {"data": a.data} if a.data else {"synthetic": True}
        body = {"asset": "BTC-USD" if a.data else "SYN-BTC", "horizon": 7, "paths": 1000}
        levels = (1, 8, 32, 8, 1) if a.quick else RAMP
        base = run_app(settings, source, None, levels, a.step_s, body, downscale=False) if a.baseline else None
        auto = run_app(settings, source, a.config, levels, a.step_s, body, downscale=True)
    finally:
        stop()
    seen = {name for _, states in auto["monitor"].samples for name in states if name != "error"}
    names = [n for n in deployment_options(a.config) if n in seen] + sorted(seen - set(deployment_options(a.config)))
    where = "1 node" if nodes == 1 else "3 nodes (head 0 CPUs + 2 workers x 1 CPU)"
    front = "HAProxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve's Python proxy"
    lines.append(f"\n### {where}: {cpus:g} CPUs, {front}, {body['asset']} {body['paths']} paths x "
                 f"{body['horizon']} days, {a.step_s:g} s per step\n")
    head = ["t s", "concurrency", *[f"{n} replicas" for n in names], "requests", "failed", "p50 ms", "p99 ms",
            "req/s"] + (["fixed 1 replica req/s", "req/s / fixed"] if base else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for i, s in enumerate(auto["steps"]):
        reps = fmt_replicas(auto["monitor"].running(s.t0, s.t1), names)
        lat = s.latencies or [float("nan")]
        row = [f"{s.t0 - auto['t_start']:.0f}", str(s.concurrency), *reps, str(len(s.latencies)), str(s.failed),
               f"{pct(lat, 0.5):.1f}", f"{pct(lat, 0.99):.1f}", f"{s.rps:.0f}"]
        if base:
            b = base["steps"][i]
            row += [f"{b.rps:.0f}", f"{s.rps / max(b.rps, 1e-9):.2f}"]
        rows.append(row)
    for t, reps in auto["down"]:
        row = [f"{t - auto['t_start']:.0f}", "0", *fmt_replicas(reps, names), "0", "0", "-", "-", "-"]
        rows.append(row + (["-", "-"] if base else []))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    failed = sum(s.failed for s in auto["steps"])
    total = sum(len(s.latencies) for s in auto["steps"])
    errors: dict[str, int] = {}
    for s in auto["steps"]:
        for k, v in s.errors.items():
            errors[k] = errors.get(k, 0) + v
    lines.append(f"\nautoscaled: {total} requests, {failed} failed{' ' + str(errors) if errors else ''}; "
                 f"back to the minimum replicas after the load: "
                 f"{'yes' if auto['reached_min'] else 'NO'}")
    if base:
        bf = sum(s.failed for s in base["steps"])
        lines.append(f"baseline (fixed single replicas): {sum(len(s.latencies) for s in base['steps'])} requests, "
                     f"{bf} failed")
    lines.append("\nreplica state changes (s from the ramp's start):\n")
    for t, name, st in auto["monitor"].changes():
        lines.append(f"- {t - auto['t_start']:.1f} s {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(st.items())))
    if a.csv:
        new = not Path(a.csv).exists()
        with open(a.csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["nodes", *head])
            w.writerows([[nodes, *r] for r in rows])
    return lines


def main() -> None:
    from deployments.app import SERVE_CONFIG

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", choices=("1", "3", "both"), default="both")
    ap.add_argument("--step-s", type=float, help="seconds per load step (default 15; 5 with --quick)")
    ap.add_argument("--quick", action="store_true", help="ramp 1, 8, 32, 8, 1 (smoke run; with --step-s 5)")
    ap.add_argument("--data", default=str(DATA) if DATA.is_dir() else None, help="market data folder "
                    "(default ../shared/data where it exists; BTC-USD is requested)")
    ap.add_argument("--synthetic", action="store_true", help="the synthetic market (SYN-BTC) even where data exists")
    ap.add_argument("--config", type=Path, default=SERVE_CONFIG, help="Serve config of the autoscaled run")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the fixed single-replica ramp")
    ap.add_argument("--proxy", choices=("haproxy", "python"), help="HTTP front (default: aetheris serve's, HAProxy "
                    "where its binary exists)")
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--csv", help="also append the rows to this CSV file")
    a = ap.parse_args()
    if a.synthetic:
        a.data = None
    if a.step_s is None:
        a.step_s = 5.0 if a.quick else 15.0
    load = lambda: "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    out = [f"## Autoscaling under a load ramp (`{' '.join(['benchmarks/autoscale_ramp.py', *sys.argv[1:]])}`)",
           f"\nload average before: {load()}"]
    print("\n".join(out), flush=True)
    for nodes in ((1, 3) if a.nodes == "both" else (int(a.nodes),)):
        lines = topology(nodes, a)
        print("\n".join(lines), flush=True)
        out += lines
    out.append(f"\nload average after: {load()}")
    print(out[-1])
    if a.markdown:
        Path(a.markdown).write_text("\n".join(out) + "\n")

if __name__ == "__main__":
    main()
