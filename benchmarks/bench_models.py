"""One forecast per model preset (the neural parts against the baseline engine), in-process.

    AETHERIS_HOME=$PWD/.aetheris .venv/bin/python benchmarks/bench_models.py \
        [--models baseline,fm_gp,mamba,jump_sde,rough_vol,sota] [--paths 1000,10000] [--horizon 14] \
        [--repeats 10] [--threads 1] [--data ../shared/data | --synthetic]

For each preset and path count: the median wall time of ``engine.forecast`` on BTC-USD's
history already in memory (fitted parts and calibration cached by the engine after one
warm-up call, as a running service has them), interleaved rounds, and the ratio to the
baseline engine at the same path count in the same run.  A neural preset uses the
registry's ``latest`` artefacts of ``$AETHERIS_HOME`` (train them with ``aetheris tune``);
where one is missing the part falls back to its baseline and the ``fallbacks`` column says
so (the row then times the baseline, not the neural part).  ``--threads`` sets torch's
intra-op threads (1 = what a Serve replica with one CPU gets).  No timing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LEVELS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="baseline,fm_gp,mamba,jump_sde,rough_vol,sota")
    ap.add_argument("--paths", default="1000,10000")
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic market even if --data exists")
    args = ap.parse_args()

    import torch

    from aetheris_ray import engine
    from aetheris_ray.contract import ForecastRequest
    from aetheris_ray.data import CsvSource, SyntheticSource
    from aetheris_ray.model import PRESETS

    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in PRESETS]
    if unknown:
        sys.exit(f"--models: {unknown} are not presets; known: {', '.join(sorted(PRESETS))}")
    paths = [int(p) for p in args.paths.split(",")]
    use_data = not args.synthetic and (args.data / "daily").is_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = CsvSource(args.data) if use_data else SyntheticSource(seed=0)
        asset = "BTC-USD" if use_data else "SYN-BTC"
        history = src.history(asset)

    def call(model: str, n: int):
        req = ForecastRequest(asset=asset, horizon=args.horizon, paths=n, seed=7, quantiles=list(LEVELS), model=model)
        return lambda: engine.forecast(history, req)

    fns = {(m, n): call(m, n) for n in paths for m in models}
    fallbacks: dict[str, str] = {}
    first: dict[tuple[str, int], float] = {}
    for key, fn in fns.items():  # warm-up: fits, artefact loads, calibration buffers
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fn()
        first[key] = time.perf_counter() - t0
        fb = res.metadata.get("fallbacks") or []
        fallbacks[key[0]] = ", ".join(f"{f['kind']}={f['used']}" for f in fb) or "-"
    times: dict[tuple[str, int], list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    print(f"one forecast, {asset} ({'shared data' if use_data else 'synthetic'}), {args.horizon} days, "
          f"torch threads {args.threads}, median of {args.repeats} interleaved rounds after a warm-up")
    print("| model | paths | median ms | p90 ms | x baseline | first call s | fallbacks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for n in paths:
        base = statistics.median(times[(models[0], n)])
        for m in models:
            ts = times[(m, n)]
            med = statistics.median(ts)
            print(f"| {m} | {n:,} | {med * 1e3:.1f} | {np.quantile(ts, 0.9) * 1e3:.1f} | {med / base:.2f} | "
                  f"{first[(m, n)]:.2f} | {fallbacks[m]} |")
    print(f"(ratios against {models[0]} at the same path count)")


if __name__ == "__main__":
    main()
