"""Property tests over the calendar: any mix of empty, single, rejected-only and busy days is
materialised day by day and then backfilled by the daemon's own backfill loop, on one real
instance; every run succeeds and every observable of a day has a row with a status in each of
the day's tables."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti_assets.providers.base import ALL_PROVIDERS

pytestmark = pytest.mark.slow

FIRST_DAY = datetime(2026, 11, 10, tzinfo=UTC)
LOCATION = Path(__file__).with_name("calendar_location.py")
FAST_LIMITS = {
    f"{provider}_PER_SECOND": "100"
    for provider in (p.upper() for p in ALL_PROVIDERS)
} | {"VIRUSTOTAL_PER_MINUTE": "6000", "VIRUSTOTAL_PER_DAY": "100000", "CROWDSEC_PER_DAY": "100000",
     "SECURITYTRAILS_PER_MONTH": "100000"}
VALID = [("ipv4-addr", "8.8.4.4"), ("domain-name", "example.org"), ("url", "https://example.com/a")]
OUT_OF_SCOPE = [("email-addr", "analyst@example.org")]
INVALID = [("ipv4-addr", "300.1.2.3"), ("domain-name", "bad domain!")]
DAY_KINDS = st.sampled_from(["empty", "one", "rejected_only", "busy"])


def _objects(kind: str, draw_index: int) -> list[dict]:
    picked = {
        "empty": [],
        "one": VALID[draw_index % len(VALID):][:1],
        "rejected_only": INVALID,
        "busy": VALID + INVALID[:1] + OUT_OF_SCOPE,
    }[kind]
    return [
        {"type": stix_type, "spec_version": "2.1", "id": f"{stix_type}--{uuid.uuid4()}",
         "value": value}
        for stix_type, value in picked
    ]


def _sandbox_env(sandbox) -> dict[str, str]:
    from cti_assets.cli import demo

    env = dict(sandbox.base_urls) | FAST_LIMITS
    env |= {f"{provider}_API_KEY": "test-key" for provider in demo.KEYED_PROVIDERS}
    return env


def _in_process_instance():
    """A real instance on SQLite whose runs (the backfill's too) execute in this process."""
    return instance_for_test(overrides={
        "run_coordinator": {"module": "dagster._core.run_coordinator",
                            "class": "DefaultRunCoordinator"},
        "run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                         "class": "SyncInMemoryRunLauncher"},
    })


def _backfill(instance: dg.DagsterInstance, keys: list[str]) -> list[dg.DagsterRun]:
    """Run an asset backfill of the whole graph over `keys` with the daemon's loop."""
    from cti_assets.cli.runs import load_defs

    graph = load_defs().resolve_asset_graph()
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=graph, partition_names=keys,
        asset_selection=list(graph.get_all_asset_keys()), backfill_timestamp=time.time(),
        tags={}, dynamic_partitions_store=instance, all_partitions=False, title=None,
        description=None, run_config=None))
    origin = LoadableTargetOrigin(python_file=str(LOCATION), attribute="defs",
                                  working_directory=os.getcwd())
    target = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin))
    with WorkspaceProcessContext(instance, target) as workspace:
        for _ in range(len(keys) + 5):
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
            if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
                break
    assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    return list(instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id})))


def _assert_every_observable_has_a_row(day: str, objects: list[dict]) -> None:
    from cti_assets.storage.outputs import read_partition

    ids = sorted(obj["id"] for obj in objects)
    observables = read_partition("observables", day)
    assert sorted(observables["stix_id"]) == ids
    assert observables["status"].notna().all()
    for asset in ("network_context_lookups", "virustotal_lookups", "merged_enrichment",
                  "threat_context", "observable_scores"):
        table = read_partition(asset, day)
        assert sorted(table["stix_id"]) == ids, asset
    scores = read_partition("observable_scores", day)
    assert scores["observable_status"].notna().all()
    statuses = dict(zip(observables["stix_id"], observables["status"], strict=True))
    assert dict(zip(scores["stix_id"], scores["observable_status"], strict=True)) == statuses
    assert scores["explanation"].str.strip().str.len().gt(0).all()


@pytest.fixture(scope="module")
def sandbox():
    from cti_assets.sandbox import ProviderSandbox

    with ProviderSandbox(port=0) as running:
        yield running


@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(DAY_KINDS, min_size=2, max_size=2), materialised_first=st.integers(0, 1),
       draw_index=st.integers(0, 2))
def test_any_mix_of_empty_and_busy_days_succeeds_and_keeps_every_observable(
    sandbox, kinds, materialised_first, draw_index
):
    from cti_assets.cli.runs import load_defs
    from cti_assets.sources.local import LocalStixStore

    with tempfile.TemporaryDirectory() as data_dir, mock.patch.dict(
        os.environ, {"CTI_DATA_DIR": data_dir, "CTI_SOURCE": "local", **_sandbox_env(sandbox)}
    ):
        os.environ.pop("OPENCTI_URL", None)
        days = [(FIRST_DAY + timedelta(days=n)).date().isoformat() for n in range(len(kinds))]
        objects = {day: _objects(kind, draw_index) for day, kind in zip(days, kinds, strict=True)}
        store = LocalStixStore()
        for n, day in enumerate(days):
            if objects[day]:
                store.write_objects(objects[day],
                                    first_seen_at=FIRST_DAY + timedelta(days=n, hours=9))

        job = load_defs().resolve_job_def("enrichment")
        with _in_process_instance() as instance:
            for day in days[:materialised_first]:
                result = job.execute_in_process(partition_key=day, instance=instance,
                                                raise_on_error=False)
                assert result.success, day
                assert all(check.passed for check in result.get_asset_check_evaluations())
                _assert_every_observable_has_a_row(day, objects[day])
            runs = _backfill(instance, days)
            assert len(runs) == len(days)
            assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
            for day in days:
                _assert_every_observable_has_a_row(day, objects[day])
            sent = {request.observable for request in sandbox.requests}
            assert not sent & {value for _, value in OUT_OF_SCOPE + INVALID}
            written = instance.get_materialized_partitions(dg.AssetKey("opencti_writeback"))
            assert set(days) <= written
