"""Fail fast: a dead provider costs a run about one timeout, not one per row (issue 20 item 3).

Each scenario looks up a 60-observable day against the sandbox with the provider failing on
every request; the wall-time bound is derived from the configured timeouts, never slept for.
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest

from cti_assets.providers import base
from cti_assets.providers.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.clients.shodan import InternetDBClient
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame
from tests.providers.test_runner import frame, observable

DAY = [f"45.83.{64 + i // 200}.{1 + i % 200}" for i in range(60)]


@pytest.fixture
def env(sb, tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    return dict(sb.base_urls)


@pytest.fixture
def cache(tmp_path):
    with ResponseCache(tmp_path / "cache.sqlite") as store:
        yield store


def fast_fail_settings(env, **overrides):
    values = dict(connect_timeout_s=0.5, timeout_s=1.0, deadline_s=1.5, max_workers=4,
                  max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05, breaker_failures=3,
                  breaker_cooldown_s=60.0)  # fmt: skip
    values.update(overrides)
    return replace(settings_from_env(base.INTERNETDB, env), **values)


def worst_case_s(conf) -> float:
    """What the first wave of workers can cost: one connect plus one whole deadline."""
    return conf.connect_timeout_s + conf.deadline_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_day(conf, cache):
    observables = frame(*(observable(v) for v in DAY))
    started = time.perf_counter()
    out, stats = lookup_frame(base.INTERNETDB, observables, conf, cache=cache)
    return out, stats, time.perf_counter() - started


def assert_failed_fast(out, conf, wall_s):
    assert len(out) == len(DAY) and out["status"].notna().all()  # nothing lost
    assert set(out["status"]) <= {base.DEFERRED, base.ERROR}
    deferred = out[out["status"] == base.DEFERRED]
    assert set(deferred["reason"]) == {base.DEFER_UNAVAILABLE}
    assert len(deferred) >= len(DAY) - conf.max_workers
    assert set(out.loc[out["status"] == base.ERROR, "reason"]) <= {base.ERR_TRANSIENT}
    assert wall_s < 2 * worst_case_s(conf), f"{wall_s:.2f} s for a dead provider"


@pytest.mark.parametrize("fault", ["hang", "slow_drip"])
def test_a_provider_failing_every_request_costs_one_timeout_not_one_per_row(sb, env, cache,
                                                                             fault):
    sb.inject(base.INTERNETDB, fault, count=10_000)
    conf = fast_fail_settings(env)
    out, stats, wall_s = run_day(conf, cache)
    assert_failed_fast(out, conf, wall_s)
    sent = sb.request_count(base.INTERNETDB)
    assert sent <= conf.max_workers + conf.breaker_failures  # first wave + retries in flight
    assert stats.http_requests == sent
    print(f"{fault}: {len(DAY)} observables, {sent} requests, {wall_s:.2f} s")


def test_connection_refused_costs_one_timeout_not_one_per_row(sb, env, cache):
    conf = fast_fail_settings(env, base_url=f"http://127.0.0.1:{free_port()}")
    out, stats, wall_s = run_day(conf, cache)
    assert_failed_fast(out, conf, wall_s)
    assert stats.http_requests <= conf.max_workers + conf.breaker_failures


def test_open_breaker_sends_nothing_and_a_half_open_probe_closes_it(sb, env):
    now = [0.0]
    breaker = CircuitBreaker(2, cooldown_s=30.0, clock=lambda: now[0])
    conf = fast_fail_settings(env, max_retries=0)
    client = InternetDBClient(conf, breaker=breaker)
    sb.inject(base.INTERNETDB, "http_503", count=2)
    assert client.lookup("IPv4-Addr", DAY[0]).reason == base.ERR_TRANSIENT
    assert breaker.state == CLOSED
    assert client.lookup("IPv4-Addr", DAY[1]).reason == base.ERR_TRANSIENT
    assert breaker.state == OPEN
    before = sb.request_count()
    refused = client.lookup("IPv4-Addr", DAY[2])
    assert (refused.status, refused.reason) == (base.DEFERRED, base.DEFER_UNAVAILABLE)
    assert sb.request_count() == before  # no request while open
    now[0] += 30.0
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one probe
    breaker.cancel()
    probe = client.lookup("IPv4-Addr", DAY[2])
    assert probe.status in (base.OK, base.NOT_FOUND)
    assert breaker.state == CLOSED and sb.request_count() == before + 1
    client.close()


def test_a_failed_probe_reopens_the_breaker():
    now = [0.0]
    breaker = CircuitBreaker(3, cooldown_s=10.0, clock=lambda: now[0])
    for _ in range(3):
        breaker.record_failure()
    now[0] = 10.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == OPEN and not breaker.allow()
    now[0] = 19.9
    assert not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()


def test_rate_limits_and_not_found_do_not_open_the_breaker(sb, env, cache):
    sb.inject(base.INTERNETDB, "http_429", count=5)
    conf = fast_fail_settings(env, max_workers=1, max_retries=0, breaker_failures=2)
    out, _, _ = run_day(conf, cache)
    assert base.DEFERRED not in set(out["status"])
    assert (out["reason"] == base.ERR_RATE).sum() == 5


def test_rows_deferred_earlier_are_sent_first(sb, env, cache):
    conf = fast_fail_settings(env, max_workers=1)
    rows = [observable(v) for v in DAY[:10]]
    late = {rows[7]["stix_id"], rows[9]["stix_id"]}
    lookup_frame(base.INTERNETDB, frame(*rows), conf, cache=cache, retry_first=late)
    first_two = [r.observable for r in sb.requests[:2]]
    assert first_two == [DAY[7], DAY[9]]
