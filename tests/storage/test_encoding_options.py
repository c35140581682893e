"""Batched outputs choose each Parquet column's encoding from the data: dictionary encoding
and statistics for columns whose values repeat (leaf columns of lists and structs too), plain
and without statistics for nearly distinct ones; every reader gets the same values back."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cti_assets.scoring.components import COMPONENT_TYPE
from cti_assets.storage.parquet import FrameBatches, StoredTable, encoding_options

ROWS = 2_000


def _frame(rows: int = ROWS) -> pd.DataFrame:
    index = np.arange(rows)
    items = [[{"rule": "vt_malicious", "provider": "virustotal", "field": "malicious",
               "value_json": str(i % 3), "contribution": 12.5, "raw_digest": f"{i:064x}"}]
             for i in index]
    return pd.DataFrame({
        "stix_id": pd.array([f"ipv4-addr--{i:036x}" for i in index], dtype="string[pyarrow]"),
        "status": pd.array(np.where(index % 7 == 0, "error", "ok"), dtype="string[pyarrow]"),
        "score": pd.array(index % 100, dtype="Int64"),
        "tags": pd.arrays.ArrowExtensionArray(pa.array([["tor"] if i % 2 else [] for i in index],
                                                        pa.list_(pa.string()))),
        "components": pd.arrays.ArrowExtensionArray(pa.array(items, COMPONENT_TYPE)),
    })


def _encodings(data: bytes) -> dict[str, set[str]]:
    """Leaf column path -> the encodings of its chunks, over every row group."""
    metadata = pq.ParquetFile(pa.BufferReader(data)).metadata
    out: dict[str, set[str]] = {}
    for group in range(metadata.num_row_groups):
        for i in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(i)
            out.setdefault(chunk.path_in_schema, set()).update(chunk.encodings)
    return out


def _has_statistics(data: bytes, path: str) -> bool:
    metadata = pq.ParquetFile(pa.BufferReader(data)).metadata
    for i in range(metadata.num_columns):
        chunk = metadata.row_group(0).column(i)
        if chunk.path_in_schema == path:
            return chunk.is_stats_set
    raise KeyError(path)


def test_distinct_columns_plain_repeating_ones_dictionary():
    frame = _frame()
    data = FrameBatches([frame.iloc[:ROWS // 2], frame.iloc[ROWS // 2:]]).to_parquet()
    encodings = _encodings(data)
    dictionary = {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}
    for path in ("stix_id", "components.list.element.raw_digest"):
        assert not encodings[path] & dictionary, path
        assert not _has_statistics(data, path), path
    for path in ("status", "score", "tags.list.element", "components.list.element.rule",
                 "components.list.element.value_json"):
        assert encodings[path] & dictionary, path
        assert _has_statistics(data, path), path


def test_values_and_schema_as_with_default_encoding():
    frame = _frame()
    ours = pq.read_table(pa.BufferReader(FrameBatches([frame]).to_parquet()))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    default = io.BytesIO()
    pq.write_table(table, default)
    theirs = pq.read_table(pa.BufferReader(default.getvalue()))
    assert ours.equals(theirs)
    back = StoredTable(FrameBatches([frame]).to_parquet()).read()
    assert back["stix_id"].tolist() == frame["stix_id"].tolist()
    assert back["components"].tolist() == frame["components"].tolist()


def test_empty_and_tiny_frames_keep_working():
    empty = _frame().iloc[:0]
    assert encoding_options(pa.Table.from_pandas(empty, preserve_index=False))["use_dictionary"]
    assert StoredTable(FrameBatches([empty]).to_parquet()).num_rows == 0
    assert StoredTable(FrameBatches([_frame(3)]).to_parquet()).read()["score"].tolist() == [0, 1, 2]


def test_types_not_laid_out_fall_back_to_defaults():
    table = pa.table({"m": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64()))})
    assert encoding_options(table) == {}
