"""The job-throughput benchmark's accounting: step events to phases, the bounds, the
environment it gives the job, and its rows in the results table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import jobthroughput as jt
from bench import report, workload
from cti_assets.providers import base
from cti_assets.providers.config import settings_from_env


def _entry(step: str, kind: str, at: float):
    return SimpleNamespace(step_key=step, timestamp=at,
                           dagster_event=SimpleNamespace(event_type_value=kind))


def _events(steps: dict[str, tuple[float, float, float]]):
    out = [SimpleNamespace(step_key=None, timestamp=0.0, dagster_event=None)]
    for key, (worker, start, end) in steps.items():
        out += [_entry(key, "STEP_WORKER_STARTING", worker), _entry(key, "STEP_START", start),
                _entry(key, "LOGS_CAPTURED", start + 0.1), _entry(key, "STEP_SUCCESS", end)]
    return out


TIMELINE = {
    "observables": (0.0, 2.0, 3.0),
    "network_context_lookups": (3.0, 5.0, 60.0),  # offline: not a provider lookup
    "greynoise_lookups": (3.0, 6.0, 16.0),
    "abuseipdb_lookups": (3.0, 7.0, 18.0),
    "lookup_triage": (18.0, 21.0, 22.0),
    "virustotal_lookups": (22.0, 25.0, 40.0),
    "shodan_lookups": (22.0, 24.0, 30.0),
}


def test_step_timeline_reads_worker_start_body_start_and_end():
    steps = jt.step_timeline(_events(TIMELINE))
    assert steps["virustotal_lookups"] == {"first": 22.0, "start": 25.0, "end": 40.0, "ok": 1.0}
    rows = jt.step_rows(steps, origin=0.0)
    assert rows["virustotal_lookups"]["startup_s"] == 3.0
    assert rows["virustotal_lookups"]["body_s"] == 15.0
    assert list(rows)[0] == "observables"


def test_lookup_phase_spans_provider_lookups_only_and_splits_at_triage():
    phase = jt.lookup_phase(jt.step_timeline(_events(TIMELINE)))
    assert phase["lookup_wall_s"] == 40.0 - 6.0  # network context (ends at 60) is not counted
    assert phase["cheap_phase_s"] == 18.0 - 6.0
    assert phase["triage_launch_to_end_s"] == 22.0 - 18.0
    assert phase["triage_body_s"] == 1.0
    assert phase["expensive_phase_s"] == 40.0 - 22.0


def test_bounds_from_admitted_calls():
    rates = {base.GREYNOISE: 50.0, base.ABUSEIPDB: 50.0, base.VIRUSTOTAL: 100.0,
             base.SHODAN: 50.0}
    admitted = {base.GREYNOISE: 500, base.ABUSEIPDB: 600, base.VIRUSTOTAL: 800, base.SHODAN: 0}
    assert jt.quota_bound(admitted, rates) == (12.0, base.ABUSEIPDB)
    assert jt.phase_bound(admitted, rates) == 12.0 + 8.0
    assert jt.quota_bound({base.SHODAN: 0}, rates) == (0.0, None)


def test_bounds_at_the_documented_default_quotas():
    # OTX 2 a second; GreyNoise 100 a day; VirusTotal 4 a minute, 500 a day; Shodan 1 a second,
    # no cap; CrowdSec 50 a day (providers.config.DEFAULTS, from providers.md)
    calls = {base.OTX: 10_000, base.GREYNOISE: 5_000, base.VIRUSTOTAL: 4_000,
             base.SHODAN: 5_500, base.CROWDSEC: 3_000, base.SECURITYTRAILS: 0}
    bounds = jt.documented_quota_bounds(calls)
    rows = bounds["providers"]
    assert base.SECURITYTRAILS not in rows  # no call, no time
    assert rows[base.VIRUSTOTAL] == {"rate": round(4 / 60, 4), "cap": 500, "calls": 4_000,
                                     "sent": 500, "binds": True, "seconds": 7_500.0}
    assert rows[base.GREYNOISE]["sent"] == 100 and rows[base.GREYNOISE]["seconds"] == 100.0
    assert not rows[base.SHODAN]["binds"] and rows[base.SHODAN]["seconds"] == 5_500.0
    assert bounds["quota_bound_s"] == 7_500.0
    assert bounds["ordered_bound_s"] == 5_000.0 + 7_500.0
    # VirusTotal's cap binds: even decided observable by observable it waits for the day's
    # ranking, so streaming gains nothing here
    assert bounds["streamed_bound_s"] == 5_000.0 + 7_500.0
    # under its cap, VirusTotal could start with the cheap lookups: only the capped CrowdSec
    # (50 s) still follows them
    calls[base.VIRUSTOTAL] = 400
    bounds = jt.documented_quota_bounds(calls)
    assert bounds["quota_bound_s"] == 6_000.0
    assert bounds["ordered_bound_s"] == 5_000.0 + 6_000.0
    assert bounds["streamed_bound_s"] == 6_000.0


def test_job_environment_sets_each_rate_and_opens_the_other_windows():
    rates = jt.job_rates(workload.DEFAULT_RATE_LIMITS)
    assert set(rates) == set(jt.JOB_PROVIDERS)
    for provider, rate in workload.DEFAULT_RATE_LIMITS.items():
        assert rates[provider] == rate
    per_thousand = workload.expected_calls(workload.observables(1000), jt.JOB_PROVIDERS)
    assert rates[base.MALWAREBAZAAR] == max(10, round(per_thousand[base.MALWAREBAZAAR] / 10))
    env = jt.provider_env({var: "http://127.0.0.1:1/x" for var in jt.URL_VARS.values()},
                          rates, 100)
    for provider in jt.JOB_PROVIDERS:
        chosen = settings_from_env(provider, env)
        assert chosen.per_second == rates[provider]
        assert chosen.base_url == "http://127.0.0.1:1/x"
        assert chosen.max_workers == workload.workers_for(rates[provider], 100)
        assert chosen.per_day in (None, jt.UNLIMITED_DAY)
        assert chosen.per_month in (None, jt.UNLIMITED_MONTH)
        assert chosen.per_minute is None or chosen.per_minute >= rates[provider] * 60
        assert not chosen.needs_key or chosen.api_key == workload.PLACEHOLDER_KEY


def _size(n: int, ratio: float, speedup: float, throttled: int) -> dict:
    return {"ratio_lookups": ratio, "ratio_run": ratio * 2, "speedup_lookups": speedup,
            "speedup_run": speedup / 2, "sandbox_429_total": throttled}


@pytest.mark.parametrize(("ratio", "expected"), [(1.1, "PASS"), (1.2, "MISS")])
def test_report_judges_the_bound_at_ten_thousand_only(ratio, expected):
    job = {"sizes": {"1000": _size(1000, 3.0, 30.0, 0), "10000": _size(10000, ratio, 60.0, 2)}}
    rows = {figure: (value, target, verdict) for figure, value, target, verdict
            in report._job_rows(job)}  # fmt: skip
    assert rows["Job, 1,000 observables: lookups wall / quota bound"][2] == "-"
    assert rows["Job, 10,000 observables: lookups wall / quota bound"][2] == expected
    assert rows["Job, 10,000 observables: whole run wall / quota bound"][2] == "MISS"
    assert rows["Job, 10,000 observables: sandbox 429s"] == ("2", "0", "MISS")
    assert rows["Job, 1,000 observables: sandbox 429s"][2] == "PASS"
    speed = "Job, 10,000 observables: speed-up over the connector model, whole run " \
            "(extrapolated per call)"
    assert rows[speed] == ("30x", ">= 25x", "PASS")
