"""Calls spent, through the real Dagster `enrichment` job (in process, embedded store):

* the same partitions materialised again: provider calls on the second run (target 0);
* a 30-day backfill whose observables recur across days: calls against the unique
  observables each provider had to look up within its cache TTL.

Every provider request is counted by the sandbox (its own process), per observable. Rates and
budgets are set not to bind (the count, not the time, is measured).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

from bench import workload
from bench.jobthroughput import JOB_PROVIDERS, job_rates, provider_env
from bench.sandbox_proc import SandboxProcess
from cti_assets.providers import base
from cti_assets.providers.config import DEFAULTS
from cti_assets.providers.fields import PROVIDER_SCOPE

REPO = Path(__file__).resolve().parent.parent
REPEAT_DAYS = ("2026-11-20", "2026-11-21")
BACKFILL_START = date(2026, 10, 1)


def _fresh_instance(folder: Path) -> None:
    """A new data directory and Dagster home for one experiment."""
    os.environ["CTI_DATA_DIR"] = str(folder / "data")
    os.environ["DAGSTER_HOME"] = str(folder / "dagster_home")
    (folder / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", folder / "dagster_home" / "dagster.yaml")


def _rates_that_never_bind(sandbox: SandboxProcess) -> None:
    """Every provider at the job benchmark's rates, its day, month and minute budgets too wide
    to bind: this benchmark counts calls, and at the documented rates (VirusTotal's 4 a minute)
    the 30-day backfill waits over an hour for slots, while a spent daily budget would leave
    observables unsent and the count short."""
    os.environ.update(provider_env(sandbox.base_urls, job_rates(workload.DEFAULT_RATE_LIMITS),
                                   latency_ms=sandbox.latency_ms))


def _materialise(days) -> list[str]:
    from cti_assets.cli.demo import materialise

    with contextlib.redirect_stdout(io.StringIO()):
        return materialise(list(days))


def _requests_per_observable(sandbox: SandboxProcess) -> Counter:
    records = sandbox._admin("GET", "requests")
    return Counter((r["provider"], r["observable"]) for r in records if r["status"] != 429)


def repeat(sandbox: SandboxProcess, folder: Path, per_day: int) -> dict:
    from cti_assets.cli.demo import point_providers_at
    from cti_assets.sources.local import LocalStixStore

    _fresh_instance(folder)
    point_providers_at(sandbox.base_urls)
    _rates_that_never_bind(sandbox)
    store = LocalStixStore()
    for offset, day in enumerate(REPEAT_DAYS):
        workload.import_day(store, range(offset * per_day, (offset + 1) * per_day), day)
    sandbox.reset()
    failed_first = _materialise(REPEAT_DAYS)
    first = sandbox.calls()
    sandbox.reset()
    failed_second = _materialise(REPEAT_DAYS)
    second = sandbox.calls()
    return {
        "partitions": list(REPEAT_DAYS),
        "observables": per_day * len(REPEAT_DAYS),
        "calls_first_run": first,
        "calls_second_run_by_provider": second,
        "calls_second_run": sum(second.values()),
        "failed_partitions": sorted(set(failed_first + failed_second)),
    }


def backfill_plan(days: int, pool: int, per_day: int, seed: int = 7) -> dict[str, list[int]]:
    """Which observable indexes each day carries: `per_day` drawn from a pool of `pool`."""
    rng = random.Random(seed)
    return {(BACKFILL_START + timedelta(days=d)).isoformat(): sorted(rng.sample(range(pool),
            per_day)) for d in range(days)}  # fmt: skip


def expected_unique(plan: dict[str, list[int]], providers=workload.API_PROVIDERS) -> dict:
    """Unique (type, value) per provider in the plan. The TTLs (ProviderSettings.cache_ttl_s:
    a day and more; not_found 6 h) are wall-clock, and the backfill runs in minutes, so every
    answer is still fresh when a value recurs: expected calls = unique observables."""
    values = {(workload.entity_type_of(i), workload.value_of(i))
              for indexes in plan.values() for i in indexes}  # fmt: skip
    return {p: sum(1 for t, _ in values if t in PROVIDER_SCOPE[p]) for p in providers}


def backfill(sandbox: SandboxProcess, folder: Path, days: int, pool: int, per_day: int) -> dict:
    from cti_assets.cli.demo import point_providers_at
    from cti_assets.sources.local import LocalStixStore

    _fresh_instance(folder)
    point_providers_at(sandbox.base_urls)
    _rates_that_never_bind(sandbox)
    store = LocalStixStore()
    plan = backfill_plan(days, pool, per_day)
    for day, indexes in plan.items():
        workload.import_day(store, indexes, day, salt=day)
    sandbox.reset()
    failed = _materialise(plan)
    calls = sandbox.calls()
    per_observable = _requests_per_observable(sandbox)
    providers = JOB_PROVIDERS  # every provider the job calls, not only the six API ones
    repeated = {p: sum(n - 1 for (q, _), n in per_observable.items() if q == p and n > 1)
                for p in providers}  # fmt: skip
    sent = Counter(p for p, _ in per_observable if p in providers)
    unique = expected_unique(plan, providers)
    total_calls = sum(calls.get(p, 0) for p in providers)
    return {
        "days": days, "pool": pool, "per_day": per_day,
        "observables": days * per_day,
        "ttl_s": {t: DEFAULTS[base.VIRUSTOTAL].cache_ttl_s[t] for t in workload.entity_types()},
        "calls_by_provider": calls,
        "unique_in_scope": unique,
        "distinct_sent": dict(sent),
        "repeated_calls": repeated,
        "calls": total_calls,
        # what the pipeline chose to look up (triage may defer expensive lookups) is
        # distinct_sent; calls above it are observables paid twice within their TTL
        "expected_calls": sum(sent.values()),
        "not_sent_by_triage": {p: unique[p] - sent.get(p, 0) for p in unique},
        "failed_partitions": failed,
    }


def measure(args, scratch: Path) -> dict:
    with mock.patch.dict(os.environ):  # CTI_DATA_DIR, DAGSTER_HOME restored
        with SandboxProcess(latency_ms=0) as sandbox:
            print("  same partitions twice", flush=True)
            rep = repeat(sandbox, scratch / "repeat", per_day=max(20, args.n // 10))
            print("  30-day backfill", flush=True)
            back = backfill(sandbox, scratch / "backfill", days=30, pool=300, per_day=100)
    return {"repeat": rep, "backfill": back}


def section(result: dict) -> str:
    rep, back = result["repeat"], result["backfill"]
    lines = [
        "## 2. Calls spent",
        "",
        f"Through the real `enrichment` job (in process, embedded store, sandbox at 0 ms). "
        f"{rep['observables']} observables over partitions {', '.join(rep['partitions'])}: "
        f"first run {sum(rep['calls_first_run'].values())} provider calls "
        f"({rep['calls_first_run']}); the same partitions materialised again: "
        f"**{rep['calls_second_run']} calls** (target 0).",
        "",
        f"30-day backfill: {back['days']} daily partitions of {back['per_day']} observables drawn"
        f" from a pool of {back['pool']} values (each recurring value is a new observable with "
        "the same value, as when another feed reports it again). The cache TTLs are "
        "wall-clock (a day or more per type, 6 h for not-found answers) and the backfill runs "
        "in minutes, so an answer never expires within it: the expected calls are the unique "
        "observables per provider.",
        "",
        "| Provider | Unique in scope | Distinct sent | Calls | Paid twice | Not sent (triage) |",
        "|---|---|---|---|---|---|",
    ]
    for provider in back["unique_in_scope"]:
        lines.append(
            f"| {provider} | {back['unique_in_scope'][provider]} | "
            f"{back['distinct_sent'].get(provider, 0)} | "
            f"{back['calls_by_provider'].get(provider, 0)} | {back['repeated_calls'][provider]} "
            f"| {back['not_sent_by_triage'][provider]} |"
        )
    lines += [
        "",
        f"Calls {back['calls']} against {back['expected_calls']} distinct observables sent: "
        f"**{back['calls'] - back['expected_calls']} paid twice** (target 0). Cheap providers "
        "look up every unique observable in scope; the expensive ones only those triage "
        "selects (the rest are confidently benign from the cheap answers or over budget).",
    ]
    if rep["failed_partitions"] or back["failed_partitions"]:
        lines.append(f"\nFailed partitions: {rep['failed_partitions'] + back['failed_partitions']}")
    return "\n".join(lines) + "\n"
