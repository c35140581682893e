"""Who frees a dead run. The CLI's reaper (cti_assets/cli/runs.reap_dead_runs): a STARTED run
whose process is gone is marked FAILURE and its pool slots freed; a run whose process lives is
left alone. The daemon (dagster.yaml run_monitoring): a failed run's slots are freed after
free_slots_after_run_end_seconds. Fast: runs are written into a real SQLite instance directly
(the long kill -9 scenario is test_killed_runs.py)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import dagster as dg
from dagster._core.events import EngineEventData
from dagster._core.storage.dagster_run import DagsterRun

from cti_assets.cli.runs import PROJECT_DAGSTER_YAML, reap_dead_runs


def started_run(instance, pid: int, pool: str) -> str:
    run = instance.add_run(DagsterRun(job_name="enrichment",
                                      status=dg.DagsterRunStatus.STARTED))  # fmt: skip
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run,
                                 EngineEventData.in_process(pid))  # fmt: skip
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot(pool, run.run_id, "a_step").is_claimed
    return run.run_id


def test_dead_run_is_failed_and_freed_live_run_untouched(tmp_path, capsys):
    shutil.copyfile(PROJECT_DAGSTER_YAML, tmp_path / "dagster.yaml")
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    child.wait()  # exited and reaped: no process has its pid any more
    dead_pid = child.pid
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots("dead_pool", 1)
        instance.event_log_storage.set_concurrency_slots("live_pool", 1)
        dead = started_run(instance, dead_pid, "dead_pool")
        live = started_run(instance, os.getpid(), "live_pool")

        assert reap_dead_runs(instance) == [dead]
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
        info = instance.event_log_storage.get_concurrency_info
        assert info("dead_pool").claimed_slots == []
        assert [s.run_id for s in info("live_pool").claimed_slots] == [live]
        assert reap_dead_runs(instance) == []  # once
    assert f"run {dead} was left STARTED by process {dead_pid}" in capsys.readouterr().err


def test_daemon_frees_a_failed_runs_slots_after_the_configured_time(tmp_path, monkeypatch):
    """Under `make dev`: the code server marks a run whose worker died FAILURE (its slots still
    held); the monitoring daemon's slot iteration, with the project's dagster.yaml, frees them
    once free_slots_after_run_end_seconds have passed, not before. The daemon's clock is moved
    instead of waiting."""
    from datetime import timedelta

    from dagster._daemon.monitoring import concurrency

    shutil.copyfile(PROJECT_DAGSTER_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        wait_s = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        assert 0 < wait_s <= 60 and instance.run_monitoring_poll_interval_seconds <= 60
        instance.event_log_storage.set_concurrency_slots("greynoise", 1)
        run_id = started_run(instance, os.getpid(), "greynoise")
        instance.report_run_failed(instance.get_run_by_id(run_id), "run worker exited")

        class Context:  # what the daemon hands the iteration: the instance
            def __init__(self, inst) -> None:
                self.instance = inst

        def held() -> list[str]:
            slots = instance.event_log_storage.get_concurrency_info("greynoise").claimed_slots
            return [s.run_id for s in slots]

        real_now = concurrency.get_current_datetime
        log = logging.getLogger(__name__)
        list(concurrency.execute_concurrency_slots_iteration(Context(instance), log))
        assert held() == [run_id]  # too early
        monkeypatch.setattr(concurrency, "get_current_datetime",
                            lambda: real_now() + timedelta(seconds=wait_s + 1))
        list(concurrency.execute_concurrency_slots_iteration(Context(instance), log))
        assert held() == []


def test_a_zombie_run_process_counts_as_dead(tmp_path):
    """A run process killed with its parent (kill -9 of `dagster dev`'s process group) may stay
    a zombie until an init reaps it: its pid still answers kill(0), but it is dead."""
    from pathlib import Path

    from tests.reliability.support import wait_for

    shutil.copyfile(PROJECT_DAGSTER_YAML, tmp_path / "dagster.yaml")
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603 - not waited: zombie

    def state() -> str:
        return Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    try:
        wait_for(lambda: state() == "Z", 30, "the child to become a zombie")
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            instance.event_log_storage.set_concurrency_slots("zombie_pool", 1)
            run_id = started_run(instance, child.pid, "zombie_pool")
            assert reap_dead_runs(instance) == [run_id]
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        child.wait()
