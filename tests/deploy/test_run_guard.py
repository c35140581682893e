"""The run guard: one run per day at a time, whichever tag form the run carries.

The queue's decision is Dagster's own: the queued-run daemon's selection of the runs to launch
(`_get_runs_to_dequeue`, the step a daemon tick takes before launching) over runs submitted
through the instance's configured coordinator, on the repository's dagster.yaml."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.run_coordinator import SubmitRunContext
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from cti_assets.defs.run_guard import (
    PARTITION_LIMIT,
    PARTITION_TAG,
    PartitionGuardRunCoordinator,
    partition_of,
)
from tests.deploy.conftest import REPO, instance_yaml

DAY, OTHER_DAY = "2026-11-20", "2026-11-21"
SENSOR_TAGS = {"dagster/partition": DAY, "cti/trigger": "sensor"}
BACKFILL_TAGS = {
    "dagster/asset_partition_range_start": DAY,
    "dagster/asset_partition_range_end": DAY,
    "dagster/backfill": "abcdefgh",
}


@dg.op
def noop() -> None:
    return None


@dg.job
def day_job() -> None:
    noop()


def test_partition_of_reads_both_tag_forms():
    assert partition_of(SENSOR_TAGS) == DAY
    assert partition_of(BACKFILL_TAGS) == DAY
    assert partition_of({**BACKFILL_TAGS, "dagster/asset_partition_range_end": OTHER_DAY}) == (
        f"{DAY}...{OTHER_DAY}"
    )
    assert partition_of({"dagster/backfill": "x"}) is None


@pytest.mark.parametrize("path", ["dagster.yaml", "deploy/dagster.yaml"])
def test_both_instance_configs_carry_the_guard(path):
    config = yaml.safe_load((REPO / path).read_text())
    coordinator = config["run_coordinator"]
    assert (coordinator["module"], coordinator["class"]) == (
        "cti_assets.defs.run_guard", "PartitionGuardRunCoordinator")
    assert PARTITION_LIMIT in config["concurrency"]["runs"]["tag_concurrency_limits"]


ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("cti_assets"), "__repository__"),
    day_job.name,
)


def _submit(instance, tags):
    run = instance.create_run_for_job(job_def=day_job, tags=tags, remote_job_origin=ORIGIN)
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))


def _to_launch(instance) -> list[str]:
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    runs = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
    return [run.run_id for run in runs]


def _start(instance, run) -> None:
    instance.handle_run_event(
        run.run_id, DagsterEvent(DagsterEventType.RUN_START.value, job_name=day_job.name))


def check_guard(instance) -> None:
    assert isinstance(instance.run_coordinator, PartitionGuardRunCoordinator)
    # the daemon looks at the queue every second (a sensor run's wait, bench/latency.py), and
    # the concurrency block still sets the limits
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
    sensor = _submit(instance, SENSOR_TAGS)
    backfill = _submit(instance, BACKFILL_TAGS)
    other = _submit(instance, {"dagster/partition": OTHER_DAY})
    assert sensor.status == dg.DagsterRunStatus.QUEUED
    assert (sensor.tags[PARTITION_TAG], backfill.tags[PARTITION_TAG]) == (DAY, DAY)
    assert instance.get_run_by_id(backfill.run_id).tags[PARTITION_TAG] == DAY

    # Nothing runs yet: of the two runs of DAY only the first goes, the other day goes too.
    assert _to_launch(instance) == [sensor.run_id, other.run_id]

    # The sensor's run of DAY is in progress: the backfill's run of DAY waits, whatever its form.
    _start(instance, sensor)
    assert _to_launch(instance) == [other.run_id]

    # Once it is over, the backfill's run goes.
    instance.handle_run_event(
        sensor.run_id, DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=day_job.name))
    assert _to_launch(instance) == [backfill.run_id, other.run_id]


def test_one_run_per_day_on_a_sqlite_instance(tmp_path):
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(REPO / "dagster.yaml")))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        check_guard(instance)


@pytest.mark.services
def test_one_run_per_day_on_a_postgres_instance(postgres_home):
    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        check_guard(instance)


def test_without_the_coordinator_the_two_forms_do_not_see_each_other(tmp_path):
    """Why the coordinator: limits on the two raw tag keys let both runs of a day go."""
    config = instance_yaml(REPO / "dagster.yaml")
    del config["run_coordinator"]
    config["concurrency"]["runs"]["tag_concurrency_limits"] = [
        {"key": key, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        for key in ("dagster/partition", "dagster/asset_partition_range_start")
    ]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        sensor = _submit(instance, SENSOR_TAGS)
        backfill = _submit(instance, BACKFILL_TAGS)
        _start(instance, sensor)
        assert _to_launch(instance) == [backfill.run_id]
