"""``aetheris ingest``."""

from __future__ import annotations

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import DataOpt, OptPath, StoreOpt, SyntheticOpt, check_data


@app.command("ingest")
def ingest_cmd(
    data: OptPath = DataOpt,
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic market"),
) -> None:
    """Validate CSV (or synthetic) data and add it to the Parquet store, idempotently and atomically.

    Rows known after the time of ingest are refused (exit 3, nothing written): a daily
    bar dated D is known at its close, D 22:00 UTC, so today's bar is taken only after
    22:00 UTC; a daily side-series value dated D at the end of D (D+1 00:00 UTC).
    """
    from aetheris_ray.config import load_settings
    from aetheris_ray.data import ParquetStore, open_source
    from aetheris_ray.errors import InvalidInput

    if (data is None) == (not synthetic):
        raise InvalidInput("ingest: give exactly one of --data DIR or --synthetic")
    check_data(data)
    settings = load_settings(store=store)
    target = ParquetStore(settings.store_path)
    src = open_source(data=data, synthetic=synthetic, seed=seed) if synthetic else data
    report = target.ingest(src)
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"store: {settings.store_path}")
