"""Model deployments composed by the ingress: features/model loading, simulator, calibrator, networks.

Each deployment calls the same engine functions the in-process path calls
(`api.resolve_source`, ``source.history``, `engine.prepare`, then
`aetheris_ray.distributed.montecarlo.forecast_prepared` = simulate + `engine.finish`),
so a served forecast equals ``api.forecast_request`` for the same request and seed.

Each neural part that runs a network at forecast time has its own deployment
(`Network`, one per part, named in `NETWORK_DEPLOYMENTS`): `Features`, `Simulator` (and its pool actors) and
the ingress send those calls to it through handles (`offload.install_handles`), and it
batches concurrent calls (``@serve.batch``).

Resources and autoscaling bounds live in ``serve_config.yaml``; the decorator values
here are the defaults ``aetheris serve`` and the tests use (they fit 2 CPUs).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from ray import serve

from aetheris_ray import engine
from aetheris_ray.components import offload
from aetheris_ray.model import PRESETS, model_config
from aetheris_ray.contract import ForecastRequest, ForecastResponse

log = logging.getLogger("ray.serve")

#: The deployment of each neural part that runs a network at forecast time (`Network`).
NETWORK_DEPLOYMENTS = {"rough_vol": "RoughVolNet", "fm_gp": "FlowMatchingNet", "mamba": "MambaNet",
                       "jump_sde": "JumpSdeNet"}

NO_ACCESS_LOG = {"enable_access_log": False}


def model_id(asset: str, model_version: str) -> str:
    """Multiplexing key of one asset's model: ``"{asset}:{model_version}"``."""
    return f"{asset}:{model_version}"


def resolve_model_version(requested: str | None, components: Sequence[str] | None = None) -> str:
    """The version id of the model a request names (`aetheris_ray.model.model_config`; unknown names raise `ModelNotFound`)."""
    cfg, _ = model_config(requested, components or ())
    return cfg.version


@dataclass(frozen=True)
class AssetModel:
    """What is loaded per ``"{asset}:{model_version}"``: the asset's history at its newest close.

    The engine keeps the fitted components and calibration buffers of each
    (asset, origin) in its own cache (and on disk under ``Settings.state_path``), so
    routing an asset's requests to the replica holding it reuses that work too.
    """

    asset: str
    model_version: str
    history: Any  # AssetData


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, logging_config=NO_ACCESS_LOG)
class Features:
    """Opens the data source and prepares requests (point-in-time history -> `engine.Prepared`).

    The ingress asks for a prepared request when its own cache misses (a new asset,
    as-of, option set or outcome epoch); it draws small requests itself and sends
    large ones to `Simulator`.

    Per-asset models are loaded through Serve model multiplexing, keyed
    ``"{asset}:{model_version}"``: the handle call carries the key and Serve routes
    it to a replica that already holds that model.
    """

    def __init__(self, source: dict[str, Any], calibrator: Any = None, networks: dict[str, Any] | None = None) -> None:
        from aetheris_ray.api import resolve_source
        from aetheris_ray.config import load_settings

        settings = load_settings(home=source.get("home"), store=source.get("store"))
        self.settings = settings
        self.source = resolve_source(settings, data=source.get("data"), store=source.get("store"),
                                     synthetic=bool(source.get("synthetic")))
        self.assets = sorted(self.source.assets())
        self.calibrator = calibrator
        offload.install_handles(networks)

    @serve.multiplexed(max_num_models_per_replica=16)
    async def get_model(self, key: str) -> AssetModel:
        asset, _, version = key.rpartition(":")
        history = await asyncio.to_thread(self.source.history, asset)
        return AssetModel(asset=asset, model_version=version, history=history)

    async def prepare(self, req: ForecastRequest) -> engine.Prepared:
        """`engine.prepare` on the request's point-in-time history (the loaded model when ``as_of`` is None),
        with the outcomes posted back for the asset (asked of the `Calibrator`)."""
        key = serve.get_multiplexed_model_id() or model_id(req.asset, resolve_model_version(req.model, req.components))
        model = await self.get_model(key)
        history = model.history if req.as_of is None else await asyncio.to_thread(
            self.source.history, req.asset, until=req.as_of)
        outcomes = await self.calibrator.rows.remote(req.asset) if self.calibrator is not None else []
        return await asyncio.to_thread(engine.prepare, history, req, settings=self.settings, outcomes=outcomes)

    async def prescore(self, asset: str) -> int:
        """Score the asset's posted outcomes for the default model ahead of its next forecast (issue 14 item 4).

        The ingress calls it, without waiting, after a ``POST /v1/outcomes``; the raw
        scores land in memory and under ``Settings.state_path`` (`aetheris_ray.pairs.prescore`),
        where the next forecast's `engine.prepare` finds them.  Returns how many were scored.
        """
        from aetheris_ray import pairs
        from aetheris_ray.model import resolve_config

        if self.calibrator is None or asset not in self.assets:
            return 0
        model = await self.get_model(model_id(asset, resolve_model_version(None, ())))
        outcomes = await self.calibrator.rows.remote(asset)
        config = resolve_config(model_config(None)[0])
        return await asyncio.to_thread(pairs.prescore, model.history, outcomes, config=config,
                                       settings=self.settings)

    def describe(self) -> dict[str, Any]:
        models = []
        for name in sorted(PRESETS):
            cfg, _ = model_config(name)
            models.append({"name": name, "version": cfg.version, "config": cfg.model_dump(mode="json")})
        from aetheris_ray.registry import list_models

        return {"models": models, "default": resolve_model_version(None), "assets": self.assets,
                "registered": list_models()}

    def check_health(self) -> None:
        if not self.assets:
            raise RuntimeError("the data source holds no assets")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64, logging_config=NO_ACCESS_LOG)
class Simulator:
    """Draws the paths of prepared requests and finishes them into forecasts.

    Requests up to ``local_max_paths`` run in this replica; larger ones are sharded on
    a pool of simulator actors created on first use (one large job at a time per
    replica, so memory stays bounded by `budget.MAX_CELLS`).
    """

    def __init__(self, pool_actors: int = 2, actor_num_cpus: float = 0.25, local_max_paths: int | None = None,
                 networks: dict[str, Any] | None = None) -> None:
        from aetheris_ray.distributed import montecarlo

        self._mc = montecarlo
        self.pool_actors = int(pool_actors)
        self.actor_num_cpus = float(actor_num_cpus)
        self.local_max_paths = int(local_max_paths or montecarlo.LOCAL_MAX_PATHS)
        self.pool = None
        self._large = asyncio.Semaphore(1)
        self.networks = networks
        offload.install_handles(networks)

    def _pool(self):
        if self.pool is None:  # its actors send their network calls to the parts' deployments too
            self.pool = self._mc.SimulatorPool(self.pool_actors, num_cpus=self.actor_num_cpus,
                                               networks=self.networks)
        return self.pool

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``local_max_paths`` (hot-swappable without a restart)."""
        if "local_max_paths" in config:
            self.local_max_paths = int(config["local_max_paths"])

    async def forecast(self, prep: engine.Prepared, n_shards: int | None = None) -> ForecastResponse:
        """The forecast of a prepared request, as the contract's response."""
        if prep.request.paths <= self.local_max_paths:
            fc = await asyncio.to_thread(self._mc.forecast_prepared, prep, None)
        else:
            async with self._large:
                fc = await asyncio.to_thread(self._mc.forecast_prepared, prep, self._pool(),
                                             local_max_paths=self.local_max_paths, n_shards=n_shards)
        return fc.to_response()

    def pool_actors_handles(self) -> list:
        """The pool's actor handles (for operations and the fault-injection test)."""
        return list(self._pool().actors)

    def check_health(self) -> None:
        if self.pool is not None and not self.pool.actors:
            raise RuntimeError("simulator pool has no actors")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64, logging_config=NO_ACCESS_LOG)
class Calibrator:
    """Keeps the realised outcomes posted back, durably under ``Settings.state_path``.

    One replica owns the state file (``num_replicas: 1`` in serve_config.yaml); writes
    are serialised and atomic, and the log is reloaded on start, so a restart loses
    nothing that was acknowledged.  `Features` reads an asset's outcomes (`rows`) when
    it prepares a request; the engine turns them into calibration pairs that join
    the coverage buffers (`aetheris_ray.pairs.outcome_pairs`).  ``epoch`` changes with
    every write, so the ingress knows when its prepared requests are stale.
    """

    def __init__(self, state_dir: str) -> None:
        import uuid
        from pathlib import Path

        from aetheris_ray.outcomes import OutcomeLog

        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.log = OutcomeLog(state_dir)
        self._lock = asyncio.Lock()
        self._boot = uuid.uuid4().hex[:8]
        self._writes = 0

    def epoch(self) -> str:
        """Changes whenever the stored outcomes do (a new token per replica start)."""
        return f"{self._boot}:{self._writes}"

    async def record(self, outcomes: list) -> dict[str, Any]:
        async with self._lock:
            new = await asyncio.to_thread(self.log.add, outcomes)
            self._writes += 1
        return {"accepted": len(outcomes), "new": new, "stored": len(self.log), "epoch": self.epoch()}

    def rows(self, asset: str) -> list[dict[str, Any]]:
        return self.log.rows(asset)

    def outcomes(self, asset: str | None = None) -> dict[str, Any]:
        rows = self.log.rows(asset)
        return {"count": len(rows), "outcomes": rows}

    def describe(self) -> dict[str, Any]:
        return {"counts": self.log.counts(), "stored": len(self.log), "state_file": str(self.log.path),
                "epoch": self.epoch()}

    def check_health(self) -> None:
        if not self.log.path.parent.exists():
            raise RuntimeError(f"state directory {self.log.path.parent} is gone")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64, logging_config=NO_ACCESS_LOG)
class Network:
    """Runs one neural part's network for the deployments that compose a forecast (one deployment per part).

    A call names the registered artefact (registry root, name, version), the part's
    network method and its arrays (`aetheris_ray.components.offload.Call`); the replica
    loads the artefact once (`registry.load_artefact`) and runs the method.  Concurrent
    calls are batched (``@serve.batch``): those of one artefact and method with the same
    trailing shapes run as one call on the concatenated arrays (`offload.run_batch`); two
    batches run at once, each on its own thread (torch releases the GIL), so a CPU replica
    uses two cores.  ``user_config``: ``max_batch_size``, ``batch_wait_timeout_s``.
    """

    def __init__(self, part: str) -> None:
        self.part = part
        self.counts = {"calls": 0, "batches": 0, "largest_batch": 0}

    def reconfigure(self, config: dict[str, Any]) -> None:
        if "max_batch_size" in config:
            self.run.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            self.run.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002, max_concurrent_batches=2)
    async def run(self, calls: list[Any]) -> list[Any]:
        """Each call's ``(output, generator states)``, or the exception it raised."""
        self.counts["calls"] += len(calls)
        self.counts["batches"] += 1
        self.counts["largest_batch"] = max(self.counts["largest_batch"], len(calls))
        return await asyncio.to_thread(offload.run_batch, calls)

    def stats(self) -> dict[str, Any]:
        """The part and how many calls and batches this replica ran (the largest batch too)."""
        return {"part": self.part, **self.counts}
