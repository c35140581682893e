"""A killed lookup loses at most the requests in flight (issue 21 item 3).

A subprocess looks a day up with two workers; the first request hangs, so in submission order
nothing after it would be collected. It is killed with SIGKILL once other answers arrived; the
rerun must not ask the provider again for any answer the dead process had received.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd

from cti_assets import tables
from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame

VALUES = [f"45.83.66.{i}" for i in range(1, 41)]
LOOKUP_SCRIPT = """
import sys
from dataclasses import replace
import pandas as pd
from cti_assets import tables
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame
base_url, cache_path, *values = sys.argv[1:]
conf = replace(settings_from_env("shodan_internetdb", {}), base_url=base_url, max_workers=2,
               timeout_s=60.0, deadline_s=60.0)
rows = [{"stix_id": f"ipv4-addr--{i}", "entity_type": "IPv4-Addr", "value": v,
         "normalized_value": v, "tlp": "TLP:GREEN", "status": "ok"} for i, v in enumerate(values)]
lookup_frame("shodan_internetdb", pd.DataFrame(rows, columns=list(tables.OBSERVABLE_COLUMNS)),
             conf, cache=ResponseCache(cache_path))
"""


def observables(values):
    rows = [{"stix_id": f"ipv4-addr--{i}", "entity_type": "IPv4-Addr", "value": v,
             "normalized_value": v, "tlp": "TLP:GREEN", "status": "ok"}
            for i, v in enumerate(values)]  # fmt: skip
    return pd.DataFrame(rows, columns=list(tables.OBSERVABLE_COLUMNS))


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_kill_minus_9_after_answers_arrived_then_rerun_repeats_none(sb, tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    base_url = sb.base_urls["SHODAN_INTERNETDB_URL"]
    cache_path = tmp_path / "cache.sqlite"
    sb.set_latency(50, base.INTERNETDB)
    sb.inject(base.INTERNETDB, "hang")  # the first request holds one worker
    process = subprocess.Popen([sys.executable, "-c", LOOKUP_SCRIPT, base_url, str(cache_path),
                                *VALUES], env=os.environ.copy())  # fmt: skip
    try:
        wait_for(lambda: sb.request_count(base.INTERNETDB) >= 15, 60, "answers to arrive")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    records = sorted(sb.requests, key=lambda r: r.started)
    hung = min((r for r in records if r.status is None), key=lambda r: r.started)
    other_worker = [r for r in records if r is not hung]
    # The other worker started each request after it had the previous answer in hand.
    received = {r.observable for r in other_worker[:-1] if r.status is not None}
    assert len(received) >= 10

    sb.reset_log()
    sb.set_latency(0, base.INTERNETDB)
    conf = replace(settings_from_env(base.INTERNETDB, {}), base_url=base_url)
    with ResponseCache(cache_path) as cache:
        out, stats = lookup_frame(base.INTERNETDB, observables(VALUES), conf, cache=cache)
    asked_again = {r.observable for r in sb.requests} & received
    assert asked_again == set(), f"{len(asked_again)} answers paid twice"
    assert len(out) == len(VALUES) and set(out["status"]) <= {base.OK, base.NOT_FOUND}
    assert stats.cache_hits >= len(received)
    print(f"killed after {len(received)} answers; rerun sent {sb.request_count()} requests")
