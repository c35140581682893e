"""Parquet tables as pandas frames, whole or a slice of rows at a time.

A day can hold a million observables; re-scoring it must fit a small worker. So besides
reading a frame whole, a stored table can be read in exact slices of rows (`StoredTable`) and
an output can be written from a stream of frames (`FrameBatches`), keeping memory bounded by
the slice size. Frames come back Arrow-backed where pandas allows it: "string" columns as
pyarrow strings and list columns as Arrow lists, so no Python object is made per value and
list columns keep their item type across the round trip.

The files themselves need no reader of ours: the pandas metadata written into the schema names
only dtypes plain pandas can rebuild (an Arrow list dtype is recorded as `object`, which is what
`pandas.read_parquet(path)` then gives: Python lists), so pandas, pyarrow, DuckDB and polars
read every output with no options.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def read_frame(parquet: bytes, columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame from Parquet bytes (only `columns` when given)."""
    return to_frame(pq.read_table(pa.BufferReader(parquet), columns=columns))


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas, with Arrow-backed strings and lists."""
    table = _metadata_of_present_columns(table)
    with pd.option_context("mode.string_storage", "pyarrow"):
        return table.to_pandas(types_mapper=_lists_as_arrow)


def _lists_as_arrow(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pd.ArrowDtype(arrow_type)
    return None


def _metadata_of_present_columns(table: pa.Table) -> pa.Table:
    """Drop the pandas metadata of columns a projection left out: pyarrow would still try to
    rebuild their dtypes, and cannot for Arrow list dtypes."""
    metadata = table.schema.metadata or {}
    if b"pandas" not in metadata:
        return table
    pandas_metadata = json.loads(metadata[b"pandas"])
    present = set(table.column_names)
    columns = pandas_metadata.get("columns", [])
    kept = [c for c in columns if c.get("field_name", c.get("name")) in present]
    if len(kept) == len(columns):
        return table
    pandas_metadata["columns"] = kept
    return table.replace_schema_metadata({**metadata, b"pandas": json.dumps(pandas_metadata)})


def readable_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with pandas metadata that plain `pandas.read_parquet` can follow: a column whose
    recorded dtype pandas cannot rebuild by name (an Arrow list such as
    `list<item: string>[pyarrow]`) is recorded as `object`. Our own reader maps list columns
    back to Arrow dtypes itself (to_frame), so nothing is lost."""
    metadata = schema.metadata or {}
    if b"pandas" not in metadata:
        return schema
    pandas_metadata = json.loads(metadata[b"pandas"])
    changed = False
    for column in pandas_metadata.get("columns", []):
        recorded = column.get("numpy_type")
        if isinstance(recorded, str) and not _pandas_knows(recorded):
            column["numpy_type"] = "object"
            changed = True
    if not changed:
        return schema
    return schema.with_metadata({**metadata, b"pandas": json.dumps(pandas_metadata).encode()})


def _pandas_knows(dtype_name: str) -> bool:
    try:
        pd.api.types.pandas_dtype(dtype_name)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class FrameBatches:
    """An asset output produced as consecutive frames of the same columns and dtypes."""

    frames: Iterable[pd.DataFrame]
    # Called once every frame is written: metadata only known at the end (row counts, ...).
    metadata: Callable[[], dict[str, Any]] | None = None

    def to_parquet(self) -> bytes:
        """All frames as the bytes of one Parquet file."""
        buffer = io.BytesIO()
        self.write(buffer)
        return buffer.getvalue()

    def write(self, sink: str | Path | BinaryIO) -> None:
        """All frames into one Parquet file (a row group or more per frame). A frame is
        encoded and written on a second thread while the next one is computed."""
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        writing: Future | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer") as pool:
            try:
                for frame in self.frames:
                    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                    if writer is None:
                        schema = readable_schema(table.schema)
                        writer = pq.ParquetWriter(sink, schema)
                    table = table.replace_schema_metadata(writer.schema.metadata)
                    if writing is not None:
                        writing.result()
                    writing = pool.submit(writer.write_table, table)
                if writing is not None:
                    writing.result()
            finally:
                if writing is not None:
                    writing.exception()  # let a write in flight end before closing
                if writer is not None:
                    writer.close()
        if writer is None:
            raise ValueError("a batched output needs at least one frame, even an empty one")


class StoredTable:
    """A stored Parquet table read whole, one column at a time, or in slices of rows."""

    def __init__(self, parquet: bytes | str | Path | BinaryIO, columns: list[str] | None = None):
        """`parquet`: the file's bytes, a local path or a seekable binary file (an object store's
        file handle, say); paths and handles are read as needed, not held in memory."""
        if isinstance(parquet, bytes):
            self._source: Any = pa.BufferReader(parquet)
        elif isinstance(parquet, str | Path):
            self._source = str(parquet)
        else:
            self._source = parquet
        # No pre-buffering: pyarrow (26) would otherwise fetch every row group of an iteration
        # up front, the whole table for a slice, on a local disk and an object store alike.
        self._file = pq.ParquetFile(self._source, pre_buffer=False)
        present = self._file.schema_arrow.names
        self.columns = [c for c in columns if c in present] if columns is not None else present
        self.num_rows = self._file.metadata.num_rows

    def project(self, columns: list[str]) -> StoredTable:
        """The same stored table, reading only those of `columns` it reads now."""
        projected = copy.copy(self)
        projected.columns = [c for c in columns if c in self.columns]
        return projected

    def read(self) -> pd.DataFrame:
        return to_frame(self._file.read(columns=self.columns))

    def column(self, name: str) -> pa.Array:
        """One column as a single Arrow array."""
        return self._file.read(columns=[name]).column(name).combine_chunks()

    def tables(self, rows: int) -> Iterator[pa.Table]:
        """Consecutive slices of exactly `rows` rows (the last one shorter); at least one."""
        if rows < 1:
            raise ValueError("a slice needs at least one row")
        pending: list[pa.RecordBatch] = []
        held = 0
        schema = self._file.schema_arrow.remove_metadata()
        metadata = self._file.schema_arrow.metadata
        projected = pa.schema([schema.field(c) for c in self.columns], metadata=metadata)
        yielded = False
        # One decoding thread: `frames` already decodes beside the caller, and Arrow's own
        # thread pool only adds contention on a small worker.
        for batch in self._file.iter_batches(batch_size=rows, columns=self.columns,
                                             use_threads=False):
            pending.append(batch)
            held += batch.num_rows
            while held >= rows:
                table = pa.Table.from_batches(pending, schema=projected)
                yield table.slice(0, rows)
                yielded = True
                rest = table.slice(rows)
                pending, held = rest.to_batches(), rest.num_rows
        if held or not yielded:
            yield pa.Table.from_batches(pending, schema=projected)

    def frames(self, rows: int) -> Iterator[pd.DataFrame]:
        """`tables` as pandas frames; the next slice is decoded on a second thread meanwhile."""
        for table in self.tables_ahead(rows):
            yield to_frame(table)

    def tables_ahead(self, rows: int) -> Iterator[pa.Table]:
        """`tables`, the next slice decoded on a second thread while the caller uses this one
        (for callers that take the slices as Arrow, without a pandas frame)."""
        tables = self.tables(rows)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-reader") as pool:
            ahead = pool.submit(next, tables, None)
            while (table := ahead.result()) is not None:
                ahead = pool.submit(next, tables, None)
                yield table
