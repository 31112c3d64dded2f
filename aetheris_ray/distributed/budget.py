"""Memory budget of one Monte Carlo request (Ray-free, so the ingress and the CLI can share it).

A forecast holds its paths as daily log-returns, shape (paths, horizon) (float32 from
the engine's sampler, 4 bytes a cell), and `engine.finish` makes one float64
step-major cumulative-sum copy (8 bytes a cell) whose rows it sorts or selects in
place: measured peak 12 bytes x paths x horizon in the caller (1,000,000 x 14: 169 MB),
about 16 when the paths come from actors (the shards and their concatenation).
1,000,000 x 90 would be over 1 GB at peak, per request.  Requests above `MAX_CELLS`
path-steps are refused with a message naming ``paths`` and ``horizon``; at the budget a
request peaks near 0.4-0.5 GB.  (`aetheris_ray.api.BYTES_PER_CELL`, 24, the estimate in
that message, is an upper bound from before the in-place finish.)
"""

from __future__ import annotations

from aetheris_ray.errors import InvalidInput

#: Largest ``paths x horizon`` one request may ask for (1,000,000 paths x 32 days).
MAX_CELLS = 32_000_000

#: Requests with at most this many paths are simulated in the caller, unsharded
#: (12 blocks of 4,096; below this a Ray round trip costs more than the draw).
LOCAL_MAX_PATHS = 12 * 4096

#: Largest sum of ``paths x horizon`` over the requests of one batch.
MAX_BATCH_CELLS = MAX_CELLS


def cells(paths: int, horizon: int) -> int:
    return int(paths) * int(horizon)


def check_request(paths: int, horizon: int, *, field: str = "") -> None:
    """Refuse a request whose paths x horizon exceed `MAX_CELLS`.

    >>> check_request(1_000_000, 14)
    >>> check_request(1_000_000, 90)
    Traceback (most recent call last):
    ...
    aetheris_ray.errors.InvalidInput: paths x horizon = 1,000,000 x 90 = 90,000,000 exceeds the budget of 32,000,000 path-steps per request; lower paths (at most 355,555 for horizon 90) or horizon
    """
    n = cells(paths, horizon)
    if n > MAX_CELLS:
        prefix = f"{field}: " if field else ""
        raise InvalidInput(
            f"{prefix}paths x horizon = {int(paths):,} x {int(horizon)} = {n:,} exceeds the budget of "
            f"{MAX_CELLS:,} path-steps per request; lower paths (at most {MAX_CELLS // int(horizon):,} "
            f"for horizon {int(horizon)}) or horizon"
        )
