"""Parquet IO manager: one file per asset and partition under the outputs base path.

It is a UPathIOManager, so a local path in development and an s3:// URL (the `s3` extra) work
alike (CTI_OUTPUTS_BASE), both read and written a slice at a time (cti_assets.storage.outputs).
An asset returns a DataFrame, or `FrameBatches` to write a big table a slice at a time; an input
whose AssetIn metadata says `columns` reads only those, and one that says `batched` gets a
`StoredTable` to read in slices (see cti_assets.storage.parquet).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd
from upath import UPath

from cti_assets import settings
from cti_assets.storage.outputs import TableReplacedError, open_table, write_table
from cti_assets.storage.parquet import FrameBatches, StoredTable

REPLACED_RETRIES = 3


@contextmanager
def retried_if_replaced() -> Iterator[None]:
    """An input table replaced while the step read it (another run of the same day wrote it on
    the object store) retries the step, which then reads the new table from the start."""
    try:
        yield
    except TableReplacedError as replaced:
        raise dg.RetryRequested(max_retries=REPLACED_RETRIES, seconds_to_wait=1.0) from replaced


class ParquetIOManager(dg.UPathIOManager):
    """Stores pandas DataFrames as Parquet, one file per (asset, partition)."""

    extension: str = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: object, path: UPath) -> None:
        if isinstance(obj, pd.DataFrame):
            obj = FrameBatches([obj])
        if not isinstance(obj, FrameBatches):
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} must return a DataFrame or FrameBatches")
        with retried_if_replaced():  # the slices may come from an input read meanwhile
            write_table(path, obj)  # a slice at a time, on disk or on an object store
        if obj.metadata is not None:
            context.add_output_metadata(obj.metadata())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame | StoredTable:
        metadata = context.definition_metadata or {}
        columns = metadata.get("columns")
        with retried_if_replaced():
            table = open_table(path, columns)
            return table if metadata.get("batched") else table.read()


class ParquetIOManagerFactory(dg.ConfigurableIOManagerFactory):
    """Configurable entry point; `base_path` defaults to <CTI_DATA_DIR>/outputs."""

    base_path: str | None = None

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetIOManager:
        return ParquetIOManager(base_path=UPath(self.base_path or settings.outputs_base()))
