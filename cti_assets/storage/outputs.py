"""Where asset outputs live (one Parquet file per asset and day under CTI_OUTPUTS_BASE) and
how code outside Dagster (CLI, export, benchmarks) reads them. The IO manager writes through the
same paths, so both always agree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from upath import UPath

from cti_assets import settings
from cti_assets.storage.parquet import StoredTable


def local_path(path: UPath) -> Path | None:
    """The path on this machine's file system, or None for object stores and the like."""
    return Path(path.path) if path.protocol in ("", "file", "local") else None


def partition_path(asset_name: str, partition_key: str, base_path: str | None = None) -> UPath:
    return UPath(base_path or settings.outputs_base()) / asset_name / f"{partition_key}.parquet"


def read_partition(
    asset_name: str, partition_key: str, base_path: str | None = None
) -> pd.DataFrame:
    """Read one asset partition outside Dagster (CLI, export, benchmarks)."""
    path = partition_path(asset_name, partition_key, base_path)
    return StoredTable(local_path(path) or path.read_bytes()).read()


def stored_partitions(asset_name: str, base_path: str | None = None) -> list[str]:
    """Partition keys with a stored output for the asset, sorted."""
    folder = UPath(base_path or settings.outputs_base()) / asset_name
    if not folder.exists():
        return []
    return sorted(
        p.name.removesuffix(".parquet") for p in folder.iterdir() if p.suffix == ".parquet"
    )
