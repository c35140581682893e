"""The whole graph for a day on a Dagster instance backed by the machine's PostgreSQL (a
throwaway database, deploy/dagster.yaml's storage block with its psycopg2 scheme, the
repository's run queue and guard), against the provider sandbox."""

import time

import dagster as dg
import pytest

DAY = "2026-11-20"
pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_whole_graph_for_a_day_on_postgres(postgres_home, tmp_path, monkeypatch, capsys):
    from dagster_postgres import PostgresRunStorage

    from cti_assets.cli import demo, runs
    from cti_assets.sandbox import ProviderSandbox
    from cti_assets.storage.outputs import read_partition

    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(postgres_home))
    for name in ("OPENCTI_URL", "CTI_SOURCE", "CTI_OUTPUTS_BASE"):
        monkeypatch.delenv(name, raising=False)
    with ProviderSandbox(port=0) as sandbox:
        for name, value in sandbox.base_urls.items():
            monkeypatch.setenv(name, value)
        for provider in demo.KEYED_PROVIDERS:
            monkeypatch.setenv(f"{provider}_API_KEY", "test-key")
        for name in ("SHODAN", "GREYNOISE", "ABUSEIPDB", "SHODAN_INTERNETDB",
                     "SECURITYTRAILS"):
            monkeypatch.setenv(f"{name}_PER_SECOND", "100")
        monkeypatch.setenv("VIRUSTOTAL_PER_MINUTE", "6000")
        monkeypatch.setenv("VIRUSTOTAL_PER_DAY", "100000")
        monkeypatch.setenv("SECURITYTRAILS_PER_MONTH", "100000")
        demo.import_sample((DAY,))
        defs = runs.load_defs()
        with dg.DagsterInstance.get() as instance:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            started = time.monotonic()
            result = defs.resolve_job_def("enrichment").execute_in_process(
                partition_key=DAY, instance=instance, raise_on_error=False)
            wall = time.monotonic() - started
            failures = [e.event_specific_data.error.to_string() for e in result.all_events
                        if e.event_type == dg.DagsterEventType.STEP_FAILURE]
            assert result.success, failures
            assert sandbox.request_count() > 0

            # Every asset's materialization of the day is in Postgres, read back from there.
            graph = defs.resolve_asset_graph()
            for key in graph.get_all_asset_keys():
                event = instance.get_latest_materialization_event(key)
                assert event is not None, key
                assert event.dagster_event.partition == DAY
            record = instance.get_run_record_by_id(result.run_id)
            assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            assert len(read_partition("observable_scores", DAY)) > 20
    with capsys.disabled():
        print(f"\n[postgres instance] whole graph for {DAY}: {wall:.1f} s wall, "
              f"{sandbox.request_count()} provider calls, {len(graph.get_all_asset_keys())} assets")
