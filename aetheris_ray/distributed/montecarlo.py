"""Sharded Monte Carlo on a pool of simulator actors.

A request's paths are drawn in fixed-size seeded blocks (`aetheris_ray.simulation`):
block ``i`` always uses child ``i`` of ``SeedSequence(seed)``.  A shard is a contiguous
range of whole blocks (`shard_blocks`); shards run on the pool's actors, come back as
log-return arrays in the dtype ``Prepared.sample`` draws (float32 in the engine: half
the bytes of float64; zero-copy through the object store) and are concatenated
in block order, so the merged paths -- and the quantiles `engine.finish` computes
from them -- are bitwise the same for 1, 2 or 8 shards and equal to the in-process
`engine.forecast`.

Small requests (``paths <= local_max_paths``, default 49,152 = 12 blocks, about 10 ms
of work per 10k paths) run in the caller: a Ray round trip costs more than they do.

Failures: a shard whose actor dies (``RayActorError``) is resubmitted to another
actor and the dead actor is replaced; after ``max_attempts`` failures of one shard
the request fails with `SimulationUnavailable` (HTTP 503) and the next request
starts from a healthy pool.

Memory: see `aetheris_ray.distributed.budget` (``paths x horizon <= MAX_CELLS``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from aetheris_ray import engine
from aetheris_ray import simulation as sim
from aetheris_ray.distributed.budget import LOCAL_MAX_PATHS, check_request
from aetheris_ray.errors import AetherisError
from aetheris_ray.result import Forecast

log = logging.getLogger(__name__)


class SimulationUnavailable(AetherisError):
    """The simulator pool could not finish a request (actors died repeatedly)."""

    http_status = 503
    exit_code = 6


@ray.remote(max_restarts=1, max_task_retries=0)
class SimulatorActor:
    """Holds the prepared model of the request it works on and draws its blocks.

    The `engine.Prepared` is put in the object store once per request; the actor
    keeps the last one it loaded (keyed by the request's object id), so a request
    whose shards all land on one actor deserialises it once.  ``networks`` (part ->
    Serve handle of the part's deployment, as the served app's replicas get them): the
    neural parts' network calls of its shards go there (`offload.install_handles`).
    """

    def __init__(self, networks: dict[str, Any] | None = None) -> None:
        from aetheris_ray.components import offload

        self._key: str | None = None
        self._prep: Any = None
        offload.install_handles(networks)

    def load(self, key: str, prep: Any) -> None:
        self._key, self._prep = key, prep

    def simulate(self, key: str, prep: Any, blocks: list[int]) -> np.ndarray:
        """Paths of ``blocks`` (log-returns as ``Prepared.sample`` draws them, shape (n_selected, horizon))."""
        if key != self._key:
            self.load(key, prep)
        return self._prep.simulate(blocks)

    def ping(self) -> bool:
        return True


class SimulatorPool:
    """A fixed-size pool of `SimulatorActor`s.

    Parameters
    ----------
    n_actors : int
        Number of actors (default 2, one per core of a small machine).
    num_cpus : float
        CPUs each actor reserves (fractional, so a Serve graph plus the pool fit 2 CPUs).
    max_attempts : int
        Tries per shard before the request fails with `SimulationUnavailable`.
    shard_timeout_s : float
        A shard not back after this long counts as failed (its actor is replaced).
    networks : dict, optional
        Part name -> Serve handle of its network deployment: the actors send the neural
        parts' network calls there (a served app's Simulator passes its own); without,
        they run in the actors.
    """

    def __init__(self, n_actors: int = 2, *, num_cpus: float = 0.25, max_attempts: int = 3,
                 shard_timeout_s: float = 120.0, networks: dict[str, Any] | None = None) -> None:
        if n_actors < 1:
            raise ValueError(f"n_actors={n_actors!r} must be at least 1")
        self.networks = networks
        self.num_cpus = float(num_cpus)
        self.max_attempts = int(max_attempts)
        self.shard_timeout_s = float(shard_timeout_s)
        self._lock = threading.Lock()
        self.actors = [self._new_actor() for _ in range(n_actors)]
        self.replaced = 0

    def _new_actor(self):
        return SimulatorActor.options(num_cpus=self.num_cpus).remote(self.networks)

    def __len__(self) -> int:
        return len(self.actors)

    def ready(self, timeout_s: float = 30.0) -> bool:
        """Whether every actor answers a ping (replacing any that does not)."""
        for i, a in enumerate(list(self.actors)):
            try:
                ray.get(a.ping.remote(), timeout=timeout_s)
            except (RayActorError, GetTimeoutError):
                self._replace(a)
        return all(ray.get([a.ping.remote() for a in self.actors], timeout=timeout_s))

    def _replace(self, dead) -> None:
        with self._lock:
            for i, a in enumerate(self.actors):
                if a == dead:
                    try:
                        ray.kill(a, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    self.actors[i] = self._new_actor()
                    self.replaced += 1
                    log.warning("simulator actor %d replaced", i)

    def simulate(self, prep: engine.Prepared, n_shards: int | None = None) -> np.ndarray:
        """All paths of a prepared request, drawn in shards, concatenated in block order.

        Returns
        -------
        ndarray, shape (paths, horizon)
            Daily log-returns, bitwise equal to ``prep.simulate()`` in the caller.
        """
        req = prep.request
        check_request(req.paths, req.horizon)
        ranges = [r for r in sim.shard_blocks(req.paths, n_shards or len(self.actors)) if len(r)]
        prep_ref = ray.put(prep)
        key = prep_ref.hex()
        results: list[np.ndarray | None] = [None] * len(ranges)
        attempts = [0] * len(ranges)
        pending: dict[ray.ObjectRef, tuple[int, Any]] = {}

        def submit(i: int, offset: int) -> None:
            actor = self.actors[(i + offset) % len(self.actors)]
            ref = actor.simulate.remote(key, prep_ref, list(ranges[i]))
            pending[ref] = (i, actor)

        for i in range(len(ranges)):
            submit(i, 0)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=self.shard_timeout_s)
            if not done:  # a stuck shard: treat its actors as failed
                ref = next(iter(pending))
                done = [ref]
            ref = done[0]
            i, actor = pending.pop(ref)
            try:
                results[i] = ray.get(ref, timeout=0 if ref in done else None)
            except (RayActorError, GetTimeoutError) as e:
                attempts[i] += 1
                log.warning("shard %d (blocks %s) failed on attempt %d: %s", i, ranges[i], attempts[i], type(e).__name__)
                self._replace(actor)
                if attempts[i] >= self.max_attempts:
                    for r in pending:
                        ray.cancel(r)
                    raise SimulationUnavailable(
                        f"Monte Carlo shard {i} (blocks {ranges[i].start}..{ranges[i].stop - 1}) failed "
                        f"{attempts[i]} times: {type(e).__name__}; the pool was repaired, retry the request"
                    ) from None
                submit(i, attempts[i])
        if not results:
            return np.empty((0, req.horizon))
        return np.concatenate(results, axis=0) if len(results) > 1 else results[0]  # type: ignore[arg-type]

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []


def simulate(prep: engine.Prepared, pool: SimulatorPool | None = None, *, local_max_paths: int = LOCAL_MAX_PATHS,
             n_shards: int | None = None) -> np.ndarray:
    """Paths of a prepared request: in the caller when small or without a pool, else sharded on ``pool``."""
    req = prep.request
    if pool is None or req.paths <= local_max_paths:
        check_request(req.paths, req.horizon)
        return prep.simulate()
    return pool.simulate(prep, n_shards=n_shards)


def forecast_prepared(prep: engine.Prepared, pool: SimulatorPool | None = None, *,
                      local_max_paths: int = LOCAL_MAX_PATHS, n_shards: int | None = None) -> Forecast:
    """`engine.finish` on paths drawn by `simulate`: the same `Forecast` as ``engine.forecast``."""
    return engine.finish(prep, simulate(prep, pool, local_max_paths=local_max_paths, n_shards=n_shards))
