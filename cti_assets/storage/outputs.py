"""Where asset outputs live (one Parquet file per asset and day under CTI_OUTPUTS_BASE) and
how code outside Dagster (CLI, export, benchmarks) reads them. The IO manager writes through the
same paths, so both always agree.

CTI_OUTPUTS_BASE may be an object store URL (s3://bucket/prefix, with the `s3` extra; an
S3-compatible server such as MinIO through AWS_ENDPOINT_URL). Tables there are read and written
through file handles, a row group at a time, as on a local disk: memory follows CTI_BATCH_ROWS,
not the size of the day."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
from upath import UPath

from cti_assets import settings
from cti_assets.storage.parquet import FrameBatches, StoredTable


def local_path(path: UPath) -> Path | None:
    """The path on this machine's file system, or None for object stores and the like."""
    return Path(path.path) if path.protocol in ("", "file", "local") else None


# Object store handles: reads fetch the ranges pyarrow asks for (a column chunk of a row group)
# plus at most READ_AHEAD bytes; writes upload a part each WRITE_PART bytes (S3's minimum).
READ_AHEAD = 1 << 20
WRITE_PART = 5 << 20


class TableReplacedError(Exception):
    """The stored table was replaced while it was being read: another run of the same asset and
    day finished writing it. On a local disk a reader keeps the file it opened (the writer
    renames a new one into place); an object store serves only its newest version, so the read
    cannot go on consistently and has to start again, on the new table."""


def _replaced_errors() -> tuple[type[BaseException], ...]:
    """What the object store clients raise when an object changed under an open handle."""
    try:
        from s3fs.utils import FileExpired
    except ImportError:  # no s3 extra: no S3 handles either
        return ()
    return (FileExpired,)


class _ObjectStoreTable(StoredTable):
    """A stored table on an object store, whose replacement mid-read raises TableReplacedError."""

    def __init__(self, path: UPath, columns: list[str] | None = None) -> None:
        self.where = str(path)
        path.fs.invalidate_cache(path.path)  # a cached ETag may be an older version's
        handle = path.fs.open(path.path, "rb", block_size=READ_AHEAD, cache_type="readahead")
        with self._replacement_noticed():
            super().__init__(handle, columns)

    @contextmanager
    def _replacement_noticed(self) -> Iterator[None]:
        try:
            yield
        except _replaced_errors() as exc:
            raise TableReplacedError(f"{self.where} was replaced while it was being read (another "
                                "run of the same day wrote it); read it again") from exc

    def read(self) -> pd.DataFrame:
        with self._replacement_noticed():
            return super().read()

    def column(self, name: str) -> pa.Array:
        with self._replacement_noticed():
            return super().column(name)

    def tables(self, rows: int) -> Iterator[pa.Table]:
        with self._replacement_noticed():
            yield from super().tables(rows)


def open_table(path: UPath, columns: list[str] | None = None) -> StoredTable:
    """A stored table, local or on an object store, read as needed (never fetched whole). An
    object replaced while it is read raises TableReplacedError."""
    local = local_path(path)
    if local is not None:
        return StoredTable(local, columns)
    return _ObjectStoreTable(path, columns)


def write_table(path: UPath, batches: FrameBatches) -> None:
    """Write `batches` to `path`; readers never see a half-written table. On a local disk the
    slices go to a hidden file renamed at the end; on an object store to a multipart upload
    completed at the end, or aborted when the frames fail (the object store's rename)."""
    local = local_path(path)
    if local is None:
        handle = path.fs.open(path.path, "wb", block_size=WRITE_PART)
        try:
            batches.write(handle)
        except BaseException:
            handle.discard()  # abort the upload: no object, no part kept
            handle.closed = True  # nothing left to flush when the handle is collected
            raise
        handle.close()
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f".{local.name}.{os.getpid()}.partial")
    try:
        batches.write(partial)
        os.replace(partial, local)
    finally:
        partial.unlink(missing_ok=True)


def partition_path(asset_name: str, partition_key: str, base_path: str | None = None) -> UPath:
    return UPath(base_path or settings.outputs_base()) / asset_name / f"{partition_key}.parquet"


def read_partition(
    asset_name: str, partition_key: str, base_path: str | None = None
) -> pd.DataFrame:
    """Read one asset partition outside Dagster (CLI, export, benchmarks)."""
    return open_table(partition_path(asset_name, partition_key, base_path)).read()


def stored_partitions(asset_name: str, base_path: str | None = None) -> list[str]:
    """Partition keys with a stored output for the asset, sorted."""
    folder = UPath(base_path or settings.outputs_base()) / asset_name
    if not folder.exists():
        return []
    return sorted(
        p.name.removesuffix(".parquet") for p in folder.iterdir() if p.suffix == ".parquet"
    )
