"""The Parquet IO manager stores one file per asset and partition, lists included."""

import dagster as dg
import pandas as pd

from cti_assets.defs.io import ParquetIOManagerFactory, read_partition, stored_partitions


def test_round_trip_per_partition(tmp_path):
    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")

    @dg.asset(partitions_def=daily)
    def table(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"day": [context.partition_key], "tags": [["a", "b"]], "score": [7]})

    @dg.asset(partitions_def=daily)
    def downstream(table: pd.DataFrame) -> pd.DataFrame:
        return table.assign(score=table["score"] * 2)

    io_manager = ParquetIOManagerFactory(base_path=str(tmp_path))
    for day in ("2026-01-01", "2026-01-02"):
        result = dg.materialize(
            [table, downstream], partition_key=day, resources={"io_manager": io_manager}
        )
        assert result.success

    assert stored_partitions("table", str(tmp_path)) == ["2026-01-01", "2026-01-02"]
    second = read_partition("downstream", "2026-01-02", str(tmp_path))
    assert second["day"].tolist() == ["2026-01-02"]
    assert list(second["tags"].iloc[0]) == ["a", "b"]
    assert second["score"].tolist() == [14]
