"""Parquet IO manager: one file per asset and partition under the outputs base path.

It is a UPathIOManager, so a local path in development and an s3:// URL later work alike
(CTI_OUTPUTS_BASE). Lists and nested values survive the round trip through pyarrow.
"""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd
from upath import UPath

from cti_assets import settings


class ParquetIOManager(dg.UPathIOManager):
    """Stores pandas DataFrames as Parquet, one file per (asset, partition)."""

    extension: str = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise dg.Failure(f"{context.asset_key.to_user_string()} must return a DataFrame")
        buffer = io.BytesIO()
        obj.to_parquet(buffer, index=False, engine="pyarrow")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(path.read_bytes()), engine="pyarrow")


class ParquetIOManagerFactory(dg.ConfigurableIOManagerFactory):
    """Configurable entry point; `base_path` defaults to <CTI_DATA_DIR>/outputs."""

    base_path: str | None = None

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetIOManager:
        return ParquetIOManager(base_path=UPath(self.base_path or settings.outputs_base()))


def read_partition(
    asset_name: str, partition_key: str, base_path: str | None = None
) -> pd.DataFrame:
    """Read one asset partition outside Dagster (CLI, export, benchmarks)."""
    path = UPath(base_path or settings.outputs_base()) / asset_name / f"{partition_key}.parquet"
    return pd.read_parquet(io.BytesIO(path.read_bytes()), engine="pyarrow")


def stored_partitions(asset_name: str, base_path: str | None = None) -> list[str]:
    """Partition keys with a stored output for the asset, sorted."""
    folder = UPath(base_path or settings.outputs_base()) / asset_name
    if not folder.exists():
        return []
    return sorted(
        p.name.removesuffix(".parquet") for p in folder.iterdir() if p.suffix == ".parquet"
    )
