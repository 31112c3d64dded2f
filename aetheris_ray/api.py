"""The Python entry points: ``from aetheris_ray import forecast``."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from aetheris_ray.config import Settings, load_settings
from aetheris_ray.contract import ForecastRequest, parse_request
from aetheris_ray.data.schema import MarketSource
from aetheris_ray.errors import DataError
from aetheris_ray.result import Forecast


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread in this process, then restore.

    The engine's fits (GARCH via scipy's optimiser, the calibration's walk-forward)
    change in the last bits with the number of OpenBLAS threads, because a threaded
    BLAS splits its sums differently; through the calibration those bits reach the
    answer (measured on the synthetic market: quantiles up to 8e-4 relative apart, a
    far-tail probability 7 %).  Ray starts its workers with ``OMP_NUM_THREADS=1``, so the
    in-process entry points (`forecast_request`, `backtest`) compute under one thread
    too: the same request gives the same numbers in-process, served, or on Ray, whatever
    the caller's thread settings.  torch, when a neural part has loaded it, also runs
    with one intra-op thread inside the block (its reductions split by thread count too,
    and two threads on a busy 2-core machine ran a neural part 10-30x slower).  threadpoolctl limits only the libraries already
    loaded; scipy's own OpenBLAS, when not loaded yet (a warm forecast never needs
    it, and importing it costs a fifth of a second), is loaded inside the block with
    ``OPENBLAS_NUM_THREADS=1`` and given its default thread count back afterwards.
    """
    import os
    import sys

    controller = _blas_controller()
    late = "scipy.linalg" not in sys.modules
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    torch = sys.modules.get("torch")  # a neural part's intra-op threads: loaded only by a model that has one
    torch_threads = torch.get_num_threads() if torch is not None else None
    with controller.limit(limits=1):
        if late:
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(torch_threads)
            if late:
                if saved is None:
                    os.environ.pop("OPENBLAS_NUM_THREADS", None)
                else:
                    os.environ["OPENBLAS_NUM_THREADS"] = saved
    if late and "scipy.linalg" in sys.modules:  # loaded inside the block: back to its default
        known = {lib.filepath for lib in controller.lib_controllers}
        default = int(saved) if saved and saved.isdigit() else len(os.sched_getaffinity(0))
        for lib in _blas_controller().lib_controllers:
            if lib.filepath not in known:
                lib.set_num_threads(default)


_CONTROLLER: list = []  # [(len(sys.modules) when scanned, ThreadpoolController)]


def _blas_controller() -> Any:
    """A `threadpoolctl.ThreadpoolController` of the loaded BLAS/OpenMP libraries, scanned once.

    A scan walks every loaded shared library (3-4 ms, a fifth of a 10,000-path forecast);
    it is redone only when modules were imported since (a new one may have loaded a
    library of its own, e.g. torch's).
    """
    import sys

    if not _CONTROLLER or _CONTROLLER[0][0] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        _CONTROLLER[:] = [(len(sys.modules), ThreadpoolController())]
    return _CONTROLLER[0][1]


def resolve_source(
    settings: Settings,
    *,
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
) -> MarketSource:
    """The data source a command reads: ``--data`` CSV dir, ``--store`` Parquet, ``--synthetic``, else the home store."""
    from aetheris_ray.data import ParquetStore, open_source

    if data is None and store is None and not synthetic:
        path = settings.store_path
        src = ParquetStore(path)
        if not src.assets():
            raise DataError(
                f"the store at {path} holds no assets: run `aetheris ingest --synthetic` (demo data) "
                "or `aetheris ingest --data DIR`, or pass --data DIR / --store PATH"
            )
        return src
    return open_source(data=data, store=store, synthetic=synthetic, seed=seed)


def forecast(
    asset: str | ForecastRequest,
    horizon: int | None = None,
    *,
    as_of: Any = None,
    paths: int | None = None,
    seed: int | None = None,
    quantiles: Sequence[float | str] | str | None = None,
    thresholds: Sequence[float] = (),
    scenario: dict[str, float] | None = None,
    explain: bool = False,
    model: str | None = None,
    components: Sequence[str] = (),
    source: MarketSource | None = None,
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
    settings: Settings | None = None,
    force: bool = False,
) -> Forecast:
    """Forecast one asset.

    Parameters mirror the forecast contract (ARCHITECTURE.md).  The data comes from
    ``source`` when given, else from ``data`` (a CSV file or directory), ``store``
    (a Parquet store), ``synthetic=True`` (the seeded demo market), or the home store.

    A request above the HTTP service's memory budget (``paths x horizon`` over
    `aetheris_ray.distributed.budget.MAX_CELLS`, e.g. 1,000,000 paths x 90 days, over
    2 GB at peak) raises `InvalidInput` stating the memory estimate, before any data is
    read; ``force=True`` (``aetheris forecast --force``) runs it anyway.

    Examples
    --------
    >>> fc = forecast("SYN-BTC", 7, synthetic=True, paths=1000, seed=1)  # doctest: +SKIP
    >>> fc.quantile(0.5)  # doctest: +SKIP
    """
    settings = settings or load_settings()
    if isinstance(asset, ForecastRequest):
        req = asset
    else:
        req = parse_request(
            {
                "asset": asset,
                "horizon": horizon if horizon is not None else settings.horizon,
                "as_of": as_of,
                "paths": paths if paths is not None else settings.paths,
                "seed": seed,
                "quantiles": quantiles if quantiles is not None else settings.quantiles,
                "thresholds": list(thresholds),
                "scenario": scenario,
                "explain": explain,
                "model": model,
                "components": list(components) or None,
            }
        )
    if not force:
        check_budget(req.paths, req.horizon)
    src = source or resolve_source(settings, data=data, store=store, synthetic=synthetic)
    return forecast_request(req, src, settings)


#: Peak bytes per path-step of a forecast (float32 draws + float64 cumulative sum + quantile copy;
#: `aetheris_ray.distributed.budget`).
BYTES_PER_CELL = 24


def check_budget(paths: int, horizon: int) -> None:
    """The HTTP budget of one request (`budget.check_request`), with the memory estimate and the way round it.

    >>> check_budget(1_000_000, 90)
    Traceback (most recent call last):
    ...
    aetheris_ray.errors.InvalidInput: paths x horizon = 1,000,000 x 90 = 90,000,000 exceeds the budget of 32,000,000 path-steps per request; lower paths (at most 355,555 for horizon 90) or horizon (about 2.2 GB of memory at peak, 0.8 GB at the budget); --force (Python: force=True) runs it anyway
    """
    from aetheris_ray.distributed.budget import MAX_CELLS, cells, check_request
    from aetheris_ray.errors import InvalidInput

    try:
        check_request(paths, horizon)
    except InvalidInput as exc:
        gb, at_budget = cells(paths, horizon) * BYTES_PER_CELL / 1e9, MAX_CELLS * BYTES_PER_CELL / 1e9
        raise InvalidInput(f"{exc} (about {gb:.1f} GB of memory at peak, {at_budget:.1f} GB at the budget); "
                           "--force (Python: force=True) runs it anyway") from None


def forecast_request(req: ForecastRequest, source: MarketSource, settings: Settings | None = None) -> Forecast:
    """Answer a validated request from a source (the function CLI, Python and Serve share).

    The model is ``req.model`` or else the settings' ``model`` (``"baseline"``), with
    ``req.components`` (else the settings' ``components``) swapped in; the
    calibration state and fitted components are cached under the settings' home
    (``state/``), so a repeated forecast for the same data is fast; realised prices
    posted back to the service (``state/outcomes.json``) join the calibration.
    """
    from aetheris_ray import engine

    settings = settings or load_settings()
    if req.model is None and settings.model != "baseline":
        req = req.model_copy(update={"model": settings.model})
    if req.components is None and settings.components:
        req = req.model_copy(update={"components": list(settings.components)})
    from aetheris_ray.outcomes import stored_outcomes

    history = source.history(req.asset, until=req.as_of)
    with one_blas_thread():
        return engine.forecast(history, req, settings=settings,
                               outcomes=stored_outcomes(settings.state_path, req.asset))


#: ``model="none"`` (``--model none``): no engine model in a backtest (baselines alone).
NO_MODEL = "none"


def backtest_models(model: str | None, baselines: bool, settings: Settings | None = None,
                    components: Sequence[str] = ()) -> list:
    """The models of a backtest: the engine models first, then the baselines.

    Parameters
    ----------
    model : str, optional
        Engine model names, comma-separated (``"baseline"``, ``"rough_vol"``,
        ``NAME@VERSION``); ``None`` means the settings' ``model`` (``"baseline"`` unless
        configured), the model ``aetheris forecast`` uses; ``"none"``: no engine model.
    baselines : bool
        Also the EVALUATION.md baselines (EWMA-Normal, GARCH(1,1)-t, Bootstrap).
    components : sequence of str
        Parts swapped into every engine model (``KIND=NAME[@VERSION]``); default: the
        settings' ``components``.

    Raises
    ------
    InvalidInput
        An unknown model name, or nothing to run.
    """
    from aetheris_ray.errors import InvalidInput

    flag = "--model"
    if model is None:
        settings = settings or load_settings()
        model, flag = settings.model, "settings model (AETHERIS_MODEL)"
    names = list(dict.fromkeys(n.strip() for n in model.split(",") if n.strip()))
    if NO_MODEL in names and len(names) > 1:
        raise InvalidInput(f"--model {model!r}: 'none' (no engine model) cannot be combined with model names")
    models = []
    if names != [NO_MODEL]:
        from aetheris_ray.model import PRESETS, model_config
        from aetheris_ray.errors import ModelNotFound
        from aetheris_ray.walkforward import EngineModel

        from aetheris_ray.model import resolve_config

        if not components:
            components = (settings or load_settings()).components
        for name in names:
            try:
                cfg, _ = model_config(name, components)
            except ModelNotFound:
                raise InvalidInput(f"{flag} {name!r} is not known; valid: {', '.join(PRESETS)} "
                                   "(NAME@VERSION pins a registered version), or 'none' for the baselines "
                                   "alone") from None
            cfg = resolve_config(cfg)  # artefacts resolved once, here: every block and worker uses the same versions
            models.append(EngineModel(cfg, name="engine" if cfg.name == "baseline" else f"engine_{cfg.name}"))
    if baselines:
        from aetheris_ray.evaluation.baselines import baseline_models

        models += baseline_models()
    if not models:
        raise InvalidInput("nothing to backtest: --model none leaves no engine model; add --baselines, "
                           "or name a model (e.g. --model baseline)")
    return models


def backtest_source(
    settings: Settings,
    *,
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
):
    """The picklable source recipe (`SourceSpec`) of a backtest: as `resolve_source`, home store by default."""
    from aetheris_ray.errors import InvalidInput
    from aetheris_ray.evaluation.backtest import SourceSpec

    if data is not None and not Path(data).exists():
        raise InvalidInput(f"--data {str(data)!r} does not exist; pass a directory laid out like shared/data")
    if data is None and store is None and not synthetic:
        resolve_source(settings)  # an empty home store: one error that says how to fill it
        store = settings.store_path
    spec = SourceSpec(data=None if data is None else str(data), store=None if store is None else str(store),
                      synthetic=synthetic)
    spec.open()  # exactly one source named (else InvalidInput)
    return spec


def backtest(
    assets: str | Sequence[str],
    start: Any,
    end: Any,
    horizons: Sequence[int] | str = (1, 3, 7, 14),
    *,
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
    model: str | None = None,
    components: Sequence[str] = (),
    baselines: bool = False,
    levels: Sequence[float | str] | str | None = None,
    listed_before: Any = None,
    workers: int = 2,
    progress: bool = True,
    ray: bool = False,
    address: str | None = None,
    block_days: int | None = None,
    settings: Settings | None = None,
):
    """Walk-forward backtest (EVALUATION.md): the function behind ``aetheris backtest``.

    The keyword arguments are the command's flags.  Every model forecasts every
    origin in ``[start, end - h]`` with a close at both ends, from data up to the
    origin only (`aetheris_ray.evaluation.backtest`).

    Parameters
    ----------
    assets : "all", "BTC-USD,ETH-USD" or list of str
    start, end : date-like
        First origin and last target date.
    horizons : sequence of int, or "1,3,7,14"
        Days ahead, 1 to 90.
    data, store, synthetic
        The data: a CSV folder laid out like shared/data, a Parquet store, or the
        seeded synthetic market; none of them: the home store (``aetheris ingest``).
    model : str, optional
        Engine models, comma-separated (``"baseline"``, ``"rough_vol"``,
        ``NAME@VERSION``); default: the settings' ``model`` (``"baseline"``);
        ``"none"``: the baselines alone.
    components : sequence of str
        Parts swapped into every engine model, ``KIND=NAME[@VERSION]`` (``--component``).
    baselines : bool
        Also score EWMA-Normal, GARCH(1,1)-t and Bootstrap in the same run.
    levels : quantile levels, optional
        Default P5 .. P95 (the seven of EVALUATION.md).
    listed_before : date-like, optional
        Keep only assets whose first daily close is before this date.
    workers : int
        Processes across assets (1: in-process).
    progress : bool
        A progress bar (only when stderr is a terminal).
    ray, address, block_days
        Run assets x blocks of origins as Ray tasks (a new local Ray, or the cluster
        at ``address``); ``block_days`` origin days per task (default 180, 0: one
        task per asset).  Same numbers as in-process.

    Returns
    -------
    BacktestResult
        ``.pooled()`` (the pooled table), ``.to_frame()`` (one row per model x asset x
        origin x horizon), ``.per_asset()``, ``.report()``, ``.write(path)``.

    Examples
    --------
    >>> res = backtest("SYN-BTC", "2024-10-01", "2024-12-31", [1, 7], synthetic=True,
    ...                baselines=True, workers=1)  # doctest: +SKIP
    >>> res.pooled()  # doctest: +SKIP
    """
    import warnings

    from aetheris_ray.errors import DataQualityWarning, InvalidInput
    from aetheris_ray.evaluation.backtest import backtest as run, listed_before as keep_listed, resolve_assets
    from aetheris_ray.quantiles import DEFAULT_LEVELS

    settings = settings or load_settings()
    if isinstance(horizons, str):
        horizons = [h.strip() for h in horizons.split(",") if h.strip()]
    if block_days is not None and not (ray or address):
        raise InvalidInput("--block-days splits the work of a Ray run: add --ray (or --address)")
    if block_days is not None and (isinstance(block_days, bool) or block_days < 0):
        raise InvalidInput(f"--block-days {block_days}: give a number of days, e.g. 180, or 0 for one task per asset")
    spec = backtest_source(settings, data=data, store=store, synthetic=synthetic)
    models = backtest_models(model, baselines, settings, components)
    if listed_before is not None:
        import pandas as pd

        try:
            pd.Timestamp(listed_before)
        except ValueError:
            raise InvalidInput(f"--listed-before {listed_before!r} is not a date; use YYYY-MM-DD") from None
        src = spec.open()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)
            kept = keep_listed(src, resolve_assets(src, assets), listed_before)
        if not kept:
            raise InvalidInput(f"--listed-before {listed_before}: no asset has a close before that date")
        assets = kept
    levels = DEFAULT_LEVELS if levels is None else levels
    if ray or address:
        from aetheris_ray.distributed.backtest import DEFAULT_BLOCK_DAYS, backtest_ray

        days = DEFAULT_BLOCK_DAYS if block_days is None else (block_days or None)
        return backtest_ray(spec, assets, start, end, horizons, models, levels=levels, address=address,
                            block_days=days)
    with one_blas_thread():  # as Ray's workers; forked worker processes inherit the limit
        return run(spec, assets, start, end, horizons, models, levels=levels, progress=progress,
                   workers=workers)
