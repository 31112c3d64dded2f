"""Rolling windows with Ray Data: ``from_items(assets).map_batches(read_and_window)``.

One asset per task: each task opens the Parquet store, reads one asset's history
point-in-time and calls the core `aetheris_ray.windows.make_windows`.  There is no
``groupby`` shuffle, and a window can never cross an asset (STYLE.md 13).
`local_windows` is the in-process path with the same output; a test asserts that
the two are equal.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from aetheris_ray.windows import WindowSpec, concat_windows, make_windows, window_schema

__all__ = ["read_and_window", "window_dataset", "build_windows", "local_windows", "sort_windows"]


def read_and_window(
    batch: dict[str, np.ndarray],
    *,
    store_path: str,
    spec: WindowSpec,
    start: Any = None,
    end: Any = None,
    until: Any = None,
) -> dict[str, np.ndarray]:
    """Ray Data UDF: a batch of asset names -> their windows (`window_schema` columns)."""
    from aetheris_ray.data.store import ParquetStore

    store = ParquetStore(store_path)
    parts = [make_windows(store.history(str(a), until=until), spec, start, end) for a in batch["asset"]]
    out = concat_windows(parts, spec)
    out["asset"] = out["asset"].astype(str)
    return out


def window_dataset(
    store_path: str,
    assets: Sequence[str],
    spec: WindowSpec,
    *,
    start: Any = None,
    end: Any = None,
    until: Any = None,
    num_cpus: float = 1.0,
) -> Any:
    """A lazy ``ray.data.Dataset`` of windows, one asset per task."""
    import ray

    ds = ray.data.from_items([{"asset": str(a)} for a in assets], override_num_blocks=max(1, len(assets)))
    return ds.map_batches(
        read_and_window,
        batch_size=1,
        batch_format="numpy",
        num_cpus=num_cpus,
        fn_kwargs={"store_path": str(store_path), "spec": spec, "start": start, "end": end, "until": until},
    )


def sort_windows(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Order rows by (asset, origin) so that pipelines that finish in any order compare equal."""
    if len(w["origin"]) == 0:
        return w
    order = np.lexsort((w["origin"], w["asset"].astype(str)))
    return {k: v[order] for k, v in w.items()}


def build_windows(store_path: str, assets: Sequence[str], spec: WindowSpec, **kwargs: Any) -> dict[str, np.ndarray]:
    """Materialise `window_dataset` into window columns (sorted by asset, origin)."""
    schema = window_schema(spec)
    parts = []
    for batch in window_dataset(store_path, assets, spec, **kwargs).iter_batches(batch_size=None, batch_format="numpy"):
        if len(batch["origin"]):
            parts.append({k: np.asarray(batch[k]) for k in schema})
    out = concat_windows(parts, spec)
    out["asset"] = out["asset"].astype(object)
    out["origin"] = out["origin"].astype("datetime64[ns]")
    return sort_windows(out)


def local_windows(source: Any, assets: Sequence[str], spec: WindowSpec, *, start: Any = None, end: Any = None,
                  until: Any = None) -> dict[str, np.ndarray]:
    """The same windows in-process from any `MarketSource` (no Ray)."""
    return sort_windows(concat_windows([make_windows(source.history(a, until=until), spec, start, end) for a in assets], spec))
