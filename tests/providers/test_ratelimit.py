"""Shared limits: rates, the quota ledger, remaining budget, and two processes on one budget."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from cti_assets import tables
from cti_assets.providers import base
from cti_assets.providers.config import ProviderSettings, settings_from_env
from cti_assets.providers.ratelimit import SharedLimiter, end_of_window, rates_for
from cti_assets.sandbox import ProviderSandbox


def test_rates_are_ordered_and_redundant_windows_dropped():
    rates = rates_for({"second": 0.5, "minute": 4, "day": 500, "month": 15_500})
    assert [(r.limit, r.interval) for r in rates] == [
        (1, 2_000), (4, 60_000), (500, 86_400_000), (15_500, 30 * 86_400_000)]
    # 10/s is never reachable under 5/min: only the minute window is kept
    assert [(r.limit, r.interval) for r in rates_for({"second": 10, "minute": 5})] == [
        (5, 60_000)]
    assert rates_for({}) == []


def test_end_of_window_is_the_next_utc_day_or_month():
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert end_of_window("day", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert end_of_window("month", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert end_of_window("month", datetime(2026, 2, 10, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC)


def test_ledger_is_shared_between_limiters_on_one_file(tmp_path):
    path = tmp_path / "rl.sqlite"
    first = SharedLimiter("virustotal", {"minute": 100}, path=path)
    second = SharedLimiter("virustotal", {"minute": 100}, path=path)
    other = SharedLimiter("abuseipdb", {}, path=path)
    assert first.acquire() is None
    until = first.mark_exhausted("day", "Quota exceeded")
    assert until > datetime.now(UTC)
    blocked = second.acquire()
    assert blocked is not None and blocked.error_class == base.ERR_QUOTA
    assert second.exhausted_until() == until and second.remaining("minute") == 0
    assert other.acquire() is None  # another provider is not affected
    first.clear_exhausted()
    assert second.acquire() is None
    for limiter in (first, second, other):
        limiter.close()


def test_past_exhaustion_does_not_block(tmp_path):
    limiter = SharedLimiter("greynoise", {}, path=tmp_path / "rl.sqlite")
    limiter.mark_exhausted("day", "old", until=datetime.now(UTC) - timedelta(seconds=1))
    assert limiter.acquire() is None and limiter.exhausted_until() is None
    limiter.close()


def test_remaining_counts_every_acquire_and_trusts_the_lower_report(tmp_path):
    path = tmp_path / "rl.sqlite"
    limiter = SharedLimiter("abuseipdb", {"day": 5}, path=path)
    peer = SharedLimiter("abuseipdb", {"day": 5}, path=path)
    assert limiter.remaining("day") == 5
    assert limiter.acquire() is None and peer.acquire() is None
    assert limiter.remaining("day") == 3 and peer.used("day") == 2
    limiter.record_reported("day", 1)
    assert peer.remaining("day") == 1
    assert limiter.remaining("month") is None  # no monthly limit, no report
    with pytest.raises(ValueError, match="window"):
        limiter.remaining("week")
    limiter.close()
    peer.close()


def test_slot_beyond_the_allowed_wait_is_refused_without_sleeping(tmp_path):
    limiter = SharedLimiter("shodan", {"minute": 1}, path=tmp_path / "rl.sqlite",
                            max_wait_s=0.2)
    assert limiter.acquire() is None
    blocked = limiter.acquire()
    assert blocked.error_class == base.ERR_RATE and blocked.window == "minute"
    day = SharedLimiter("securitytrails", {"day": 1}, path=tmp_path / "rl.sqlite",
                        max_wait_s=0.2)
    assert day.acquire() is None
    assert day.acquire().error_class == base.ERR_QUOTA
    limiter.close()
    day.close()


def test_for_settings_uses_the_settings_limits(tmp_path):
    settings = ProviderSettings("virustotal", per_minute=4, per_day=500, per_month=15_500)
    limiter = SharedLimiter.for_settings(settings, path=tmp_path / "rl.sqlite")
    assert limiter.remaining("day") == 500 and limiter.remaining("month") == 15_500
    assert limiter.remaining("second") is None
    limiter.close()


def test_module_remaining_reads_the_environment(tmp_path, monkeypatch):
    from cti_assets.providers.ratelimit import remaining

    monkeypatch.setenv("VIRUSTOTAL_PER_DAY", "7")
    monkeypatch.delenv("VIRUSTOTAL_BASE_URL", raising=False)  # the documented endpoint's state
    path = tmp_path / "rl.sqlite"
    with SharedLimiter("virustotal", {"day": 7}, path=path) as limiter:
        assert limiter.acquire() is None
    assert remaining("virustotal", "day", path=path) == 6


def test_default_path_is_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    limiter = SharedLimiter("greynoise", {"day": 3})
    assert limiter.path == tmp_path / "ratelimit" / "greynoise.sqlite" and limiter.path.exists()
    limiter.close()


def test_calls_to_another_endpoint_never_spend_the_real_accounts_quota(tmp_path, monkeypatch):
    """The demo's calls to the sandbox are counted apart: a later run against the real
    VirusTotal has its whole day's budget, and its triage is not cut short by made-up calls."""
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    real = replace(settings_from_env(base.VIRUSTOTAL, {}), per_day=500)
    sandbox = replace(real, base_url="http://127.0.0.1:8765/virustotal/api/v3")
    assert real.state_name == base.VIRUSTOTAL and sandbox.state_name != real.state_name
    with SharedLimiter.for_settings(sandbox) as demo:
        for _ in range(3):
            assert demo.acquire() is None
        demo.mark_exhausted("day", "the sandbox said 429")
        assert demo.remaining("day") == 0
    with SharedLimiter.for_settings(real) as production:
        assert production.remaining("day") == 500 and production.exhausted_until() is None
        assert production.path == tmp_path / "ratelimit" / "virustotal.sqlite"
    for same_place in ("https://WWW.virustotal.com/api/v3/",
                       "https://www.virustotal.com:443/api/v3"):  # written otherwise
        assert replace(real, base_url=same_place).state_name == base.VIRUSTOTAL
        assert replace(real, base_url=same_place).origin == real.origin
    gateway = replace(real, base_url="https://gw.example/t/tok-123/vt?apikey=tok-456")
    assert "tok-" not in gateway.origin and "tok-" not in gateway.state_name  # digests only


def _redis_url():
    try:
        import redis

        url = "redis://127.0.0.1:6379/15"
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        return url
    except Exception:
        return None


@pytest.mark.services
@pytest.mark.skipif(_redis_url() is None, reason="no Redis on 127.0.0.1:6379")
def test_redis_bucket_is_shared(tmp_path):
    import redis

    url = _redis_url()
    provider = f"redis_test_{uuid.uuid4().hex[:8]}"
    try:
        first = SharedLimiter(provider, {"minute": 3}, path=tmp_path / "rl.sqlite",
                              redis_url=url, max_wait_s=0.2)
        second = SharedLimiter(provider, {"minute": 3}, path=tmp_path / "rl.sqlite",
                               redis_url=url, max_wait_s=0.2)
        assert first.acquire() is None and second.acquire() is None
        assert first.remaining("minute") == 1
        assert second.acquire() is None
        assert first.acquire().error_class == base.ERR_RATE
        first.close()
        second.close()
    finally:
        redis.Redis.from_url(url).delete(f"cti_assets:ratelimit:{provider}")


PER_SECOND = 4
PER_PROCESS = 6


def _run_share(env: dict[str, str], limiter_path: str, cache_path: str, offset: int) -> None:
    """Child process: look up PER_PROCESS InternetDB addresses under the shared limit."""
    from cti_assets.providers.cache import ResponseCache
    from cti_assets.providers.runner import lookup_frame

    os.environ.update(env)
    settings = replace(settings_from_env(base.INTERNETDB, env), per_second=PER_SECOND,
                       max_workers=4)
    limiter = SharedLimiter.for_settings(settings, path=limiter_path)
    values = [f"45.83.80.{offset + i}" for i in range(PER_PROCESS)]
    rows = [{"stix_id": f"ipv4-addr--{v}", "entity_type": "IPv4-Addr", "value": v,
             "normalized_value": v, "tlp": "TLP:CLEAR", "status": "ok"} for v in values]
    observables = pd.DataFrame(rows, columns=list(tables.OBSERVABLE_COLUMNS))
    out, _ = lookup_frame(base.INTERNETDB, observables, settings,
                          cache=ResponseCache(cache_path), limiter=limiter)
    assert len(out) == PER_PROCESS


@pytest.mark.timeout(60)
def test_two_processes_share_one_per_second_limit(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ProviderSandbox() as sb:
        env = dict(sb.base_urls, CTI_DATA_DIR=str(tmp_path))
        workers = [
            ctx.Process(target=_run_share, args=(env, str(tmp_path / "ratelimit.sqlite"),
                                                 str(tmp_path / f"cache{n}.sqlite"), 10 * n))
            for n in (1, 2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(50)
        assert [w.exitcode for w in workers] == [0, 0]
        starts = sorted(r.started for r in sb.requests if r.provider == base.INTERNETDB)
    assert len(starts) == 2 * PER_PROCESS
    # any one-second window holds at most PER_SECOND. Arrival at the sandbox lags the permit
    # by thread start and connection set-up, which on a loaded 2-core machine reaches a few
    # tenths of a second (seen: 60 ms), so the window is measured less 250 ms of that lag; a
    # limiter that lets a burst past the limit still puts more than 4 arrivals inside it, and
    # the spread below catches one that is merely too fast on average.
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + 0.75]
        assert len(in_window) <= PER_SECOND, (i, [round(s - starts[0], 3) for s in starts])
    # and the limit really spread them out: 12 requests at 4/s need more than 2 s
    assert starts[-1] - starts[0] >= (2 * PER_PROCESS / PER_SECOND) - 1.05
