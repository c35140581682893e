"""A small day as the sensor asks for it: through the deployment's executor (not
execute_in_process, which is always one process) with the sensor's run config, the run executes
in one process and still goes from observables to write-back; and whichever mode it executes
in, the executor holds the run's SQLite event-log database open (cti_assets/sqlite_hold.py)."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import instance_for_test

from tests.defs.test_pipeline import DAY, pipeline  # noqa: F401 (fixture)


def enrichment_job() -> dg.JobDefinition:
    from cti_assets.cli.runs import load_defs

    return load_defs().resolve_job_def("enrichment")


def _engine_messages(result) -> list[str]:
    return [e.message or "" for e in result.all_events
            if e.event_type == dg.DagsterEventType.ENGINE_EVENT]


@pytest.mark.slow
def test_a_small_day_runs_in_one_process_end_to_end(pipeline):  # noqa: F811
    from cti_assets.defs.automation import IN_PROCESS_RUN, plan_sensor_tick
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    store = LocalStixStore()
    new = store.created_since(None, None, 10_000)
    assert 0 < len(new) <= 200  # a small day: under CTI_SENSOR_IN_PROCESS_MAX's default
    (request,), _, _ = plan_sensor_tick(None, new, datetime(2026, 11, 28, tzinfo=UTC))
    assert request.partition_key == DAY and request.run_config == IN_PROCESS_RUN

    with instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(enrichment_job), instance,
                            run_config=request.run_config,
                            tags={**request.tags, "dagster/partition": DAY}) as result:
            assert result.success
            messages = _engine_messages(result)
    assert any(m.startswith("Executing steps in process") for m in messages), messages
    assert not any("multiprocess" in m.lower() for m in messages), messages

    observables = read_partition("observables", DAY)
    scores = read_partition("observable_scores", DAY)
    assert sorted(scores["stix_id"]) == sorted(observables["stix_id"])
    noted = {ref for note in store.all_objects(types=["note"])
             for ref in note.get("object_refs") or []}
    written = scores[scores["final_score"].notna()]["stix_id"]
    assert len(written) >= 1 and set(written) <= noted  # every scored observable written back


@dg.op
def wal_after_a_close(context: dg.OpExecutionContext) -> bool:
    """Write to this run's event-log database and close, as Dagster does for each event: does
    the log survive the close (somebody else holds the database open)?"""
    import sqlite3

    shard = Path(context.instance.event_log_storage.path_for_shard(context.run_id))
    conn = sqlite3.connect(shard)
    conn.execute("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
    conn.execute("INSERT INTO probe VALUES (1)")
    conn.commit()
    conn.close()
    return Path(f"{shard}-wal").exists()


def probe_job() -> dg.JobDefinition:
    from cti_assets.definitions import run_executor

    @dg.job(executor_def=run_executor())
    def probe():
        wal_after_a_close()

    return probe


@pytest.mark.parametrize("in_process", [True, False])
def test_the_executor_holds_the_run_event_log_open(in_process):
    with instance_for_test() as instance:
        run_config = {"execution": {"config": {"in_process": in_process}}}
        with dg.execute_job(dg.reconstructable(probe_job), instance,
                            run_config=run_config) as result:
            assert result.success
            assert result.output_for_node("wal_after_a_close") is True


@dg.op
def how_the_step_started() -> dict:
    """The step's own view: who forked it, and who its multiprocessing parent is."""
    import multiprocessing
    import os

    parent = multiprocessing.parent_process()
    return {"ppid": os.getppid(), "parent": parent.pid if parent is not None else None}


def _start_probe() -> dg.JobDefinition:
    from cti_assets.definitions import run_executor

    @dg.job(executor_def=run_executor())
    def start_probe():
        how_the_step_started()

    return start_probe


# one target per start method: Dagster caches a reconstructed job per target in a process
def start_probe_forkserver() -> dg.JobDefinition:
    return _start_probe()


def start_probe_spawn() -> dg.JobDefinition:
    return _start_probe()


@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_a_step_process_starts_as_configured_and_knows_its_run(monkeypatch, start):
    """forkserver (the default): the step is forked by a server that imported the definitions
    once, yet its multiprocessing parent, which cti_assets.lifeline watches, is the run's
    process, so a killed run still ends its steps. spawn: the run's process is its parent."""
    import os

    monkeypatch.setenv("CTI_STEP_START", start)
    with instance_for_test() as instance:
        target = {"forkserver": start_probe_forkserver, "spawn": start_probe_spawn}[start]
        with dg.execute_job(dg.reconstructable(target), instance,
                            run_config={"execution": {"config": {"in_process": False}}}
                            ) as result:
            assert result.success
            seen = result.output_for_node("how_the_step_started")
    assert seen["parent"] == os.getpid()  # this test's process orchestrates the run
    if start == "forkserver":
        assert seen["ppid"] != os.getpid()  # the forkserver
    else:
        assert seen["ppid"] == os.getpid()
