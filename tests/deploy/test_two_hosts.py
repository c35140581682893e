"""Two hosts, one state: two processes, each with its own CTI_DATA_DIR (store, SQLite files,
Dagster instance), sharing only PostgreSQL (cache index and leases, deferred ledger), Redis
(rate-limit buckets and quota records) and an S3 server (raw bodies and Parquet outputs),
materialise overlapping days against one provider sandbox, which counts every request.

1. At the same time, host A runs days 1-2 and host B days 2-3 (day 2 by both): no request is
   sent twice, and the shared per-second limits hold at the sandbox.
2. Host A runs day 4 while the sandbox allows GreyNoise one more request today and triage may
   spend one call per expensive provider; then host B runs day 4: B sends GreyNoise nothing
   (the exhaustion A recorded stops it) and looks up everything A deferred, first.
3. Host B re-scores day 1, which only A looked up: it reads A's outputs, sends nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cti_assets.providers import base
from tests.shared_services import make_bucket, postgres_schema, redis_prefix, s3_server

pytestmark = [pytest.mark.services, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAYS = ("2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20")
PER_SECOND = {base.ABUSEIPDB: 3, base.INTERNETDB: 3}  # the limits checked at the sandbox
# Arrival at the sandbox lags the permit (process and thread start, connection set-up); a window
# shorter by this lag still holds more than the limit when a burst gets through.
LAG_S = 0.25


def _with_password(url: str, password: str) -> str:
    """The URL with a password when it has none (the machine's PostgreSQL trusts loopback and
    ignores it): a secret the test can look for in metadata and logs."""
    scheme, _, rest = url.partition("://")
    user, at, host = rest.rpartition("@")
    if not at or ":" in user:
        return url
    return f"{scheme}://{user}:{password}@{host}"


def _host_env(data_dir: Path, shared: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENCTI_URL", "CTI_SOURCE", "CTI_OUTPUTS_BASE", "DAGSTER_HOME")
           and not k.startswith(("CTI_STATE_", "CTI_REDIS", "CTI_RATELIMIT", "CTI_BODIES"))}
    env.update(shared)
    env.update({"CTI_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(data_dir / "dagster_home"),
                "PYTHONPATH": str(REPO)})
    return env


def _start(env: dict[str, str], out: Path, days: tuple[str, ...], *extra: str,
           ) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.deploy.two_host_worker", "--days", *days,
               "--out", str(out), *extra]
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, out: Path) -> dict:
    code = proc.wait(timeout=900)
    log = out.with_suffix(".log").read_text()
    assert code == 0, log[-3000:]
    summary = json.loads(out.read_text())
    for day, run in summary.items():
        assert run["success"], (day, run["failures"], log[-3000:])
    return summary


def _repeated(records) -> dict:
    sent = Counter((r.provider, r.method, r.path, r.observable) for r in records)
    return {key: n for key, n in sent.items() if n > 1}


def _busiest_window(starts: list[float], width: float) -> int:
    starts = sorted(starts)
    return max((sum(1 for s in starts[i:] if s < start + width) for i, start in
                enumerate(starts)), default=0)


def _calls(summary: dict) -> int:
    return sum(v["calls"] for run in summary.values() for v in run["lookups"].values())


@pytest.mark.timeout(1500)
def test_two_hosts_share_cache_limits_quota_deferrals_and_outputs(tmp_path, monkeypatch,
                                                                  capsys):
    from cti_assets.cli import demo
    from cti_assets.sandbox import ProviderSandbox
    from cti_assets.state.config import StateConfig
    from cti_assets.state.pg_deferred import PostgresDeferredLedger
    from cti_assets.storage.outputs import read_partition

    with postgres_schema() as pg, redis_prefix() as rd, s3_server() as s3, \
            ProviderSandbox(port=0) as sandbox:
        aws = {k: v for k, v in s3.items() if k != "bucket"}
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        make_bucket(s3)
        outputs = f"s3://{s3['bucket']}/outputs"
        password = f"pw-{secrets.token_hex(6)}"
        shared = {
            **aws, **sandbox.base_urls,
            "CTI_STATE_POSTGRES_URL": _with_password(pg.url, password),
            "CTI_STATE_SCHEMA": pg.schema,
            "CTI_REDIS_URL": rd.url, "CTI_STATE_KEY_PREFIX": rd.prefix,
            "CTI_BODIES_URL": f"s3://{s3['bucket']}/bodies", "CTI_OUTPUTS_BASE": outputs,
            **{f"{p.upper()}_API_KEY": "test-key" for p in demo.KEYED_PROVIDERS},
            "SHODAN_PER_SECOND": "100", "GREYNOISE_PER_SECOND": "100",
            "SECURITYTRAILS_PER_SECOND": "100", "SECURITYTRAILS_PER_MONTH": "100000",
            "VIRUSTOTAL_PER_MINUTE": "6000", "VIRUSTOTAL_PER_DAY": "100000",
            **{f"{p.upper()}_PER_SECOND": str(n) for p, n in PER_SECOND.items()},
        }
        env_a = _host_env(tmp_path / "host_a", shared)
        env_b = _host_env(tmp_path / "host_b", shared)
        imports = ("--import-days", *DAYS)

        # 1. overlapping days at the same time
        started = time.monotonic()
        a = _start(env_a, tmp_path / "a1.json", (DAYS[1], DAYS[0]), *imports)
        b = _start(env_b, tmp_path / "b1.json", (DAYS[1], DAYS[2]), *imports)
        a1, b1 = _finish(a, tmp_path / "a1.json"), _finish(b, tmp_path / "b1.json")
        wall_1 = time.monotonic() - started
        phase_1 = list(sandbox.requests)
        assert phase_1 and _repeated(phase_1) == {}
        assert _calls(a1) + _calls(b1) == len(phase_1)
        assert _calls(a1) > 0 and _calls(b1) > 0
        busiest = {}
        for provider, limit in PER_SECOND.items():
            starts = [r.started for r in phase_1 if r.provider == provider]
            assert len(starts) > 2 * limit, provider  # enough traffic to test the limit
            assert _busiest_window(starts, 1.0 - LAG_S) <= limit, provider
            busiest[provider] = _busiest_window(starts, 1.0)
        backends = a1[DAYS[0]]["lookups"]["greynoise_lookups"]["state_backends"]
        assert backends["response_cache"].startswith("postgres index")
        assert "object store (s3)" in backends["response_cache"]
        assert backends["rate_limits"] == "buckets=redis, quota=redis"
        assert backends["deferred_ledger"].startswith("postgres")
        logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
        assert password not in json.dumps([a1, b1]) and password not in logs

        # 2. quota exhausted by A, respected by B; A's deferrals taken up by B
        # every GreyNoise request so far was accepted: one more is allowed today
        sandbox.set_daily_quota(base.GREYNOISE, sandbox.request_count(base.GREYNOISE) + 1)
        budgets = {"ops": {"lookup_triage": {"config": {"budgets": {
            p: 1 for p in base.EXPENSIVE_PROVIDERS}}}}}
        a2 = _finish(_start(env_a, tmp_path / "a2.json", (DAYS[3],),
                            "--run-config", json.dumps(budgets)), tmp_path / "a2.json")
        greynoise_a = read_partition("greynoise_lookups", DAYS[3], outputs)
        refused = greynoise_a[greynoise_a["reason"] == base.ERR_QUOTA]
        assert len(refused) > 0  # A hit the quota
        vt_a = read_partition("virustotal_lookups", DAYS[3], outputs)
        # over budget (the observables triage finds not worth a call stay deferred on any host)
        deferred_by_a = set(vt_a.loc[(vt_a["status"] == base.DEFERRED)
                                     & (vt_a["reason"] == base.DEFER_BUDGET), "stix_id"])
        assert deferred_by_a
        ledger = PostgresDeferredLedger(pg.url, schema=pg.schema)
        assert deferred_by_a <= set(ledger.pending(base.VIRUSTOTAL))

        before_b = len(sandbox.requests)
        _finish(_start(env_b, tmp_path / "b2.json", (DAYS[3],)), tmp_path / "b2.json")
        phase_2b = sandbox.requests[before_b:]
        assert [r for r in phase_2b if r.provider == base.GREYNOISE] == []
        greynoise_b = read_partition("greynoise_lookups", DAYS[3], outputs)
        assert set(greynoise_b.loc[greynoise_b["reason"] == base.ERR_QUOTA, "stix_id"]) == \
            set(refused["stix_id"])
        vt_b = read_partition("virustotal_lookups", DAYS[3], outputs).set_index("stix_id")
        assert set(vt_b.loc[list(deferred_by_a), "status"]) <= {base.OK, base.NOT_FOUND}
        triage_b = read_partition("lookup_triage", DAYS[3], outputs)
        taken_up = triage_b[(triage_b["provider"] == base.VIRUSTOTAL)
                            & triage_b["stix_id"].isin(deferred_by_a)]
        assert taken_up["selected"].all() and (taken_up["reason"] == "previously_deferred").all()
        assert set(ledger.pending(base.VIRUSTOTAL)) & deferred_by_a == set()
        ledger.close()
        vt_calls_b = sum(1 for r in phase_2b if r.provider == base.VIRUSTOTAL)
        assert vt_calls_b >= len(deferred_by_a)
        assert _repeated(sandbox.requests) == {}

        # 3. B re-scores the day only A looked up: A's outputs, read from the object store
        scores_a = read_partition("observable_scores", DAYS[0], outputs)
        before_3 = len(sandbox.requests)
        b3 = _finish(_start(env_b, tmp_path / "b3.json", (DAYS[0],), "--job", "rescore"),
                     tmp_path / "b3.json")
        assert len(sandbox.requests) == before_3
        scores_b = read_partition("observable_scores", DAYS[0], outputs)
        assert sorted(scores_b["stix_id"]) == sorted(scores_a["stix_id"])
        assert (scores_b.set_index("stix_id")["score"].fillna(-1).sort_index()
                == scores_a.set_index("stix_id")["score"].fillna(-1).sort_index()).all()
        total = len(sandbox.requests)
        # and the raw answers behind A's day, for lineage: in the object store, by digest
        state = StateConfig(postgres_url=pg.url, schema=pg.schema,
                            bodies_url=shared["CTI_BODIES_URL"])
        cache = state.open_cache()
        digests = {d for p in ("abuseipdb", "greynoise", "shodan_internetdb", "virustotal")
                   for d in read_partition(f"{p}_lookups", DAYS[0], outputs)["raw_digest"]
                   if isinstance(d, str) and d}
        assert digests and all(cache.raw_body(d) for d in digests)
        cache.close()

    with capsys.disabled():
        print(f"\n[two hosts] phase 1 (A: days 1-2, B: days 2-3, at once): {wall_1:.1f} s, "
              f"{len(phase_1)} provider requests (A {_calls(a1)}, B {_calls(b1)}), "
              f"0 sent twice; busiest 1 s at the sandbox: {busiest} (limits {PER_SECOND})")
        print(f"[two hosts] phase 2 (day 4): A {_calls(a2)} requests, GreyNoise refused "
              f"{len(refused)} rows on A; B {len(phase_2b)} requests, 0 to GreyNoise, "
              f"{len(deferred_by_a)} VirusTotal deferrals of A looked up first "
              f"({vt_calls_b} VirusTotal requests)")
        print(f"[two hosts] phase 3: B re-scored day 1 from A's outputs with 0 requests "
              f"({b3[DAYS[0]]['wall_s']} s); {len(digests)} raw answers of A's day 1 read back "
              f"from the object store; {total} requests in all, 0 repeated")
