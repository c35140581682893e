"""kill -9 of a materialisation mid-lookups (issue 20 item 4), as an operator would do it.

`dagster asset materialize` runs as a real process against the provider sandbox with latency;
once lookups are under way it is killed with SIGKILL: the launching process alone (its step
processes become orphans) or its whole process group. Then: no process of the run is left, the
sandbox receives no request after a short drain, the run is still STARTED holding its pool
slots until the project's CLI reaps it (what every `cti-assets` run command does first), the
rerun succeeds, asks nothing the dead run had cached, and the write-back creates nothing twice.

The drain (DRAIN_S): a step process learns its parent died from the end-of-file of the spawn
pipe (cti_assets.lifeline), which wakes its watch thread at once (the pid check behind it polls
every 0.5 s); a request already written to the socket before os._exit may still be read by the
sandbox a little later. 1.5 s covers both with room for a loaded 2-core machine.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter

import pytest

from cti_assets.sandbox import ProviderSandbox
from tests.reliability.support import (
    CHEAP,
    Site,
    cached_keys,
    long_scenario,
    public_ips,
    record_figure,
    wait_for,
)

DRAIN_S = 1.5
KILL_AFTER = 60  # of the 3 x 80 cheap lookups
VALUES = public_ips(80)


def writeback_objects(site: Site) -> Counter:
    """Objects the write-back left in the local store, by type (observables excluded)."""
    with sqlite3.connect(site.data / "store.sqlite") as connection:
        rows = connection.execute("SELECT type FROM objects").fetchall()
    return Counter(t for (t,) in rows if t != "ipv4-addr")


def kill_mid_lookups(site: Site, sandbox: ProviderSandbox, whole_group: bool):
    """Start the whole graph, kill it once KILL_AFTER lookups went out; the kill's time."""
    process = site.materialize("*", own_group=True, log_name="killed.log")
    try:
        wait_for(lambda: sandbox.request_count() >= KILL_AFTER, 180, "lookups to get going")
        killed_at = time.monotonic()
        if whole_group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    return killed_at


def run_state(site: Site):
    """Statuses of the site's runs, the run ids holding each cheap pool's slots, and dagster."""
    import dagster as dg

    with site.instance() as instance:
        runs = instance.get_runs()
        held = {pool: [s.run_id for s in instance.event_log_storage.get_concurrency_info(pool)
                       .claimed_slots]
                for pool in CHEAP}  # fmt: skip
        statuses = [r.status for r in runs]
    return statuses, held, dg


@pytest.mark.slow
@pytest.mark.parametrize("whole_group", [False, True], ids=["parent-only", "process-group"])
@long_scenario("kill -9 of a whole materialisation and two reruns take about a minute")
def test_kill_minus_9_mid_lookups_then_rerun_converges(tmp_path, monkeypatch, whole_group):
    from cti_assets.cli import runs

    with ProviderSandbox(latency_ms=300) as sandbox:
        site = Site(tmp_path, sandbox)
        site.import_values(VALUES)
        sandbox.reset_log()
        killed_at = kill_mid_lookups(site, sandbox, whole_group)

        # every process of the run ends, by itself, within the drain
        wait_for(lambda: not site.processes(), 10, "the run's processes to end")
        gone_s = time.monotonic() - killed_at
        late = [r for r in sandbox.requests if r.started > killed_at + DRAIN_S]
        last_s = max(r.started for r in sandbox.requests) - killed_at
        assert late == [], f"{len(late)} provider requests after the kill"
        before_rerun = sandbox.request_count()

        # left as it died: STARTED, holding pool slots
        statuses, held, dg = run_state(site)
        assert statuses == [dg.DagsterRunStatus.STARTED]
        assert any(held.values()), "the killed run held no pool slot (kill came too late?)"

        # the project's CLI reaps it before it uses the instance
        monkeypatch.setenv("CTI_DATA_DIR", str(site.data))
        monkeypatch.setenv("DAGSTER_HOME", str(site.home))
        reaped_at = time.monotonic()
        runs.dagster_instance().dispose()
        reap_s = time.monotonic() - reaped_at
        statuses, held, dg = run_state(site)
        assert statuses == [dg.DagsterRunStatus.FAILURE]
        assert not any(held.values()), f"slots still held: {held}"

        # the rerun: succeeds, pays nothing twice, writes each object once
        cached = cached_keys(site.data)
        sandbox.reset_log()
        rerun = site.materialize("*", log_name="rerun.log")
        assert rerun.wait(timeout=240) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        asked = {(r.provider, r.observable) for r in sandbox.requests}
        repeated = asked & cached
        assert repeated == set(), f"{len(repeated)} cached answers asked again"
        first_writeback = writeback_objects(site)
        assert sum(first_writeback.values()) > 0

        sandbox.reset_log()
        again = site.materialize("opencti_writeback", log_name="again.log")
        assert again.wait(timeout=240) == 0, (tmp_path / "again.log").read_text()[-3000:]
        assert writeback_objects(site) == first_writeback  # nothing created twice
        assert sandbox.request_count() == 0
        statuses, held, dg = run_state(site)
        assert statuses.count(dg.DagsterRunStatus.SUCCESS) == 2 and not any(held.values())

    how = "process group" if whole_group else "launching process alone"
    record_figure(
        f"kill -9 mid-lookups ({how}), 80 observables, 300 ms latency, then rerun",
        "tests/reliability/test_killed_runs.py",
        f"{before_rerun} requests in all, the last {last_s:+.2f} s from the kill, 0 after the "
        f"{DRAIN_S} s drain; no run process left after {gone_s:.2f} s; run STARTED with slots "
        f"held until the CLI reaped it ({reap_s:.2f} s): FAILURE, slots freed; rerun SUCCESS, 0 "
        f"of {len(cached)} cached answers asked again; write-back "
        f"{sum(first_writeback.values())} objects, unchanged by another write-back",
    )
