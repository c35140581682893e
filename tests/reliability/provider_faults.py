"""Provider faults through whole Dagster runs (issue 20 item 7): one day materialised by the
real `enrichment` job (observables -> every lookup -> triage -> expensive lookups -> merge ->
scores -> write-back) against a real SQLite DagsterInstance in a throwaway Dagster home with the
project's dagster.yaml, while the provider sandbox injects a fault into each provider.

Executor: in process (`execute_in_process`, steps in turn in one process), which is what the
new-observables sensor asks for a day of up to CTI_SENSOR_IN_PROCESS_MAX (200) observables;
the days here have 10 and 60. `run_day(..., multiprocess=True)` runs the same job with the
multiprocess executor instead (`dg.execute_job` of the reconstructable job: each step in its own
process, as a bigger day or a terminal run), so a breaker lives in each step process.

Each run gets its own data directory, Dagster home and sandbox, so no answer is cached from one
scenario to the next.

Several providers are faulted in one run, each with a different fault: run r gives provider j
fault (r + j) mod 13, so 13 runs put each of the 11 providers through each of the 13 faults.
The settings are short so that the table takes minutes: connect timeout 0.5 s, read timeout
1 s, deadline 2 s, 2 retries, breaker after 3 consecutive transient failures, answer cap 1 MiB.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from cti_assets.providers import base
from cti_assets.sandbox import ProviderSandbox
from tests.reliability.support import DAY, LEAKY_VARS, public_ips

API_PROVIDERS = tuple(p for p in base.ALL_PROVIDERS if p != base.NETWORK_CONTEXT)
ALL = 100_000  # every request of the run
CONNECT_S, READ_S, DEADLINE_S, RETRIES, BREAKER, WORKERS = 0.5, 1.0, 2.0, 2, 3, 4
RECOVERS = frozenset({base.OK, base.NOT_FOUND})
FAILS = frozenset({base.ERROR, base.DEFERRED})


@dataclass(frozen=True)
class Fault:
    label: str
    sandbox_fault: str | None  # None: connection refused (the provider's URL is a closed port)
    count: int
    allowed: frozenset[str]  # statuses of the rows the provider was asked about
    trips_breaker: bool = False  # whether the breaker bounds the requests


FAULTS = (
    Fault("429 with Retry-After (2)", "http_429", 2, RECOVERS),
    Fault("429 forever", "http_429", ALL, frozenset({base.ERROR})),
    Fault("quota exhausted", "quota", ALL, frozenset({base.ERROR})),
    Fault("5xx burst (2)", "http_503", 2, RECOVERS),
    Fault("hang", "hang", ALL, FAILS, trips_breaker=True),
    Fault("slow drip", "slow_drip", ALL, FAILS, trips_breaker=True),
    Fault("connection refused", None, 0, FAILS, trips_breaker=True),
    Fault("connection reset", "connection_reset", ALL, FAILS, trips_breaker=True),
    Fault("malformed JSON", "malformed_json", ALL, frozenset({base.ERROR})),
    Fault("HTML 200 page", "html_200", ALL, FAILS, trips_breaker=True),
    Fault("401", "http_401", ALL, frozenset({base.ERROR})),
    Fault("403", "http_403", ALL, frozenset({base.ERROR})),
    Fault("20 MB body", "huge_body", ALL, frozenset({base.ERROR})),
)
FAULT_BY_LABEL = {f.label: f for f in FAULTS}


def rotation(run: int) -> dict[str, Fault]:
    """The faults of run `run`: provider j gets fault (run + j) mod len(FAULTS)."""
    return {p: FAULTS[(run + j) % len(FAULTS)] for j, p in enumerate(API_PROVIDERS)}


def mixed_day(ips: int = 4, others: int = 2) -> list[dict]:
    """A day every provider has something to look up in: IPv4, domains, URLs, file hashes."""
    def sco(kind: str, **fields: object) -> dict:
        name = f"{kind}:{sorted(fields.items())}"
        return {"type": kind, "spec_version": "2.1",
                "id": f"{kind}--{uuid.uuid5(uuid.NAMESPACE_URL, name)}", **fields}

    objects = [sco("ipv4-addr", value=v) for v in public_ips(ips, third_octet=87)]
    objects += [sco("domain-name", value=f"fault-check-{i}.net") for i in range(others)]
    objects += [sco("url", value=f"http://fault-check-{i}.net/login") for i in range(others)]
    objects += [sco("file", hashes={"SHA-256": hashlib.sha256(f"fault-{i}".encode()).hexdigest()})
                for i in range(others)]
    return objects


def ipv4_day(count: int) -> list[dict]:
    return [{"type": "ipv4-addr", "spec_version": "2.1",
             "id": f"ipv4-addr--{uuid.uuid5(uuid.NAMESPACE_URL, v)}", "value": v}
            for v in public_ips(count, third_octet=88)]  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_env(sandbox: ProviderSandbox, data: Path, home: Path) -> dict[str, str]:
    """The run's environment: sandbox URLs and keys, generous limits, the short settings."""
    from cti_assets.cli.demo import KEYED_PROVIDERS

    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARS}
    env.update(sandbox.base_urls)
    env.update({f"{p}_API_KEY": "test-key" for p in KEYED_PROVIDERS})
    for provider in API_PROVIDERS:
        p = provider.upper()
        env.update({f"{p}_PER_SECOND": "1000", f"{p}_CONNECT_TIMEOUT_S": str(CONNECT_S),
                    f"{p}_TIMEOUT_S": str(READ_S), f"{p}_DEADLINE_S": str(DEADLINE_S),
                    f"{p}_MAX_RETRIES": str(RETRIES), f"{p}_BREAKER_FAILURES": str(BREAKER),
                    f"{p}_BREAKER_COOLDOWN_S": "600", f"{p}_MAX_WORKERS": str(WORKERS),
                    f"{p}_MAX_BODY_BYTES": str(1024 * 1024)})  # fmt: skip
    env.update({"VIRUSTOTAL_PER_MINUTE": "60000", "VIRUSTOTAL_PER_DAY": "100000",
                "SECURITYTRAILS_PER_MONTH": "100000", "SECURITYTRAILS_PER_DAY": "100000",
                "GREYNOISE_PER_DAY": "100000", "ABUSEIPDB_PER_DAY": "100000",
                "CROWDSEC_PER_DAY": "100000", "CTI_SOURCE": "local",
                "CTI_DATA_DIR": str(data), "DAGSTER_HOME": str(home)})  # fmt: skip
    return env


@dataclass
class ProviderRow:
    provider: str
    fault: str
    rows: int
    statuses: Counter
    attempted: Counter  # statuses of the rows the provider was asked about
    requests: int | None  # at the sandbox (None: refused, nothing reached it)
    attempts: int  # http requests the lookup counted (connection attempts included)
    step_s: float


@dataclass
class RunResult:
    run_id: str
    status: str
    observables_in: int
    scored: int
    lost: int
    wall_s: float
    step_s: dict[str, float] = field(default_factory=dict)
    providers: dict[str, ProviderRow] = field(default_factory=dict)


def _step_durations(instance, run_id: str) -> dict[str, float]:
    import dagster as dg

    starts: dict[str, float] = {}
    spans: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS,
                                  dg.DagsterEventType.STEP_FAILURE):
            spans[event.step_key] = entry.timestamp - starts.get(event.step_key, entry.timestamp)
    return spans


def _lookup_calls(instance, run_id: str, provider: str) -> int:
    import dagster as dg

    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.dagster_event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == f"{provider}_lookups":
            value = materialization.metadata.get("http_requests")
            return int(value.value) if value is not None else 0
    return 0


def enrichment_job():
    """The enrichment job, for `dg.reconstructable` (step processes load it by this name)."""
    from cti_assets.cli.runs import load_defs

    return load_defs().resolve_job_def("enrichment")


def _execute(instance, *, multiprocess: bool):
    """Run the day's enrichment job, in process or multiprocess; its result (closed: the events
    are read from the instance)."""
    import dagster as dg

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if not multiprocess:
        return enrichment_job().execute_in_process(
            partition_key=DAY, instance=instance, raise_on_error=False, run_config=quiet)
    config = {**quiet, "execution": {"config": {"in_process": False}}}
    with dg.execute_job(dg.reconstructable(enrichment_job), instance, run_config=config,
                        tags={"dagster/partition": DAY}, raise_on_error=False) as result:
        return result


def run_day(root: Path, objects: list[dict], faults: dict[str, Fault], *,
            multiprocess: bool = False) -> RunResult:
    """Import `objects` on DAY into a fresh installation under `root`, inject `faults` into a
    fresh sandbox and materialise the day with the enrichment job (in process, or with the
    multiprocess executor); what came out."""
    import dagster as dg

    from cti_assets.cli.runs import PROJECT_DAGSTER_YAML
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    data, home = root / "data", root / "data" / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_bytes(PROJECT_DAGSTER_YAML.read_bytes())
    with ProviderSandbox() as sandbox:
        env = run_env(sandbox, data, home)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # step processes import it
        for provider, fault in faults.items():
            if fault.sandbox_fault is None:
                from cti_assets.providers.config import URL_VARS

                env[URL_VARS[provider]] = f"http://127.0.0.1:{closed_port()}"
            else:
                sandbox.inject(provider, fault.sandbox_fault, fault.count)
        with mock.patch.dict(os.environ, env, clear=True):
            moment = datetime.fromisoformat(f"{DAY}T09:00:00").replace(tzinfo=UTC)
            LocalStixStore().write_objects(objects, first_seen_at=moment)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                started = time.perf_counter()
                result = _execute(instance, multiprocess=multiprocess)
                wall_s = time.perf_counter() - started
                run = instance.get_run_by_id(result.run_id)
                status = run.status.value if run else "missing"
                spans = _step_durations(instance, result.run_id)
                calls = {p: _lookup_calls(instance, result.run_id, p) for p in faults}
            ids_in = set(read_partition("observables", DAY)["stix_id"])
            scores = read_partition("observable_scores", DAY)
            scored = set(scores.loc[scores["observable_status"].notna(), "stix_id"])
            out = RunResult(result.run_id, status, len(ids_in), len(scored & ids_in),
                            len(ids_in - scored), wall_s, spans)
            for provider, fault in faults.items():
                frame = read_partition(f"{provider}_lookups", DAY)
                statuses = Counter(f"{s}/{r}" if isinstance(r, str) else s
                                   for s, r in zip(frame["status"], frame["reason"], strict=True))
                asked = frame[~frame["status"].eq(base.SKIPPED)
                              & ~frame["reason"].isin([base.DEFER_BUDGET, base.DEFER_TRIAGE])]
                out.providers[provider] = ProviderRow(
                    provider, fault.label, len(frame), statuses, Counter(asked["status"]),
                    None if fault.sandbox_fault is None else sandbox.request_count(provider),
                    calls[provider], spans.get(f"{provider}_lookups", 0.0))
    return out


# shodan answers from InternetDB when its host API says 403 (clients/shodan.py): InternetDB
# then also receives shodan's rows, and shodan's rows carry InternetDB's outcome
FALLBACK = {base.SHODAN: (base.INTERNETDB, "403")}


def allowed_statuses(provider: str, fault: Fault) -> frozenset[str]:
    if FALLBACK.get(provider, (None, None))[1] == fault.label:
        return fault.allowed | RECOVERS
    return fault.allowed


def request_bound(result: RunResult, faults: dict[str, Fault], provider: str) -> int:
    """Most requests a provider may receive under its fault: the breaker's threshold plus the
    workers already in flight when it opens; otherwise every asked row's tries (plus the rows
    another provider sends it as a fallback)."""
    row, fault = result.providers[provider], faults[provider]
    bound = BREAKER + WORKERS if fault.trips_breaker else sum(row.attempted.values()) * (
        RETRIES + 1)
    for other, (target, label) in FALLBACK.items():
        if target == provider and other in faults and faults[other].label == label:
            bound += sum(result.providers[other].attempted.values()) * (RETRIES + 1)
    return bound


def provider_table_row(row: ProviderRow, run: RunResult, number: int) -> str:
    shown = ", ".join(f"{k} {v}" for k, v in sorted(row.statuses.items()))
    requests = (f"{row.attempts} connection attempts" if row.requests is None
                else str(row.requests))
    return (f"| {row.provider} | {row.fault} | {number} | {run.status} | {run.observables_in} | "
            f"{run.scored} | {run.lost} | {shown} | {requests} | {row.step_s:.2f} | "
            f"{run.wall_s:.1f} |")


TABLE_HEADER = ("| provider | fault | run | run status | in | out | lost | statuses (the "
                "provider's lookup asset) | provider requests | lookup step s | run s |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")
