"""Request spacing (GCRA): slots, cancelled callers, and processes sharing one schedule."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from dataclasses import replace

import pandas as pd
import pytest

from cti_assets import tables
from cti_assets.providers import base, spacing
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.ratelimit import SharedLimiter
from cti_assets.sandbox import ProviderSandbox

REDIS_URL = "redis://127.0.0.1:6379/15"


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _redis_url() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
        return REDIS_URL
    except Exception:
        return None


def _backend_url(backend: str) -> str:
    """The Redis URL for the redis backend ("" for SQLite); skips when Redis is absent."""
    if backend != "redis":
        return ""
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis answering on 127.0.0.1:6379 (db 15)")
    return url


def test_interval_is_the_per_second_rate_with_headroom():
    assert spacing.interval_for(10.0) == pytest.approx(1 / (spacing.HEADROOM * 10))
    assert spacing.interval_for(0.0) is None and spacing.interval_for(None) is None


def test_slots_are_spaced_and_a_far_slot_is_refused_without_reserving(tmp_path):
    clock = FakeClock()
    spacer = spacing.SqliteSpacer(tmp_path / "rl.sqlite", "p", 0.5, clock=clock)
    slots = [spacer.reserve(max_wait_s=1.0) for _ in range(3)]
    assert slots == [(1000.0, 0.0), (1000.5, 0.5), (1001.0, 1.0)]
    assert spacer.reserve(max_wait_s=1.0) is None  # 1.5 s away: nothing reserved
    clock.now = 1000.6
    assert spacer.reserve(max_wait_s=1.0) == (1001.5, pytest.approx(0.9))
    clock.now = 1010.0  # idle: the next request goes at once, no burst credit
    assert spacer.reserve(max_wait_s=0.0) == (1010.0, 0.0)
    assert spacer.reserve(max_wait_s=0.0) is None
    spacer.close()


def _spacers(tmp_path, interval: float):
    """A SQLite spacer and, when Redis answers, a Redis one."""
    made = [spacing.SqliteSpacer(tmp_path / "rl.sqlite", "p", interval)]
    url = _redis_url()
    if url is not None:
        import redis

        made.append(spacing.RedisSpacer(redis.Redis.from_url(url),
                                        f"test:spacing:{uuid.uuid4().hex[:8]}", interval))
    return made


def test_a_cancelled_wait_gives_its_slot_back(tmp_path):
    for spacer in _spacers(tmp_path, 5.0):
        assert spacing.wait_for_slot(spacer, 60.0)  # the first slot: no wait

        def interrupted(_seconds: float) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            spacing.wait_for_slot(spacer, 60.0, sleep=interrupted)
        # the last slot stepped back: the next caller gets the same one, not one 5 s later
        second = spacer.reserve(60.0)
        assert second is not None and 4.0 < second[1] <= 5.0, second
        third = spacer.reserve(60.0)
        assert third is not None and third[0] == pytest.approx(second[0] + 5.0)
        # a cancelled slot in the middle is kept aside and handed to the next caller
        spacer.release(second[0])
        again = spacer.reserve(60.0)
        assert again is not None and again[0] == pytest.approx(second[0])
        after = spacer.reserve(60.0)
        assert after is not None and after[0] == pytest.approx(third[0] + 5.0)
        spacer.close()


def test_a_slot_woken_too_late_is_spent_and_the_next_one_taken(tmp_path):
    clock = FakeClock()
    spacer = spacing.SqliteSpacer(tmp_path / "rl.sqlite", "p", 0.5, clock=clock)
    assert spacer.reserve(1.0) == (1000.0, 0.0)  # another caller holds the first slot
    late_by = [0.3]  # a starved thread: its first wake comes 0.3 s after its slot, then on time

    def sleep(seconds: float) -> None:
        clock.now += seconds + (late_by.pop() if late_by else 0.0)

    assert spacing.wait_for_slot(spacer, 10.0, sleep=sleep, clock=clock)
    # slot 1000.5 was reached at 1000.8, too late to be used beside the next slots: the caller
    # left on slot 1001.0 instead, and the schedule goes on after it
    assert clock.now == pytest.approx(1001.0)
    following = spacer.reserve(10.0)
    assert following is not None and following[0] == pytest.approx(1001.5)
    spacer.close()


def test_a_caller_always_woken_late_gives_up_at_its_max_wait(tmp_path):
    clock = FakeClock()
    spacer = spacing.SqliteSpacer(tmp_path / "rl.sqlite", "p", 0.5, clock=clock)
    spacer.reserve(1.0)

    def starved(seconds: float) -> None:
        clock.now += seconds + 2 * spacing.LATE_S

    assert not spacing.wait_for_slot(spacer, 2.0, sleep=starved, clock=clock)
    assert clock.now <= 1000.0 + 2.0 + 0.5 + 2 * spacing.LATE_S
    spacer.close()


def test_limiter_sleeps_until_its_slot(tmp_path):
    limiter = SharedLimiter("spaced", {"second": 4}, path=tmp_path / "rl.sqlite")
    started = time.monotonic()
    for _ in range(3):
        assert limiter.acquire() is None
    # three requests at 0.9 x 4/s: the third leaves two intervals after the first
    assert time.monotonic() - started >= 2 * spacing.interval_for(4) - 0.01
    limiter.close()


# --- processes sharing one schedule ---------------------------------------------------------
RATE = 10.0
PER_PROCESS = 12
PROCESSES = 4


def _acquire_many(path: str, redis_url: str, key_prefix: str, queue) -> None:
    limiter = SharedLimiter("spaced", {"second": RATE}, path=path, redis_url=redis_url,
                            key_prefix=key_prefix)
    stamps = []
    for _ in range(PER_PROCESS):
        assert limiter.acquire() is None
        stamps.append(time.time())
    limiter.close()
    queue.put(stamps)


def _max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    return max(sum(1 for s in stamps[i:] if s < start + window) for i, start in enumerate(stamps))


@pytest.mark.timeout(90)
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def test_processes_together_never_exceed_the_rate_in_any_window(tmp_path, backend):
    redis_url = _backend_url(backend)
    prefix = f"test_{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_acquire_many,
                           args=(str(tmp_path / "rl.sqlite"), redis_url, prefix, queue))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    stamps = [s for _ in workers for s in queue.get(timeout=80)]
    for worker in workers:
        worker.join(10)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    assert len(stamps) == PROCESSES * PER_PROCESS
    # the permits, as the processes saw them return: never more than the rate in any second
    assert _max_in_window(stamps, 1.0) <= RATE, sorted(stamps)
    # and close to the target pace (0.9 x rate): the spacing is not just slow. Processes start
    # at different times, so the first permits may come at a lower pace: the rate is measured
    # over the last three quarters of them.
    tail = sorted(stamps)[len(stamps) // 4:]
    pace = (len(tail) - 1) / (tail[-1] - tail[0])
    assert 0.8 * spacing.HEADROOM * RATE <= pace <= RATE, pace


# --- against the sandbox, over a real socket --------------------------------------------------
SANDBOX_RATE = 8.0
SANDBOX_PER_PROCESS = 10


def _lookups(env: dict[str, str], limiter_path: str, redis_url: str, key_prefix: str,
             cache_path: str, offset: int) -> None:
    from cti_assets.providers.cache import ResponseCache
    from cti_assets.providers.runner import lookup_frame

    os.environ.update(env)
    settings = replace(settings_from_env(base.INTERNETDB, env), per_second=SANDBOX_RATE,
                       max_workers=4)
    limiter = SharedLimiter.for_settings(settings, path=limiter_path, redis_url=redis_url,
                                         key_prefix=key_prefix)
    values = [f"45.83.81.{offset + i}" for i in range(SANDBOX_PER_PROCESS)]
    rows = [{"stix_id": f"ipv4-addr--{v}", "entity_type": "IPv4-Addr", "value": v,
             "normalized_value": v, "tlp": "TLP:CLEAR", "status": "ok"} for v in values]
    observables = pd.DataFrame(rows, columns=list(tables.OBSERVABLE_COLUMNS))
    out, _ = lookup_frame(base.INTERNETDB, observables, settings,
                          cache=ResponseCache(cache_path), limiter=limiter)
    assert len(out) == SANDBOX_PER_PROCESS


@pytest.mark.timeout(90)
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def test_processes_get_no_429_from_a_sandbox_enforcing_the_rate(tmp_path, backend):
    redis_url = _backend_url(backend)
    prefix = f"test_{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    with ProviderSandbox(rate_limits={base.INTERNETDB: SANDBOX_RATE}) as sb:
        env = dict(sb.base_urls, CTI_DATA_DIR=str(tmp_path))
        workers = [ctx.Process(target=_lookups,
                               args=(env, str(tmp_path / "ratelimit.sqlite"), redis_url,
                                     prefix, str(tmp_path / f"cache{n}.sqlite"), 20 * n))
                   for n in range(PROCESSES)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(80)
        assert [w.exitcode for w in workers] == [0] * PROCESSES
        statuses = [r.status for r in sb.requests if r.provider == base.INTERNETDB]
    assert len(statuses) == PROCESSES * SANDBOX_PER_PROCESS  # one request each: no retries
    assert statuses.count(429) == 0 and set(statuses) <= {200, 404}, statuses
