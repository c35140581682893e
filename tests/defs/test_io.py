"""The Parquet IO manager stores one file per asset and partition, lists included."""

import dagster as dg
import pandas as pd

from cti_assets.defs.io import ParquetIOManagerFactory
from cti_assets.storage.outputs import read_partition, stored_partitions


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


def _batched_assets(fail_after: int | None = None):
    from cti_assets.storage.parquet import FrameBatches, StoredTable

    @dg.asset
    def big() -> FrameBatches:
        def frames():
            for start in range(0, 10, 4):
                if fail_after is not None and start >= fail_after:
                    raise RuntimeError("provider data went away")
                yield pd.DataFrame({"n": list(range(start, min(start + 4, 10))),
                                    "note": ["x"] * len(range(start, min(start + 4, 10)))})

        return FrameBatches(frames(), metadata=lambda: {"written": "all"})

    @dg.asset(ins={"big": dg.AssetIn(metadata={"batched": True, "columns": ["n"]})})
    def sliced(big: StoredTable) -> pd.DataFrame:
        return pd.DataFrame({"sizes": [len(f) for f in big.frames(3)],
                             "columns": [",".join(big.columns)] * 4})

    return big, sliced


def test_batched_output_is_written_slice_by_slice_and_read_in_slices(tmp_path):
    big, sliced = _batched_assets()
    io_manager = ParquetIOManagerFactory(base_path=str(tmp_path))
    result = dg.materialize([big, sliced], resources={"io_manager": io_manager})
    assert result.success
    event = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey("big"))
    assert event.materialization.metadata["written"].value == "all"
    stored = pd.read_parquet(tmp_path / "big.parquet")
    assert stored["n"].tolist() == list(range(10))
    assert pd.read_parquet(tmp_path / "sliced.parquet")["sizes"].tolist() == [3, 3, 3, 1]
    assert set(pd.read_parquet(tmp_path / "sliced.parquet")["columns"]) == {"n"}


def test_a_failed_batched_output_leaves_the_previous_file_whole(tmp_path):
    io_manager = ParquetIOManagerFactory(base_path=str(tmp_path))
    big, _ = _batched_assets()
    assert dg.materialize([big], resources={"io_manager": io_manager}).success
    failing, _ = _batched_assets(fail_after=4)
    result = dg.materialize([failing], resources={"io_manager": io_manager},
                            raise_on_error=False)
    assert not result.success
    assert pd.read_parquet(tmp_path / "big.parquet")["n"].tolist() == list(range(10))
    assert [p.name for p in tmp_path.iterdir()] == ["big.parquet"]


def test_object_store_paths_are_written_whole_and_read_back(tmp_path):
    big, sliced = _batched_assets()
    io_manager = ParquetIOManagerFactory(base_path="memory://cti-test/outputs")
    result = dg.materialize([big, sliced], resources={"io_manager": io_manager})
    assert result.success
    from upath import UPath

    from cti_assets.storage.parquet import read_frame

    back = read_frame(UPath("memory://cti-test/outputs/sliced.parquet").read_bytes())
    assert back["sizes"].tolist() == [3, 3, 3, 1]
