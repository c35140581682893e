"""Parquet frames: exact slices across row groups, projections, typed lists, batched writes."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from cti_assets.storage.parquet import FrameBatches, StoredTable, read_frame


def _parquet(frame: pd.DataFrame) -> bytes:
    return FrameBatches([frame]).to_parquet()


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "stix_id": pd.array([f"ipv4-addr--{i:04d}" for i in range(start, start + n)],
                            dtype="string"),
        "score": pd.array([i % 100 for i in range(start, start + n)], dtype="Int64"),
        "ports": pd.array([[i, 443] if i % 3 else None for i in range(start, start + n)],
                          dtype=pd.ArrowDtype(pa.list_(pa.int64()))),
    })


def test_a_table_written_in_uneven_row_groups_reads_back_in_exact_slices():
    # Row groups of 7, 7 and 3 rows; slices of 5 must not follow them.
    stored = FrameBatches([_frame(7), _frame(7, 7), _frame(3, 14)]).to_parquet()
    table = StoredTable(stored)
    sizes = [len(frame) for frame in table.frames(5)]
    assert sizes == [5, 5, 5, 2]
    joined = pd.concat(table.frames(5), ignore_index=True)
    pd.testing.assert_frame_equal(joined, table.read())
    assert joined["stix_id"].tolist() == [f"ipv4-addr--{i:04d}" for i in range(17)]
    assert joined.loc[1, "ports"] == [1, 443] and pd.isna(joined.loc[3, "ports"])


def test_strings_and_lists_come_back_arrow_backed_with_their_item_type():
    frame = read_frame(_parquet(_frame(4)))
    assert frame["stix_id"].dtype == pd.StringDtype("pyarrow")
    assert frame["ports"].dtype == pd.ArrowDtype(pa.list_(pa.int64()))
    assert frame["score"].dtype == "Int64"


def test_columns_are_projected_and_unknown_ones_ignored():
    table = StoredTable(_parquet(_frame(4)), columns=["stix_id", "not_there"])
    assert table.columns == ["stix_id"] and table.num_rows == 4
    assert list(table.read().columns) == ["stix_id"]
    assert [list(f.columns) for f in table.frames(3)] == [["stix_id"], ["stix_id"]]
    assert table.column("stix_id").to_pylist()[-1] == "ipv4-addr--0003"


def test_an_empty_table_still_gives_one_empty_slice_with_its_columns():
    frames = list(StoredTable(_parquet(_frame(0))).frames(10))
    assert len(frames) == 1 and frames[0].empty
    assert list(frames[0].columns) == ["stix_id", "score", "ports"]


def test_batches_with_an_all_null_column_keep_the_first_schema():
    later = _frame(2, 5).assign(ports=pd.array([None, None], dtype=object))
    stored = FrameBatches([_frame(3), later]).to_parquet()
    back = read_frame(stored)
    assert len(back) == 5 and back["ports"].isna().tolist()[3:] == [True, True]


def test_bad_batches_get_a_clear_error():
    with pytest.raises(ValueError, match="at least one frame"):
        FrameBatches([]).to_parquet()
    with pytest.raises(ValueError, match="at least one row"):
        list(StoredTable(_parquet(_frame(2))).frames(0))
