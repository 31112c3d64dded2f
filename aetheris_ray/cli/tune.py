"""``aetheris tune``: Ray Tune sweep of a neural component; the best trial goes into the model registry."""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import DataOpt, OptPath, StoreOpt, SyntheticOpt

#: Left out of training (EVALUATION.md: stablecoins and gold tokens).
EXCLUDED = frozenset({"USDT-USD", "USDC-USD", "DAI-USD", "TUSD-USD", "USDD-USD", "PAXG-USD", "XAUT-USD", "XAUt-USD"})
#: Default training assets on a large source (more than `MAX_DEFAULT_ASSETS`): the most liquid majors present.
MAJORS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "BNB-USD", "ADA-USD", "DOGE-USD", "LTC-USD")
MAX_DEFAULT_ASSETS = 10


def pick_assets(available: list[str], requested: str | None) -> list[str]:
    """``--assets A,B`` (each must exist), else every asset of a small source, else the majors present."""
    from aetheris_ray.errors import InvalidInput

    if requested:
        names = [a.strip() for a in requested.split(",") if a.strip()]
        missing = [a for a in names if a not in available]
        if missing:
            raise InvalidInput(f"--assets: {missing} not in the data source; known: {available[:8]}{' ...' if len(available) > 8 else ''}")
        return names
    usable = [a for a in available if a not in EXCLUDED]
    if len(usable) <= MAX_DEFAULT_ASSETS:
        return usable
    return [a for a in MAJORS if a in usable] or usable[:MAX_DEFAULT_ASSETS]


def _components(component: str) -> list[str]:
    """``--component NAME`` or ``all`` (every tunable variant, in registration order); `InvalidInput` lists the valid names."""
    from aetheris_ray.components.registry import tunable

    if component == "all":
        return [v.name for v in tunable()]
    tunable(component)  # InvalidInput listing the tunable parts, before any data is read
    return [component]


@app.command("tune")
def tune_cmd(
    component: str = typer.Option("rough_vol", "--component",
                                  help="tunable part to tune: a registered variant with a search space, or all"),
    trials: int = typer.Option(4, "--trials", help="number of trials (hyperparameter samples) per component"),
    time_budget_s: Optional[float] = typer.Option(None, "--time-budget-s", help="stop starting/continuing trials after this many seconds (per component)"),
    data: OptPath = DataOpt,
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    assets: Optional[str] = typer.Option(None, "--assets", help="comma-separated training assets (default: all of a small source, else the majors)"),
    start: Optional[str] = typer.Option(None, "--start", help="first training origin date YYYY-MM-DD"),
    end: Optional[str] = typer.Option(None, "--end", help="last origin date YYYY-MM-DD (train before your backtest period!)"),
    lookback: int = typer.Option(64, "--lookback", help="input days per window"),
    horizon: int = typer.Option(14, "--horizon", help="target days per window"),
    stride: int = typer.Option(1, "--stride", help="days between window origins"),
    regime: bool = typer.Option(False, "--regime/--no-regime",
                                help="also condition the network on the regime vector (off by default for rough_vol: see "
                                     "docs/training.md; a part whose training settings ask for it always gets it)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="training steps per trial (default from the part's registration)"),
    gpus_per_trial: Optional[float] = typer.Option(None, "--gpus-per-trial", help="GPUs per trial (default: 1 when the cluster has GPUs, else 0)"),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="CPUs per trial"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted sweep of this component (Tuner.restore)"),
    name: Optional[str] = typer.Option(None, "--name", help="experiment name under <AETHERIS_HOME>/tune (default: the component)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray)"),
    ray_data: bool = typer.Option(False, "--ray-data", help="build the windows with the Ray Data pipeline (Parquet store only)"),
    register: bool = typer.Option(True, "--register/--no-register", help="save the best trial into the model registry"),
    force_promote: bool = typer.Option(False, "--force-promote",
                                       help="make the new version latest even when it does not beat the current latest"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Tune neural components with Ray Tune (ASHA on val_ql); register each best trial.

    A new version becomes ``latest`` only when it beats the current ``latest`` on the
    sweep's validation windows (both scores are kept in the registry record).
    """
    import time

    from aetheris_ray.api import resolve_source
    from aetheris_ray.components.registry import tunable
    from aetheris_ray.config import load_settings
    from aetheris_ray.errors import DataError, InvalidInput
    from aetheris_ray.windows import WindowSpec, concat_windows, make_windows

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    components = _components(component)
    if name and len(components) > 1:
        raise InvalidInput("--name names one experiment: use it with one --component, not all")
    settings = load_settings()
    src = resolve_source(settings, data=data, store=store, synthetic=synthetic)
    names = pick_assets(src.assets(), assets)

    from tune.sweep import SweepOptions, quiet_tune_env, run_sweep

    quiet_tune_env()
    import ray

    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    elif ray_data or len(components) > 1:  # one local Ray for the pipeline and every sweep
        from aetheris_ray.distributed.serving import loopback_ray_env, require_ray_auth

        require_ray_auth()  # token auth on, and a local Ray on 127.0.0.1 only (issue 14)
        loopback_ray_env()
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    if ray_data:
        from aetheris_ray.data import ParquetStore

        if not isinstance(src, ParquetStore):
            ray.shutdown()
            raise InvalidInput("--ray-data reads a Parquet store: pass --store PATH (or ingest into the home store)")
    cache: dict[Any, tuple[dict, float]] = {}

    def windows_for(spec: WindowSpec) -> tuple[dict, float]:
        if spec not in cache:
            t0 = time.perf_counter()
            if ray_data:
                from data_pipelines.windows import build_windows

                w = build_windows(str(src.path), names, spec, start=start, end=end)
            else:
                w = concat_windows([make_windows(src.history(a), spec, start, end) for a in names], spec)
            cache[spec] = (w, time.perf_counter() - t0)
        return cache[spec]

    def built_by(target: str) -> tuple[dict, float]:  # a part trained on something else than price windows
        if target not in cache:
            from importlib import import_module

            module, _, fn = target.partition(":")
            t0 = time.perf_counter()
            w = getattr(import_module(module), fn)([src.history(a) for a in names], end or "2100-01-01", start)
            cache[target] = (w, time.perf_counter() - t0)
        return cache[target]

    outs = []
    try:
        for comp in components:
            v = tunable(comp)
            spec = WindowSpec(lookback=lookback, horizon=horizon, stride=stride,
                              regime=regime or bool(v.training.get("window_regime", False)))
            builder = v.training.get("windows_from")
            windows, t_windows = built_by(builder) if builder else windows_for(spec)
            n_rows = len(next(iter(windows.values()))) if windows else 0  # windows or training rows
            if n_rows == 0:
                raise DataError(f"tune: no windows for {names} between {start or 'the start'} and {end or 'the end'}")
            overrides = {"lookback": lookback}
            if max_steps is not None:
                overrides["max_steps"] = max_steps
            opts = SweepOptions(
                storage_path=str(settings.home / "tune"), name=name, num_samples=trials, time_budget_s=time_budget_s,
                gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial, resume=resume, overrides=overrides,
                force_promote=force_promote,
            )
            info = {"windows_from": builder} if builder else {"window_spec": spec.__dict__}
            res = run_sweep(comp, windows, opts, register=register, extra_info={**info, "data_assets": names})
            promo = {} if res.record is None else res.record.promotion
            outs.append({
                "component": comp,
                "assets": names,
                "windows": int(n_rows),
                "trials": res.n_trials,
                "errored": res.n_errored,
                "device": res.device,
                "best_config": res.best_config,
                "val_ql": res.best_metrics.get("val_ql"),
                "val_ql_ewma": res.best_metrics.get("val_ql_ewma"),
                "hurst": res.best_metrics.get("hurst"),
                "version": None if res.record is None else res.record.version,
                "promoted": None if res.record is None else res.record.promoted,
                "promotion": promo.get("why"),
                "experiment": res.path,
                "windows_s": round(t_windows, 2),
                "sweep_s": round(res.wall_s, 2),
            })
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if fmt == "json":
        doc = outs[0] if component != "all" else {"components": outs}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    for i, out in enumerate(outs):
        if i:
            typer.echo("")
        for k, v in out.items():
            typer.echo(f"{k:>12}: {v}")
