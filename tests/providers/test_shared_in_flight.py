"""Requests in flight are shared (issue 20 item 5): two processes looking up the same values at
the same moment pay each call once, counted at the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache

VALUES = [f"45.83.68.{i}" for i in range(1, 25)]
RACER = """
import os, sys, time
from dataclasses import replace
import pandas as pd
from cti_assets import tables
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame
base_url, cache_path, gate, *values = sys.argv[1:]
conf = replace(settings_from_env("shodan_internetdb", {}), base_url=base_url, max_workers=4)
rows = [{"stix_id": f"ipv4-addr--{i}", "entity_type": "IPv4-Addr", "value": v,
         "normalized_value": v, "tlp": "TLP:GREEN", "status": "ok"} for i, v in enumerate(values)]
observables = pd.DataFrame(rows, columns=list(tables.OBSERVABLE_COLUMNS))
cache = ResponseCache(cache_path)
print("ready", flush=True)
while not os.path.exists(gate):
    time.sleep(0.005)
out, stats = lookup_frame("shodan_internetdb", observables, conf, cache=cache)
assert len(out) == len(values) and set(out["status"]) <= {"ok", "not_found"}, out["status"]
print(stats.calls, stats.cache_hits, flush=True)
"""


def test_two_processes_at_once_request_each_value_once(sb, tmp_path):
    sb.set_latency(150, base.INTERNETDB)
    gate = tmp_path / "go"
    cache_path = tmp_path / "cache.sqlite"
    args = [sys.executable, "-c", RACER, sb.base_urls["SHODAN_INTERNETDB_URL"], str(cache_path),
            str(gate), *VALUES]  # fmt: skip
    env = {**os.environ, "CTI_DATA_DIR": str(tmp_path / "data")}
    racers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
              for _ in range(2)]  # fmt: skip
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        gate.touch()
        outputs = [racer.communicate(timeout=120)[0] for racer in racers]
        wall_s = time.perf_counter() - started
    finally:
        for racer in racers:
            racer.kill()
    assert [r.returncode for r in racers] == [0, 0], outputs
    per_value = Counter(r.observable for r in sb.requests)
    assert set(per_value) == set(VALUES)
    repeated = {v: n for v, n in per_value.items() if n > 1}
    assert repeated == {}, f"{sum(repeated.values()) - len(repeated)} repeated calls"
    calls = [int(out.split()[0]) for out in outputs]
    hits = [int(out.split()[1]) for out in outputs]
    assert sum(calls) == len(VALUES) and sum(hits) == len(VALUES)  # the waiters read the cache
    with ResponseCache(cache_path) as cache:
        assert all(cache.claim(base.INTERNETDB, "IPv4-Addr", v, 1.0) for v in VALUES)  # released
    print(f"2 processes x {len(VALUES)} values: {len(sb.requests)} requests, {wall_s:.2f} s")


def test_a_lease_of_a_dead_process_is_taken_over_at_once(tmp_path):
    path = tmp_path / "cache.sqlite"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with ResponseCache(path) as mine, ResponseCache(path) as other:
        assert other.claim("p", "IPv4-Addr", "45.83.68.1", lease_s=600)
        assert not mine.claim("p", "IPv4-Addr", "45.83.68.1", lease_s=600)
        other.holder = other.holder.replace(f":{os.getpid()}:", f":{dead.stdout.strip()}:")
        mine._conn.execute("UPDATE leases SET holder = ?", (other.holder,))
        mine._conn.commit()
        assert mine.claim("p", "IPv4-Addr", "45.83.68.1", lease_s=600)


def test_an_answer_stored_after_the_run_looked_is_used_an_older_one_is_refreshed(tmp_path):
    from dataclasses import replace as with_fields
    from datetime import UTC, datetime

    from cti_assets.providers.config import settings_from_env
    from cti_assets.providers.runner import _wait_for_lease

    conf = settings_from_env(base.INTERNETDB, {})
    key = ("IPv4-Addr", "45.83.68.1")
    answer = base.LookupResult(base.INTERNETDB, *key, status=base.OK,
                               fetched_at=datetime.now(UTC))  # fmt: skip
    with ResponseCache(tmp_path / "cache.sqlite") as other, \
            ResponseCache(tmp_path / "cache.sqlite") as mine:
        other.put(answer, b"{}", ttl_s=600, origin=conf.origin)  # released before the claim
        since = answer.fetched_at.timestamp() - 1
        assert _wait_for_lease(base.INTERNETDB, key, conf, mine, since).from_cache
        assert mine.claim(base.INTERNETDB, *key, 1.0)  # the lease was given back
        mine.release(base.INTERNETDB, *key)
        other.put(with_fields(answer, fetched_at=datetime(2020, 1, 1, tzinfo=UTC)), b"{}", 600,
                  origin=conf.origin)
        assert _wait_for_lease(base.INTERNETDB, key, conf, mine, since) is None  # forced: fetch


def test_an_answer_received_before_the_run_but_stored_after_its_look_is_not_paid_again(tmp_path):
    """Another host received the answer just before this run began and stored it (body upload
    first) just after this run's cache look: a lookup that is not refreshed takes it."""
    from datetime import UTC, datetime, timedelta

    from cti_assets.providers.config import settings_from_env
    from cti_assets.providers.runner import _wait_for_lease

    conf = settings_from_env(base.INTERNETDB, {})
    key = ("IPv4-Addr", "45.83.68.2")
    since = datetime.now(UTC)
    answer = base.LookupResult(base.INTERNETDB, *key, status=base.OK,
                               fetched_at=since - timedelta(milliseconds=40))  # fmt: skip
    with ResponseCache(tmp_path / "cache.sqlite") as other, \
            ResponseCache(tmp_path / "cache.sqlite") as mine:
        # this run's look: nothing yet
        assert mine.get(base.INTERNETDB, *key, origin=conf.origin) is None
        other.put(answer, b"{}", ttl_s=600, origin=conf.origin)
        used = _wait_for_lease(base.INTERNETDB, key, conf, mine, None)  # not refreshed
        assert used is not None and used.from_cache
        assert _wait_for_lease(base.INTERNETDB, key, conf, mine, since.timestamp()) is None
        mine.release(base.INTERNETDB, *key)
