"""Parquet IO manager: one file per asset and partition under the outputs base path.

It is a UPathIOManager, so a local path in development and an s3:// URL later work alike
(CTI_OUTPUTS_BASE). Frames come back Arrow-backed where pandas allows it: "string" columns
as pyarrow strings and list columns as Arrow lists, so a million-row table is read without a
Python object per value, and list columns keep their item type across the round trip.
"""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from cti_assets import settings


def read_frame(parquet: bytes) -> pd.DataFrame:
    """A DataFrame from Parquet bytes, with Arrow-backed strings and lists."""
    table = pq.read_table(pa.BufferReader(parquet))
    with pd.option_context("mode.string_storage", "pyarrow"):
        return table.to_pandas(types_mapper=_lists_as_arrow)


def _lists_as_arrow(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pd.ArrowDtype(arrow_type)
    return None


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
        return read_frame(path.read_bytes())


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
    return read_frame(path.read_bytes())


def stored_partitions(asset_name: str, base_path: str | None = None) -> list[str]:
    """Partition keys with a stored output for the asset, sorted."""
    folder = UPath(base_path or settings.outputs_base()) / asset_name
    if not folder.exists():
        return []
    return sorted(
        p.name.removesuffix(".parquet") for p in folder.iterdir() if p.suffix == ".parquet"
    )
