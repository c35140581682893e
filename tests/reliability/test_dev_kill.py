"""kill -9 of a run under `make dev` (issue 20 item 4), end to end.

`cti-assets dev` is the provider sandbox, the pool limits set on the instance, the sensor
switched on, then `dagster dev -w workspace.yaml` (webserver, daemon, code server) with the
project's dagster.yaml. Here the same: the sandbox lives in the test (so requests are counted
at it), the pools get the project's limits through the instance, and `dagster dev` runs as a
process in its own session on a throwaway data directory and Dagster home. The sensor (tick
every 2 s instead of 15, to start sooner) sees the imported day and asks the run queue for a
run, which the daemon launches through the code server: a run worker process (a
multiprocessing child of the code server) whose steps are processes of their own (80
observables with CTI_SENSOR_IN_PROCESS_MAX=50: the multiprocess executor, as for any day over
the threshold, so orphan steps are possible).

Killed mid-lookups: the run worker alone, or its whole process group, which under `make dev`
is `dagster dev` itself (asserted: the run worker shares the process group of `dagster dev`).
Measured by polling the instance with a deadline: when the run is marked FAILURE and when its
pool slots are free again; the sandbox counts requests after the kill; then the rerun
converges. A run started from a terminal and killed while the daemon is up is the third case.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from cti_assets.sandbox import ProviderSandbox
from tests.reliability.support import (
    CHEAP,
    DAY,
    REPO,
    Site,
    cached_keys,
    long_scenario,
    public_ips,
    record_figure,
    wait_for,
)
from tests.reliability.test_killed_runs import DRAIN_S, writeback_objects

# dev start-up, a run, the daemon's whole bound and a rerun: minutes, more on a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
WORKSPACE = REPO / "workspace.yaml"
KILL_AFTER = 60  # provider requests before the kill
VALUES = public_ips(80, third_octet=89)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_project_pools(site: Site) -> None:
    """What `cti-assets dev` does through `dagster instance concurrency set`, one call per pool
    (here through the instance, which is what those calls do, without a process each)."""
    from cti_assets.cli.runs import POOL_LIMITS

    with site.instance() as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def start_dev(site: Site, *, sensor_on: bool, log: str) -> subprocess.Popen:
    env = {**site.env, "CTI_SENSOR_INTERVAL_S": "2", "CTI_SENSOR_IN_PROCESS_MAX": "50"}
    if sensor_on:
        env["CTI_SENSOR_DEFAULT_ON"] = "1"
    else:
        env.pop("CTI_SENSOR_DEFAULT_ON", None)
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE),
               "-p", str(free_port())]  # fmt: skip
    return subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        command, env=env, cwd=site.root, stdout=open(site.root / log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True)


def stop_dev(dev: subprocess.Popen) -> None:
    """Stop `dagster dev` and everything it started (its session's process group)."""
    if dev.poll() is None:
        try:
            os.killpg(dev.pid, signal.SIGTERM)
            dev.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(dev.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    dev.wait(timeout=10)


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def the_runs(site: Site):
    """[(run id, status, tags)] oldest first, and the run ids holding each cheap pool."""
    with site.instance() as instance:
        runs = [(r.run_id, r.status.value, dict(r.tags)) for r in reversed(instance.get_runs())]
        held = {pool: sorted({s.run_id for s in instance.event_log_storage
                              .get_concurrency_info(pool).claimed_slots})
                for pool in CHEAP}  # fmt: skip
    return runs, held


def run_worker_pid(site: Site, run_id: str) -> int:
    from cti_assets.cli.runs import _run_process

    with site.instance() as instance:
        found = _run_process(instance, run_id)
    assert found is not None, "the run logged no process id"
    return found[0]


def monitoring_bound(site: Site) -> float:
    """The time docs/reliability.md gives for the daemon to free a dead run's slots: one
    monitoring poll plus free_slots_after_run_end_seconds, plus 30 s for the code server to see
    the worker gone and a daemon iteration on a loaded machine."""
    with site.instance() as instance:
        settings = instance.run_monitoring_settings
        return (instance.run_monitoring_poll_interval_seconds
                + settings["free_slots_after_run_end_seconds"] + 30)


def until(condition, timeout_s: float, what: str) -> float:
    """Poll until `condition`; the moment it held (time.monotonic)."""
    wait_for(condition, timeout_s, what)
    return time.monotonic()


def poll(condition, timeout_s: float, what: str, every_s: float = 0.25) -> float:
    """Poll `condition`, which opens the instance while `dagster dev` writes to it, until it
    holds; the moment it held. A database busy at that moment (SQLite under load) is asked
    again at the next poll."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return time.monotonic()
        except (OperationalError, sqlite3.OperationalError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def kill_when_lookups_run(sandbox: ProviderSandbox, root: int, kill) -> tuple[float, set[int]]:
    """Once KILL_AFTER lookups went out, `kill()`; when, and `root` with its descendants as they
    were at that moment (the processes that must end)."""
    wait_for(lambda: sandbox.request_count() >= KILL_AFTER, 400, "lookups to get going")
    doomed = {root} | descendants(root)
    killed_at = time.monotonic()
    kill()
    return killed_at, doomed


def requests_after(sandbox: ProviderSandbox, killed_at: float, doomed: set[int],
                   ) -> tuple[int, float, float]:
    """Requests the sandbox received later than the drain after the kill, once every process of
    the run is gone and the drain is over (the observation window itself); the last request's
    time and when the processes were gone, both from the kill."""
    gone_s = until(lambda: not any(alive(p) for p in doomed), 15,
                   "the run's processes to end") - killed_at
    wait_for(lambda: time.monotonic() > killed_at + DRAIN_S, DRAIN_S + 1, "the drain")
    late = [r for r in sandbox.requests if r.started > killed_at + DRAIN_S]
    return len(late), max(r.started for r in sandbox.requests) - killed_at, gone_s


def launch_through_queue(site: Site) -> None:
    """What the UI's Materialize of a day does: a run of the enrichment job submitted to the
    instance's run coordinator (the project's queued one), which the daemon launches."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "dagster", "job", "launch", "-w", str(WORKSPACE), "-j",
         "enrichment", "--tags", json.dumps({"dagster/partition": DAY})],
        env=site.env, cwd=site.root, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def rerun_converges(site: Site, sandbox: ProviderSandbox, killed: str, retry_wait_s: float,
                    ) -> dict:
    """The day's next run (the daemon's automatic retry, or one launched through the queue when
    none comes): SUCCESS, no cached answer asked again, write-back idempotent."""
    cached = cached_keys(site.data)
    sandbox.reset_log()

    def other_runs():
        return [r for r in the_runs(site)[0] if r[0] != killed]

    retried = True
    try:
        poll(other_runs, retry_wait_s, "the daemon's automatic retry")
    except AssertionError:
        retried = False
        launch_through_queue(site)
    poll(lambda: any(r[1] in ("SUCCESS", "FAILURE", "CANCELED") for r in other_runs()),
         400, "the rerun to end")  # fmt: skip
    rerun = other_runs()[-1]
    assert rerun[1] == "SUCCESS", (rerun, (site.root / "dev.log").read_text()[-3000:])
    asked = {(r.provider, r.observable) for r in sandbox.requests}
    assert asked & cached == set(), f"{len(asked & cached)} cached answers asked again"
    written = writeback_objects(site)
    assert sum(written.values()) > 0
    again = site.materialize("opencti_writeback", log_name="again.log")
    assert again.wait(timeout=300) == 0, (site.root / "again.log").read_text()[-3000:]
    assert writeback_objects(site) == written  # nothing created twice
    return {"retried": retried, "cached": len(cached), "objects": sum(written.values()),
            "rerun_tags": rerun[2]}


@pytest.mark.parametrize("whole_group", [False, True], ids=["run-worker", "process-group"])
@long_scenario("`dagster dev`, a sensor run killed mid-lookups and its rerun take minutes")
def test_make_dev_run_killed_is_failed_freed_and_rerun_converges(tmp_path, monkeypatch,
                                                                 whole_group):
    from cti_assets.cli import runs

    with ProviderSandbox(latency_ms=300) as sandbox:
        site = Site(tmp_path, sandbox)
        site.import_values(VALUES)
        set_project_pools(site)
        bound_s = monitoring_bound(site)
        sandbox.reset_log()
        dev = start_dev(site, sensor_on=True, log="dev.log")
        try:
            poll(lambda: the_runs(site)[0], 300, "the sensor's run")
            (run_id, _, tags), = the_runs(site)[0]
            assert tags.get("cti/trigger") == "sensor"
            wait_for(lambda: sandbox.request_count() >= 5, 300, "the first lookups")
            worker = run_worker_pid(site, run_id)
            assert os.getpgid(worker) == dev.pid  # under make dev the run's group is dev's
            if whole_group:
                killed_at, doomed = kill_when_lookups_run(
                    sandbox, worker, lambda: os.killpg(dev.pid, signal.SIGKILL))
                dev.wait(timeout=10)
            else:
                killed_at, doomed = kill_when_lookups_run(
                    sandbox, worker, lambda: os.kill(worker, signal.SIGKILL))
            late, last_s, gone_s = requests_after(sandbox, killed_at, doomed)
            assert late == 0, f"{late} provider requests after the kill"
            sent = sandbox.request_count()

            if whole_group:
                # nothing is left to notice: the code server died with the run, and the run
                # monitoring has no worker health check for the default run launcher
                runs_now, held = the_runs(site)
                assert [r[1] for r in runs_now] == ["STARTED"] and any(held.values())
                with site.instance() as instance:
                    assert not instance.run_launcher.supports_check_run_worker_health
                # `cti-assets dev` opens the instance before it starts dagster dev: reaped
                monkeypatch.setenv("CTI_DATA_DIR", str(site.data))
                monkeypatch.setenv("DAGSTER_HOME", str(site.home))
                reaped_at = time.monotonic()
                runs.dagster_instance().dispose()
                failed_s = time.monotonic() - reaped_at
                dev = start_dev(site, sensor_on=True, log="dev-restarted.log")
            else:
                failed_s = poll(lambda: the_runs(site)[0][0][1] == "FAILURE", 30,
                                "the run marked FAILURE") - killed_at
                freed_s = poll(lambda: not any(the_runs(site)[1].values()), bound_s,
                               "the run's pool slots") - killed_at
            runs_now, held = the_runs(site)
            assert runs_now[0][1] == "FAILURE" and not any(held.values())
            # the restarted dev needs its start-up before its daemon can retry the run
            rerun = rerun_converges(site, sandbox, run_id, retry_wait_s=120 if whole_group else 20)
        finally:
            stop_dev(dev)

    if whole_group:
        how = "its process group (= `dagster dev` itself)"
        freeing = (f"dev dead, so the run stayed STARTED with slots held (no worker health check "
                   f"for the default run launcher); the next `cti-assets dev` reaps it at start: "
                   f"FAILURE and slots freed in {failed_s:.2f} s")
    else:
        how = "the run worker alone"
        freeing = (f"code server marked it FAILURE {failed_s:.1f} s after the kill; run "
                   f"monitoring freed its slots {freed_s:.1f} s after it (bound {bound_s:.0f} s)")
    rerun_how = ("the daemon's automatic retry" if rerun["retried"]
                 else "a run launched through the queue")
    record_figure(
        f"`make dev` (dagster dev, sensor run, multiprocess), kill -9 of {how} mid-lookups, 80 "
        "observables, 300 ms latency, then rerun",
        "tests/reliability/test_dev_kill.py",
        f"{sent} requests in all, the last {last_s:+.2f} s from the kill, 0 after the "
        f"{DRAIN_S} s drain; run processes gone after {gone_s:.2f} s; {freeing}; rerun "
        f"({rerun_how}) SUCCESS, 0 of {rerun['cached']} cached answers asked again; "
        f"write-back {rerun['objects']} objects, unchanged by another write-back",
    )


@long_scenario("a terminal run killed under `dagster dev`, watched for a monitoring cycle")
def test_terminal_run_killed_while_daemon_is_up(tmp_path, monkeypatch):
    """A run started from a terminal (`dagster asset materialize`) while `make dev` is up and
    then killed: nothing of the daemon sees it (its process is not a child of the code server,
    and the run monitoring has no worker health check for the default run launcher), so it is
    still STARTED with its slots after the daemon's whole bound; the next `cti-assets` command
    reaps it."""
    from cti_assets.cli import runs

    with ProviderSandbox(latency_ms=300) as sandbox:
        site = Site(tmp_path, sandbox)
        site.import_values(VALUES)
        set_project_pools(site)
        bound_s = monitoring_bound(site)
        dev = start_dev(site, sensor_on=False, log="dev.log")
        try:
            sandbox.reset_log()
            process = site.materialize("*", own_group=True, log_name="terminal.log")
            killed_at, doomed = kill_when_lookups_run(
                sandbox, process.pid, lambda: process.send_signal(signal.SIGKILL))
            process.wait(timeout=10)
            late, _, gone_s = requests_after(sandbox, killed_at, doomed)
            assert late == 0, f"{late} provider requests after the kill"
            (run_id, status, _), = the_runs(site)[0]
            assert status == "STARTED"
            deadline = time.monotonic() + bound_s
            watched = 0
            while time.monotonic() < deadline:  # the daemon's whole bound, polled
                try:
                    runs_now, held = the_runs(site)
                except OperationalError:  # the database busy at this poll: ask at the next
                    time.sleep(1)
                    continue
                assert runs_now[0][1] == "STARTED" and any(held.values()), runs_now
                watched += 1
                time.sleep(1)
            assert watched > bound_s / 4  # it was really looked at throughout
            with site.instance() as instance:
                assert not instance.run_launcher.supports_check_run_worker_health
            monkeypatch.setenv("CTI_DATA_DIR", str(site.data))
            monkeypatch.setenv("DAGSTER_HOME", str(site.home))
            reaped_at = time.monotonic()
            runs.dagster_instance().dispose()
            reap_s = time.monotonic() - reaped_at
            runs_now, held = the_runs(site)
            assert runs_now[0][1] == "FAILURE" and not any(held.values())
        finally:
            stop_dev(dev)
    record_figure(
        "terminal-started run (`dagster asset materialize`) killed with kill -9 while `make "
        "dev` is up", "tests/reliability/test_dev_kill.py",
        f"0 requests after the {DRAIN_S} s drain, run processes gone after {gone_s:.2f} s; "
        f"still STARTED with its slots after "
        f"{bound_s:.0f} s of the daemon (no run worker it could check); reaped by the next "
        f"`cti-assets` command in {reap_s:.2f} s: FAILURE, slots freed")
