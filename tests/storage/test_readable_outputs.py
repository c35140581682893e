"""Every Parquet output of a materialised day reads with no special options: plain
`pandas.read_parquet(path)`, pyarrow, DuckDB and polars (the last two skipped when not
installed), with the same rows and columns each way and list columns as lists."""

from __future__ import annotations

import importlib.util

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DAY = "2026-11-20"
pytestmark = pytest.mark.slow

# Assets that store no table (write-back reports to OpenCTI or the local store instead).
NO_TABLE = {"opencti_writeback"}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The output files of one day materialised in process against the sandbox."""
    from cti_assets.cli import demo, runs
    from cti_assets.sandbox import ProviderSandbox
    from cti_assets.storage.outputs import local_path, partition_path

    data = tmp_path_factory.mktemp("readable") / "data"
    with pytest.MonkeyPatch.context() as mp, ProviderSandbox(port=0) as sandbox:
        mp.setenv("CTI_DATA_DIR", str(data))
        for name in ("DAGSTER_HOME", "CTI_OUTPUTS_BASE", "OPENCTI_URL", "CTI_SOURCE",
                     "CTI_PARTITIONS_START", "CTI_BATCH_ROWS"):
            mp.delenv(name, raising=False)
        for name, value in sandbox.base_urls.items():
            mp.setenv(name, value)
        for provider in demo.KEYED_PROVIDERS:
            mp.setenv(f"{provider}_API_KEY", "test-key")
        for name, value in {"VIRUSTOTAL_PER_MINUTE": "6000", "VIRUSTOTAL_PER_DAY": "100000",
                            "SECURITYTRAILS_PER_MONTH": "100000", "SHODAN_PER_SECOND": "100",
                            "GREYNOISE_PER_SECOND": "100", "ABUSEIPDB_PER_SECOND": "100",
                            "SHODAN_INTERNETDB_PER_SECOND": "100",
                            "SECURITYTRAILS_PER_SECOND": "100"}.items():
            mp.setenv(name, value)
        demo.import_sample((DAY,))
        defs = runs.load_defs()
        result = defs.resolve_job_def("enrichment").execute_in_process(
            partition_key=DAY, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )
        assert result.success
        names = sorted(
            key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()
        )
        files = {
            name: local_path(partition_path(name, DAY)) for name in names if name not in NO_TABLE
        }
        yield files


def list_columns(path) -> list[str]:
    schema = pq.read_schema(path)
    return [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]


def test_every_table_asset_stored_a_file_with_list_columns_among_them(outputs):
    assert len(outputs) >= 10
    missing = [name for name, path in outputs.items() if not path.exists()]
    assert not missing
    assert any(list_columns(path) for path in outputs.values())  # the case that used to fail


def test_plain_pandas_reads_every_output(outputs):
    for name, path in outputs.items():
        frame = pd.read_parquet(path)
        assert len(frame) == pq.ParquetFile(path).metadata.num_rows, name
        assert list(frame.columns) == pq.read_schema(path).names, name
        for column in list_columns(path):
            values = frame[column].dropna()
            assert all(hasattr(v, "__len__") and not isinstance(v, str) for v in values), (
                name, column)


def test_pyarrow_reads_every_output_and_converts_it_to_pandas(outputs):
    for name, path in outputs.items():
        table = pq.read_table(path)
        assert table.num_rows == len(table.to_pandas()), name


def test_our_reader_still_gives_arrow_backed_lists(outputs):
    from cti_assets.storage.outputs import read_partition

    for name, path in outputs.items():
        frame = read_partition(name, DAY)
        for column in list_columns(path):
            assert isinstance(frame[column].dtype, pd.ArrowDtype), (name, column)


@pytest.mark.skipif(importlib.util.find_spec("duckdb") is None, reason="duckdb not installed")
def test_duckdb_reads_every_output(outputs):
    import duckdb

    with duckdb.connect() as connection:
        for name, path in outputs.items():
            rows = connection.execute("select * from read_parquet(?)", [str(path)]).fetchall()
            assert len(rows) == pq.ParquetFile(path).metadata.num_rows, name


@pytest.mark.skipif(importlib.util.find_spec("polars") is None, reason="polars not installed")
def test_polars_reads_every_output(outputs):
    import polars as pl

    for name, path in outputs.items():
        frame = pl.read_parquet(path)
        assert frame.height == pq.ParquetFile(path).metadata.num_rows, name
