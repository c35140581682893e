"""Outputs on an S3-compatible object store (moto's server, started here on loopback): the IO
manager writes and reads through it a slice at a time, a failed output leaves no object, a
sliced read fetches a slice's bytes, not the table's, and a table replaced while it is read (another
run of the same day) retries the reading step on the new table."""

import secrets

import dagster as dg
import pandas as pd
import pytest

from cti_assets.storage.parquet import FrameBatches, StoredTable

pytestmark = pytest.mark.services



@pytest.fixture
def s3_base(monkeypatch):
    s3fs = pytest.importorskip("s3fs", reason="s3fs not installed (the s3 extra)")
    server_module = pytest.importorskip("moto.server", reason="moto[server] not installed (dev)")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }.items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = f"cti-outputs-{secrets.token_hex(4)}"  # moto's store outlives its server
        s3fs.S3FileSystem().mkdir(bucket)
        yield f"s3://{bucket}/outputs"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def _assets(fail_after: int | None = None):
    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")

    @dg.asset(partitions_def=daily)
    def big(context: dg.AssetExecutionContext) -> FrameBatches:
        def frames():
            for start in range(0, 10, 4):
                if fail_after is not None and start >= fail_after:
                    raise RuntimeError("provider data went away")
                rows = range(start, min(start + 4, 10))
                yield pd.DataFrame({"n": list(rows), "day": [context.partition_key] * len(rows),
                                    "tags": [["a", str(n)] for n in rows]})

        return FrameBatches(frames(), metadata=lambda: {"written": "all"})

    @dg.asset(partitions_def=daily,
              ins={"big": dg.AssetIn(metadata={"batched": True, "columns": ["n"]})})
    def sliced(big: StoredTable) -> pd.DataFrame:
        return pd.DataFrame({"sizes": [len(f) for f in big.frames(3)],
                             "columns": [",".join(big.columns)] * 4})

    @dg.asset(partitions_def=daily)
    def whole(big: pd.DataFrame) -> pd.DataFrame:
        return big.assign(n=big["n"] * 2)

    return big, sliced, whole


def test_io_manager_writes_and_reads_slices_on_s3(s3_base):
    from cti_assets.defs.io import ParquetIOManagerFactory
    from cti_assets.storage.outputs import read_partition, stored_partitions

    io_manager = ParquetIOManagerFactory(base_path=s3_base)
    for day in ("2026-01-01", "2026-01-02"):
        result = dg.materialize(list(_assets()), partition_key=day,
                                resources={"io_manager": io_manager})
        assert result.success
    assert stored_partitions("big", s3_base) == ["2026-01-01", "2026-01-02"]
    stored = read_partition("big", "2026-01-02", s3_base)
    assert stored["n"].tolist() == list(range(10))
    assert set(stored["day"]) == {"2026-01-02"}
    assert [list(t) for t in stored["tags"].iloc[:2]] == [["a", "0"], ["a", "1"]]
    sliced = read_partition("sliced", "2026-01-01", s3_base)
    assert sliced["sizes"].tolist() == [3, 3, 3, 1]
    assert set(sliced["columns"]) == {"n"}
    assert read_partition("whole", "2026-01-01", s3_base)["n"].tolist() == list(range(0, 20, 2))


def test_a_failed_output_leaves_no_object(s3_base):
    from cti_assets.defs.io import ParquetIOManagerFactory
    from cti_assets.storage.outputs import partition_path, stored_partitions

    io_manager = ParquetIOManagerFactory(base_path=s3_base)
    big = _assets(fail_after=4)[0]
    result = dg.materialize([big], partition_key="2026-01-03",
                            resources={"io_manager": io_manager}, raise_on_error=False)
    assert not result.success
    assert not partition_path("big", "2026-01-03", s3_base).exists()
    assert stored_partitions("big", s3_base) == []


def test_a_slice_fetches_its_own_bytes_not_the_table(s3_base):
    from cti_assets.storage.outputs import open_table, partition_path, write_table

    rows, slices = 2000, 24
    frames = (pd.DataFrame({"n": range(i * rows, (i + 1) * rows),
                            "blob": [secrets.token_hex(100) for _ in range(rows)]})
              for i in range(slices))
    path = partition_path("big", "2026-01-04", s3_base)
    write_table(path, FrameBatches(frames))
    size = path.stat().st_size
    assert size > 8 * 1024 * 1024  # several multipart parts

    table = open_table(path)
    first = next(table.frames(rows))
    assert first["n"].tolist() == list(range(rows))
    fetched = table._source.cache.total_requested_bytes  # the object store handle's reads
    assert fetched < size / 4, (fetched, size)

    assert sum(len(frame) for frame in open_table(path, ["n"]).frames(rows)) == rows * slices


def _noisy_frames(slices: int, rows: int, tag: str):
    """Slices that do not compress, so a table of them spans many read-ahead blocks."""
    return (pd.DataFrame({"n": range(i * rows, (i + 1) * rows), "tag": [tag] * rows,
                          "blob": [secrets.token_hex(100) for _ in range(rows)]})
            for i in range(slices))


def test_a_table_replaced_while_read_says_so_and_a_new_read_gets_the_new_one(s3_base):
    from cti_assets.storage.outputs import (
        TableReplacedError,
        open_table,
        partition_path,
        write_table,
    )

    path = partition_path("big", "2026-01-05", s3_base)
    write_table(path, FrameBatches(_noisy_frames(12, 2000, "first run")))
    reading = open_table(path).frames(2000)
    assert set(next(reading)["tag"]) == {"first run"}
    # another run of the same day finishes writing the same table meanwhile
    write_table(path, FrameBatches(_noisy_frames(12, 2000, "second run")))
    with pytest.raises(TableReplacedError, match="read it again"):
        for _ in reading:
            pass
    again = open_table(path)
    assert {tag for frame in again.frames(2000) for tag in set(frame["tag"])} == {"second run"}


def test_a_step_whose_input_is_replaced_mid_read_is_retried_on_the_new_table(s3_base):
    from cti_assets.defs.io import ParquetIOManagerFactory
    from cti_assets.storage.outputs import partition_path, write_table

    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    day = "2026-01-06"

    @dg.asset(partitions_def=daily)
    def big() -> FrameBatches:
        return FrameBatches(_noisy_frames(12, 2000, "first run"))

    @dg.asset(partitions_def=daily, ins={"big": dg.AssetIn(metadata={"batched": True})})
    def tags_seen(context: dg.AssetExecutionContext, big: StoredTable) -> FrameBatches:
        def frames():
            for number, frame in enumerate(big.frames(2000)):
                if number == 1 and context.retry_number == 0:  # the other run finishes now
                    write_table(partition_path("big", day, s3_base),
                                FrameBatches(_noisy_frames(12, 2000, "second run")))
                yield pd.DataFrame({"tag": sorted(set(frame["tag"]))})

        return FrameBatches(frames())

    io_manager = ParquetIOManagerFactory(base_path=s3_base)
    result = dg.materialize([big, tags_seen], partition_key=day,
                            resources={"io_manager": io_manager})
    assert result.success
    retried = [e.step_key for e in result.all_events
               if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == ["tags_seen"]
    from cti_assets.storage.outputs import read_partition

    assert set(read_partition("tags_seen", day, s3_base)["tag"]) == {"second run"}
