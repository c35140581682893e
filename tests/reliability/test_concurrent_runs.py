"""Two materialisations of the same day at once, through Dagster (issue 20 item 7).

Two `dagster asset materialize` processes of the whole graph for one day start together, as two
operators (or a cron job and an operator) would; started from a terminal they bypass the run
queue and its one-run-per-day guard, which is the worst case. Counted at the sandbox: no
(provider, observable) is asked twice (in-flight leases in the response cache); the per-second
limit both processes share holds at the server; both runs succeed with no "database is locked"
or other lock error in their output; the write-back leaves each object once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter

import pytest

from cti_assets.sandbox import ProviderSandbox
from tests.reliability.support import Site, long_scenario, public_ips, record_figure

VALUES = public_ips(40, third_octet=84)
PER_SECOND = 4
LOCK_SIGNS = ("database is locked", "OperationalError", "Traceback", "deadlock")


def writeback_keys(site: Site) -> Counter:
    """Each write-back object by what it says (type and content less id and timestamps): two
    objects saying the same thing under different ids would be a duplicate."""
    with sqlite3.connect(site.data / "store.sqlite") as connection:
        rows = connection.execute("SELECT type, json FROM objects").fetchall()
    keys: Counter = Counter()
    for stix_type, text in rows:
        if stix_type == "ipv4-addr":
            continue
        obj = {k: v for k, v in json.loads(text).items()
               if k not in ("id", "created", "modified")}  # fmt: skip
        keys[json.dumps(obj, sort_keys=True)] += 1
    return keys


@pytest.mark.slow
@long_scenario("two whole-graph materialisations of one day take about a minute")
def test_two_materialisations_of_one_day_pay_once_and_share_limits(tmp_path):
    with ProviderSandbox(latency_ms=100) as sandbox:
        site = Site(tmp_path, sandbox)
        site.env["GREYNOISE_PER_SECOND"] = str(PER_SECOND)
        site.import_values(VALUES)
        sandbox.reset_log()
        started = time.monotonic()
        first = site.materialize("*", log_name="first.log")
        second = site.materialize("*", log_name="second.log")
        codes = [first.wait(timeout=280), second.wait(timeout=280)]
        wall = time.monotonic() - started
        logs = [(tmp_path / name).read_text(errors="replace") for name in ("first.log",
                                                                           "second.log")]
        assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
        requests = sandbox.requests

    lock_errors = [sign for log in logs for sign in LOCK_SIGNS if sign in log]
    assert lock_errors == []
    asked = Counter((r.provider, r.observable) for r in requests)
    repeated = {key: n for key, n in asked.items() if n > 1}
    assert repeated == {}, f"{len(repeated)} lookups paid twice"
    assert {r.status for r in requests} <= {200, 404}

    # the shared per-second limit, counted at the server (less 250 ms of arrival lag, as in
    # tests/providers/test_ratelimit.py)
    starts = sorted(r.started for r in requests if r.provider == "greynoise")
    assert len(starts) == len(VALUES)
    busiest = max(len([s for s in starts[i:] if s < start + 0.75])
                  for i, start in enumerate(starts))  # fmt: skip
    assert busiest <= PER_SECOND
    assert starts[-1] - starts[0] >= len(starts) / PER_SECOND - 1.05

    duplicates = {k: n for k, n in writeback_keys(site).items() if n > 1}
    assert duplicates == {}, f"{len(duplicates)} write-back objects twice"
    with site.instance() as instance:
        import dagster as dg

        statuses = [r.status for r in instance.get_runs()]
    assert statuses == [dg.DagsterRunStatus.SUCCESS] * 2
    record_figure(
        "two whole-graph materialisations of one day at once (40 observables, terminal-started, "
        "so no run queue guard)",
        "tests/reliability/test_concurrent_runs.py",
        f"both SUCCESS in {wall:.0f} s; {len(requests)} provider requests, 0 repeated; "
        f"GreyNoise at {PER_SECOND}/s shared: at most {busiest} in any 0.75 s at the server; "
        f"0 lock errors; write-back {sum(writeback_keys(site).values())} objects, none twice",
    )
