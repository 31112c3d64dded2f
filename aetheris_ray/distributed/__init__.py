"""The Ray layer of the engine: the only part of `aetheris_ray` that imports ``ray``.

It moves data and places work; the math stays in the engine.

* `montecarlo`: a pool of simulator actors; a request's paths are split into whole
  seeded blocks (`aetheris_ray.simulation.shard_blocks`), shards run on the actors and
  are concatenated in block order, then `aetheris_ray.engine.finish` computes exact
  quantiles.  Same seed, same numbers, whatever the shard count.
* `backtest`: fans a walk-forward backtest out over assets x origin blocks as Ray tasks
  that call the evaluation harness's per-asset function.

Importing this package does not import ``ray``; the submodules do.
"""

from __future__ import annotations

__all__ = ["montecarlo", "backtest", "budget"]
