"""Two source trees, one run: bench_forecast.py and bench_backtest.py on each, as ratios after/before.

    .venv/bin/python benchmarks/bench_versions.py --before REF_OR_TREE [--after REF_OR_TREE]
        [--rounds 2] [--data ../shared/data] [--benches forecast,backtest] [--repeats 20]

``--before`` is a git ref (a detached worktree of it is added in a temporary folder
and removed at the end) or the path of an existing checkout (used as it is, kept).
``--after`` is the same, by default this repository's working tree as it is
(uncommitted changes included).  For each tree, the tree's OWN copy of
``benchmarks/bench_forecast.py`` and ``benchmarks/bench_backtest.py`` runs as a
subprocess with ``cwd=<tree>``, ``PYTHONPATH=<tree>`` and this script's Python, so
the tree's own ``aetheris_ray`` is imported rather than the editable install (each
subprocess prints ``aetheris_ray.__file__`` first, and the run stops if it is not
under the tree).  The trees are interleaved (before, after, before, after for
``--rounds 2``) so load drift on a shared machine hits both, and each row keeps
its best value across rounds: the minimum median ms, the maximum forecasts/s.
Ratios within a tree (``x floor``, ``vs ewma``) are recomputed from those bests.

Rows:

* bench_forecast: median ms of ``numpy floor``, ``engine.forecast`` and
  ``api.forecast (store)`` (10,000 paths x 14 days, BTC-USD), and the last two
  as multiples of the floor;
* bench_backtest: forecasts/s of each model (the engine and the baselines) on
  BTC, ETH, SOL, DOGE over 2024, ``predict`` (the model alone) and ``harness``
  (``backtest(..., workers=1)``), and the engine's f/s as a ratio to EWMA-Normal
  in the same tree.

The last column is after/before: above 1 is slower for ms rows and multiples of a
reference, faster for f/s rows.  The load average before and after is printed
(timings on a shared 2-core machine vary by about 2x).  No timing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs the tree's benchmark script in this process after printing where aetheris_ray comes from.
RUNNER = (
    "import runpy, sys, aetheris_ray\n"
    "print('aetheris_ray from', aetheris_ray.__file__, flush=True)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
NUM = r"(-?[\d,]+(?:\.\d+)?)"
FORECAST_ROWS = (("numpy floor", "numpy floor"), ("engine.forecast", "engine.forecast"),
                 ("api.forecast", "api.forecast (store)"))


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class Tree:
    """A source tree to benchmark: an existing checkout, or a temporary detached worktree of a ref."""

    def __init__(self, label: str, spec: str | None, tmp_root: Path):
        self.label = label
        self.created = False
        if spec is None:
            self.path = REPO
        elif Path(spec).is_dir():
            self.path = Path(spec).resolve()
        else:
            sha = git("rev-parse", "--verify", f"{spec}^{{commit}}")
            self.path = tmp_root / f"{label}-{sha[:12]}"
            git("worktree", "add", "--detach", str(self.path), sha)
            self.created = True
        self.commit = git("rev-parse", "--short", "HEAD", cwd=self.path)
        dirty = git("status", "--porcelain", "--untracked-files=no", cwd=self.path)
        self.describe = f"{self.path} at {self.commit}" + (" + uncommitted changes" if dirty else "")

    def remove(self) -> None:
        if self.created:
            git("worktree", "remove", "--force", str(self.path))


def run_bench(tree: Tree, script: str, args: list[str], timeout: float) -> tuple[str, float]:
    """Run ``tree``'s copy of ``benchmarks/<script>``; returns its stdout and wall seconds."""
    path = tree.path / "benchmarks" / script
    if not path.is_file():
        sys.exit(f"{tree.label}: no {path}")
    env = dict(os.environ, PYTHONPATH=str(tree.path))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RUNNER, str(path), *args], cwd=tree.path, env=env,
                       capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{tree.label}: {script} failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
    first = p.stdout.splitlines()[0] if p.stdout else ""
    imported = Path(first.removeprefix("aetheris_ray from ").strip())
    if not first.startswith("aetheris_ray from ") or not imported.is_relative_to(tree.path):
        sys.exit(f"{tree.label}: {script} imported aetheris_ray from {imported}, not from {tree.path}")
    return p.stdout, wall


def num(s: str) -> float:
    return float(s.replace(",", ""))


def parse_forecast(out: str) -> dict[str, float]:
    """Median ms per row of bench_forecast.py's table."""
    got = {}
    for line in out.splitlines():
        for prefix, key in FORECAST_ROWS:
            m = re.match(rf"^{re.escape(prefix)}.*?\s{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s*$", line)
            if m:
                got[key] = num(m.group(1))
    missing = [k for _, k in FORECAST_ROWS if k not in got]
    if missing:
        raise ValueError(f"bench_forecast.py output lacks {missing}:\n{out}")
    return got


def parse_backtest(out: str) -> dict[str, dict[str, float]]:
    """Per model of bench_backtest.py's table: forecasts, predict f/s, harness f/s."""
    got = {}
    lines = iter(out.splitlines())
    for line in lines:
        if line.startswith("model ") and "harness f/s" in line:
            break
    for line in lines:
        m = re.match(rf"^(\S+)\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s*$", line)
        if not m:
            break
        got[m.group(1)] = {"forecasts": num(m.group(2)), "predict": num(m.group(4)), "harness": num(m.group(6))}
    if not got:
        raise ValueError(f"no model rows in bench_backtest.py output:\n{out}")
    return got


def best_forecast(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: min(r[k] for r in runs) for k in runs[0]}


def best_backtest(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for model in runs[0]:
        rs = [r[model] for r in runs if model in r]
        out[model] = {"forecasts": rs[0]["forecasts"], "predict": max(r["predict"] for r in rs),
                      "harness": max(r["harness"] for r in rs)}
    return out


def table_rows(fc: dict[str, dict], bt: dict[str, dict]) -> list[tuple[str, float | None, float | None, str]]:
    """(row, before, after, format) for everything measured in both or either tree."""
    rows = []
    if fc:
        for _, key in FORECAST_ROWS:
            rows.append((f"{key}: median ms", fc["before"].get(key), fc["after"].get(key), ".2f"))
        for _, key in FORECAST_ROWS[1:]:
            rows.append((f"{key}: x floor", *(fc[t][key] / fc[t]["numpy floor"] for t in ("before", "after")), ".1f"))
    if bt:
        models = list(dict.fromkeys([*bt["before"], *bt["after"]]))
        for model in models:
            for what in ("predict", "harness"):
                rows.append((f"{model}: {what} f/s", *(bt[t].get(model, {}).get(what) for t in ("before", "after")),
                             ",.0f"))
        for what in ("predict", "harness"):
            vals = []
            for t in ("before", "after"):
                e, w = bt[t].get("engine"), bt[t].get("ewma_normal")
                vals.append(e[what] / w[what] if e and w else None)
            rows.append((f"engine {what} f/s vs ewma_normal (same tree)", *vals, ".3g"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git ref, or the path of an existing checkout")
    ap.add_argument("--after", default=None, help="git ref or checkout path (default: this working tree)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best per row is kept")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--benches", default="forecast,backtest", help="which of forecast,backtest to run")
    ap.add_argument("--repeats", type=int, default=20, help="bench_forecast.py --repeats")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark subprocess")
    args = ap.parse_args()

    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    if set(benches) - {"forecast", "backtest"}:
        ap.error(f"--benches: unknown {sorted(set(benches) - {'forecast', 'backtest'})}")
    data = str(args.data.resolve())
    bench_args = {"forecast": ("bench_forecast.py", ["--data", data, "--repeats", str(args.repeats)]),
                  "backtest": ("bench_backtest.py", ["--data", data])}

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    tmp_root = Path(tempfile.mkdtemp(prefix="aetheris-bench-versions-"))
    trees: list[Tree] = []
    try:
        trees.append(Tree("before", args.before, tmp_root))
        trees.append(Tree("after", args.after, tmp_root))
        print(f"python: {sys.executable}; {os.cpu_count()} cores; load average (1, 5, 15 min) at start: "
              f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
        for t in trees:
            print(f"{t.label}: {t.describe}")
        print(flush=True)

        results: dict[str, dict[str, list]] = {b: {"before": [], "after": []} for b in benches}
        for r in range(1, args.rounds + 1):
            for b in benches:
                script, extra = bench_args[b]
                for t in trees:
                    out, wall = run_bench(t, script, extra, args.timeout)
                    parsed = parse_forecast(out) if b == "forecast" else parse_backtest(out)
                    results[b][t.label].append(parsed)
                    la = os.getloadavg()[0]
                    print(f"--- round {r}, {t.label}, {script}: {wall:.0f} s (load {la:.2f})")
                    print(out.rstrip(), flush=True)
    finally:
        for t in trees:
            try:
                t.remove()
            except subprocess.CalledProcessError as e:
                print(f"could not remove the worktree {t.path}: {e.stderr}", file=sys.stderr)
        shutil.rmtree(tmp_root, ignore_errors=True)

    fc = {t: best_forecast(rs) for t, rs in results["forecast"].items()} if "forecast" in results else {}
    bt = {t: best_backtest(rs) for t, rs in results["backtest"].items()} if "backtest" in results else {}
    if bt:
        for model in bt["before"]:
            n0, n1 = bt["before"][model]["forecasts"], bt["after"].get(model, {}).get("forecasts")
            if n1 is not None and n0 != n1:
                print(f"note: {model} made {n0:,.0f} forecasts before and {n1:,.0f} after")

    load1 = os.getloadavg()
    print(f"\n## before {trees[0].commit} vs after {trees[1].commit}: best of {args.rounds} interleaved rounds")
    print("(ms: lower is better; f/s: higher is better; x floor / vs ewma from the best rows of the same tree)\n")
    print("| row | before | after | after/before |")
    print("|---|---:|---:|---:|")
    for name, b, a, f in table_rows(fc, bt):
        cell = lambda v: "-" if v is None else format(v, f)  # noqa: E731
        ratio = "-" if a is None or b is None or b == 0 else f"{a / b:.3f}"
        print(f"| {name} | {cell(b)} | {cell(a)} | {ratio} |")
    print(f"\nload average (1, 5, 15 min): start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {os.cpu_count()} cores; "
          f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
