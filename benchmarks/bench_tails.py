"""Far threshold probabilities: plain Monte Carlo vs importance sampling at equal paths.

    .venv/bin/python benchmarks/bench_tails.py [--paths 10000] [--horizon 14] [--repeats 10]
                                               [--data ../shared/data | --synthetic]

For each model and each target probability (about 1e-3 and 1e-5, lower tail),
``--repeats`` independent estimates with ``--paths`` paths each:

* ``plain MC``: the share of paths below K (`simulation.prob_below`, raw, no
  calibration); relative SE ``sqrt((1 - p) / (n p))`` (exact for a share), time of
  drawing the paths (``Prepared.sample`` in seeded blocks) and counting;
* ``IS``: `tails.importance_estimate` (the pilot that picks the tilt included in
  the time); relative SE measured as the spread of the repeats over their mean,
  next to the mean reported SE.

``p`` is the reference: analytic for the Gaussian random walk, else the mean of
the IS repeats (the plain estimate is 0 in most runs at 1e-5).  Models: a
Gaussian random walk (3% daily vol), the engine's baseline (GARCH(1,1) + Student-t)
and its FHS variant, fitted on BTC-USD of ``--data`` (as of 2021-12-01) or on the
synthetic market.  Then one whole ``engine.forecast`` without thresholds, with a
near threshold and with one far threshold.

Last block (``--forecast-only`` runs it alone): the issue-16 case, ``engine.forecast``
of BTC-USD (``--data``) at the data's end, 1,000 paths x 7 days, without thresholds and
with thresholds at 90,000 and 110,000 (110,000 is far: importance sampling), the
latter with the tilt found anew (the remembered tilts cleared first) and remembered, over
``--seeds`` seeds in interleaved rounds: median times, their ratio, and the reported
standard error of the far threshold (mean over seeds, and the seeds' spread of its
estimate).  ``--repo`` imports ``aetheris_ray`` from another checkout (before/after in one
session).  No timing is asserted.
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


def timed(fn, repeats: int) -> tuple[list, float]:
    fn()  # warm-up
    out, ts = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        out.append(fn(i))
        ts.append(time.perf_counter() - t0)
    return out, statistics.median(ts)


def gaussian_walk(sigma: float):
    from aetheris_ray.components.jumps import FittedNoJumps
    from aetheris_ray.components.residuals import FittedGaussian
    from aetheris_ray.components.trend import FittedZeroTrend
    from aetheris_ray.components.volatility import EwmaVolatility, FittedEwma
    from aetheris_ray.model import FittedModel
    from aetheris_ray.tails import ModelSampler

    model = FittedModel.from_parts(trend=FittedZeroTrend.from_params(),
                        volatility=FittedEwma.from_params(EwmaVolatility(path_dependent=False), lam=0.94),
                        jumps=FittedNoJumps.from_params(), residuals=FittedGaussian.from_params())
    cond = {"trend": {"drift": np.zeros((1, 90))}, "volatility": {"v1": np.array([sigma**2])},
            "jumps": {"n": np.zeros(1)}, "residuals": {"n": np.zeros(1)}}
    def sample(n, h, rng):  # the same walk drawn plainly
        return sigma * rng.standard_normal((n, h))

    return ModelSampler(model, cond), sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic market even if --data exists")
    ap.add_argument("--seeds", type=int, default=30, help="seeds of the far-threshold forecast block")
    ap.add_argument("--forecast-only", action="store_true", help="only the far-threshold forecast block")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose aetheris_ray is measured")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    warnings.simplefilter("ignore")
    if args.forecast_only:
        far_threshold_forecast(args)
        return

    from scipy import stats

    from aetheris_ray import engine, tails
    from aetheris_ray.model import PRESETS, ComponentChoice, EngineConfig
    from aetheris_ray import simulation as sim
    from aetheris_ray.contract import ForecastRequest
    from aetheris_ray.data import CsvSource, SyntheticSource

    n, h, reps = args.paths, args.horizon, args.repeats
    use_data = not args.synthetic and (args.data / "daily").is_dir()
    if use_data:
        data, asset = CsvSource(args.data).history("BTC-USD", until="2021-12-01"), "BTC-USD"
    else:
        data, asset = SyntheticSource(seed=0).history("SYN-BTC", until="2021-12-01"), "SYN-BTC"
    req = ForecastRequest(asset=asset, horizon=h, paths=n, seed=1)

    sigma = 0.03
    models = {"gaussian random walk": gaussian_walk(sigma)}
    for name, cfg in (("engine baseline (GARCH-t)", PRESETS["baseline"]),
                      ("engine GARCH + FHS", EngineConfig(
                          name="fhs", residuals=ComponentChoice(name="fhs")))):
        prep = engine.prepare(data, req, config=cfg, use_cache=False)
        models[name] = (tails.ModelSampler(prep.model, prep.cond), prep.sample)

    print(f"far threshold P(price < K) at day {h}: {n:,} paths per estimate, {reps} repeats, "
          f"{asset} as of 2021-12-01 ({'shared data' if use_data else 'synthetic'})")
    head = (f"{'model':<27} {'p':>9} {'plain relSE':>11} {'plain ms':>9} {'IS relSE':>9} {'(reported)':>10} "
            f"{'IS ms':>7} {'var ratio':>10} {'work ratio':>10}")
    print(head)
    for name, (sampler, sample) in models.items():
        if name == "gaussian random walk":
            targets = [(p, stats.norm.ppf(p) * sigma * np.sqrt(h)) for p in (1e-3, 1e-5)]
        else:
            ref = sim.cumulative(sim.simulate_blocks(sample, 1_000_000, h, 99))[:, -1]
            targets = [(p, float(np.quantile(ref, p))) for p in (1e-3, 1e-5)]
        for p_target, u in targets:
            plain, t_plain = timed(lambda i=0: float(sim.prob_below(
                sim.cumulative(sim.simulate_blocks(sample, n, h, 1000 + i))[:, -1], [u])[0]), reps)
            est, t_is = timed(lambda i=0: tails.importance_estimate(sampler, u, h, "below", n, seed=i), reps)
            ps = np.array([e.p_below for e in est])
            p = p_target if name == "gaussian random walk" else float(ps.mean())
            plain_rel = np.sqrt((1 - p) / (n * p))
            is_rel = float(ps.std(ddof=1) / p)
            reported = float(np.mean([e.se for e in est]) / p)
            var_ratio = (plain_rel / is_rel) ** 2
            print(f"{name:<27} {p:>9.2e} {plain_rel:>11.3f} {t_plain * 1e3:>9.1f} {is_rel:>9.3f} {reported:>10.3f} "
                  f"{t_is * 1e3:>7.1f} {var_ratio:>10.0f} {var_ratio * t_plain / t_is:>10.0f}")
    print("var ratio = plain variance / IS variance at equal paths; work ratio = the same per unit of time")

    spot = float(data.daily_close().iloc[-1])
    rows = [("no thresholds", []), ("near threshold (0.95 x spot)", [0.95 * spot]),
            ("far threshold (0.3 x spot)", [0.3 * spot])]
    engine.forecast(data, req)  # fit and cache
    print(f"\nengine.forecast, {n:,} paths x {h} days, {asset}, median of {reps}")
    for label, ks in rows:
        r = req.model_copy(update={"thresholds": ks})
        fcs, t = timed(lambda i=0, r=r: engine.forecast(data, r), reps)
        print(f"{label:<30} {t * 1e3:>8.1f} ms   estimators {list(fcs[0].threshold_estimator)}")
    if use_data:
        far_threshold_forecast(args)


def far_threshold_forecast(args) -> None:
    """BTC-USD at the data's end, 1,000 x 7: no thresholds vs 90,000 and 110,000 (interleaved rounds)."""
    from aetheris_ray import engine
    from aetheris_ray.contract import ForecastRequest
    from aetheris_ray.data import CsvSource

    from aetheris_ray import tails

    data = CsvSource(args.data).history("BTC-USD")
    spot = float(data.daily_close().iloc[-1])
    plain = ForecastRequest(asset="BTC-USD", horizon=7, paths=1000, seed=0)
    engine.forecast(data, plain)  # fit and cache
    remembered = getattr(tails, "_TILTS", None)  # tilts remembered per model (absent before b854c6f)

    def forget() -> None:
        if remembered is not None:
            remembered.clear()

    times: dict[str, list[float]] = {"plain": [], "warm": [], "cold": []}
    p_far, se_far, n_far = [], [], []
    for seed in range(args.seeds):
        r0 = plain.model_copy(update={"seed": seed})
        r2 = r0.model_copy(update={"thresholds": [90_000.0, 110_000.0]})
        for name, r in (("plain", r0), ("cold", r2), ("warm", r2)):
            if name == "cold":
                forget()
            t0 = time.perf_counter()
            fc = engine.forecast(data, r)
            times[name].append(time.perf_counter() - t0)
        if fc.threshold_estimator[1] != "importance_sampling":
            continue  # 50 or more plain paths beyond 110,000 for this seed (P is about 0.04): plain MC
        p_far.append(float(fc.p_above[1]))
        se_far.append(float(fc.threshold_se[1]))
        n_far.append(fc.metadata["importance_sampling"][0]["paths"])
    a = statistics.median(times["plain"])
    p = float(np.mean(p_far))
    print(f"\nBTC-USD at {data.daily_close().index[-1]:%Y-%m-%d} (spot {spot:,.0f}), 1,000 paths x 7 days, "
          f"{args.seeds} seeds, interleaved; package from {args.repo}")
    print(f"{'forecast':<58} {'median ms':>9} {'x plain':>8}")
    rows = (("plain", "no thresholds"),
            ("cold", "thresholds 90,000 and 110,000, tilt found anew"),
            ("warm", "thresholds 90,000 and 110,000, tilt remembered"))
    for key, label in rows:
        if key == "warm" and remembered is None:
            label = "thresholds 90,000 and 110,000 (again)"
        b = statistics.median(times[key])
        print(f"{label:<58} {b * 1e3:>9.2f} {b / a:>8.2f}")
    print(f"110,000 by importance sampling in {len(p_far)} of {args.seeds} seeds; over those seeds "
          f"P(above 110,000): mean {p:.4f}; reported SE mean {np.mean(se_far):.5f} "
          f"(relative {np.mean(se_far) / p:.3f}); spread of the estimate over seeds {np.std(p_far, ddof=1):.5f}; "
          f"tilted paths {int(np.median(n_far)):,}")


if __name__ == "__main__":
    main()
