"""Provider faults through whole Dagster runs (issue 20 item 7; tests/reliability/
provider_faults.py says how): a fault of a provider never fails the run nor loses an
observable, and the breaker bounds what a dead provider costs.

Plain pytest runs one 60-observable day with three providers faulted (one hangs on every
request, one answers two 503s, one refuses connections); `make reliability` runs the 13-run
rotation that puts every provider through every fault and writes the table of
docs/reliability.md ("Provider faults (whole Dagster runs)") into CTI_RELIABILITY_FAULT_FIGURES.
"""

from __future__ import annotations

import os

import pytest

from cti_assets.providers import base
from tests.reliability.provider_faults import (
    BREAKER,
    CONNECT_S,
    DEADLINE_S,
    FAULT_BY_LABEL,
    FAULTS,
    TABLE_HEADER,
    WORKERS,
    allowed_statuses,
    ipv4_day,
    mixed_day,
    provider_table_row,
    request_bound,
    rotation,
    run_day,
)
from tests.reliability.support import long_scenario, record_figure

pytestmark = pytest.mark.slow
ROWS: list[tuple[int, int, str]] = []  # (provider order, fault order, table row)
HANG_BOUND_S = 2 * (CONNECT_S + DEADLINE_S)


def check_run(result, faults, allowed_for: dict | None = None) -> None:
    assert result.status == "SUCCESS", result
    assert result.observables_in > 0 and result.lost == 0, result
    for provider, fault in faults.items():
        row = result.providers[provider]
        assert row.rows == result.observables_in, (provider, row)  # one row per observable
        allowed = (allowed_for or {}).get(provider) or allowed_statuses(provider, fault)
        assert set(row.attempted) <= allowed, (provider, fault.label, row.statuses)
        sent = row.attempts if row.requests is None else row.requests
        assert sent <= request_bound(result, faults, provider), (provider, fault.label, row)


def test_hang_503_and_refused_in_one_60_observable_run(tmp_path):
    """The short version: 0 lost, run SUCCESS, requests bounded; the hanging provider costs
    the day at most 2 x (connect timeout + deadline), not a timeout per row."""
    faults = {base.INTERNETDB: FAULT_BY_LABEL["hang"],
              base.GREYNOISE: FAULT_BY_LABEL["5xx burst (2)"],
              base.ABUSEIPDB: FAULT_BY_LABEL["connection refused"]}  # fmt: skip
    result = run_day(tmp_path, ipv4_day(60), faults)
    check_run(result, faults)
    hang = result.providers[base.INTERNETDB]
    assert hang.requests is not None and hang.requests <= BREAKER + WORKERS
    # the step's own cost (a step with no network at all, same rows) is not the provider's
    overhead = result.step_s["network_context_lookups"]
    assert hang.step_s - overhead <= HANG_BOUND_S, f"{hang.step_s:.2f} s, overhead {overhead:.2f}"
    assert set(hang.statuses) <= {base.ERROR, f"{base.DEFERRED}/{base.DEFER_UNAVAILABLE}"} | {
        f"{base.ERROR}/{base.ERR_TRANSIENT}"}
    assert result.providers[base.GREYNOISE].attempted.keys() <= {base.OK, base.NOT_FOUND}
    refused = result.providers[base.ABUSEIPDB].attempts
    record_figure(
        "60-observable day, InternetDB hangs on every request, GreyNoise two 503s, AbuseIPDB "
        "refuses connections (whole run, in-process executor)",
        "tests/reliability/test_provider_faults.py",
        f"run SUCCESS, 60 in, 60 scored, 0 lost; InternetDB {hang.requests} requests, lookup "
        f"step {hang.step_s:.2f} s (a step without network: {overhead:.2f} s; bound 2 x "
        f"(connect {CONNECT_S} + deadline {DEADLINE_S}) = {HANG_BOUND_S:.0f} s), "
        f"{dict(hang.statuses)}; AbuseIPDB {refused} connection attempts; "
        f"run {result.wall_s:.1f} s")


@long_scenario("a multiprocess run of a 60-observable day starts a process per step: a minute")
def test_hang_through_a_multiprocess_run(tmp_path):
    """The same day with the multiprocess executor (a process per step): InternetDB hangs on
    every request, and Shodan's host API answers 403 so the shodan step falls back to InternetDB
    from another process. Each process that calls the dead provider has its own breaker (it is
    shared by a step's worker threads, not across step processes), so the day pays the hang at
    most once per such step: each bounded by 2 x (connect timeout + deadline), not per row;
    0 observables lost."""
    faults = {base.INTERNETDB: FAULT_BY_LABEL["hang"],
              base.SHODAN: FAULT_BY_LABEL["403"],
              base.GREYNOISE: FAULT_BY_LABEL["5xx burst (2)"],
              base.ABUSEIPDB: FAULT_BY_LABEL["connection refused"]}  # fmt: skip
    result = run_day(tmp_path, ipv4_day(60), faults, multiprocess=True)
    # shodan's rows carry the outcome of its InternetDB fallback, which hangs
    check_run(result, faults, {base.SHODAN: FAULT_BY_LABEL["hang"].allowed | {base.ERROR}})
    hang, shodan = result.providers[base.INTERNETDB], result.providers[base.SHODAN]
    # the comparison: AbuseIPDB's step does the same work for the same rows (60 rows deferred by
    # an open breaker, written out) without waiting, its connections being refused at once; in
    # a multiprocess run that work is seconds on a loaded machine, as much as the wait bounded
    refused = result.providers[base.ABUSEIPDB]
    overhead = refused.step_s
    calling = [hang] + ([shodan] if shodan.attempted else [])  # steps that called InternetDB
    assert hang.requests is not None and hang.requests <= len(calling) * (BREAKER + WORKERS)
    for row in calling:
        assert row.step_s - overhead <= HANG_BOUND_S, (row.provider, row.step_s, overhead)
    assert set(hang.attempted) <= {base.ERROR, base.DEFERRED}
    assert result.providers[base.GREYNOISE].attempted.keys() <= {base.OK, base.NOT_FOUND}
    record_figure(
        "60-observable day, InternetDB hangs on every request, Shodan 403 (falls back to "
        "InternetDB), GreyNoise two 503s, AbuseIPDB refuses connections (whole run, "
        "multiprocess executor)",
        "tests/reliability/test_provider_faults.py",
        f"run {result.status}, {result.observables_in} in, {result.scored} scored, "
        f"{result.lost} lost; InternetDB {hang.requests} requests from {len(calling)} step "
        f"processes (bound {len(calling)} x (breaker {BREAKER} + workers {WORKERS})), its step "
        f"{hang.step_s:.2f} s, shodan's step {shodan.step_s:.2f} s ({dict(shodan.statuses)}; "
        f"AbuseIPDB's refused step, the same work without waiting: {overhead:.2f} s; bound per "
        f"step 2 x (connect {CONNECT_S} + "
        f"deadline {DEADLINE_S}) = {HANG_BOUND_S:.0f} s over it), {dict(hang.statuses)}; "
        f"AbuseIPDB {refused.attempts} connection attempts; "
        f"run {result.wall_s:.1f} s")


@pytest.mark.parametrize("run", range(len(FAULTS)), ids=[f"run{r}" for r in range(len(FAULTS))])
@long_scenario("13 whole runs, each with every provider faulted, take a few minutes")
def test_every_provider_through_every_fault(tmp_path, run):
    faults = rotation(run)
    result = run_day(tmp_path, mixed_day(), faults)
    order = list(faults)
    for provider, fault in faults.items():
        ROWS.append((order.index(provider), FAULTS.index(fault),
                     provider_table_row(result.providers[provider], result, run)))
    check_run(result, faults)


def test_write_fault_table():
    target = os.environ.get("CTI_RELIABILITY_FAULT_FIGURES")
    if not target:
        pytest.skip("set CTI_RELIABILITY_FAULT_FIGURES=<path> (make reliability) to write it")
    assert len(ROWS) == len(FAULTS) * len(rotation(0)), "run the whole module to write it"
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(TABLE_HEADER + "\n" + "\n".join(row for *_, row in sorted(ROWS)) + "\n")
