"""Answers are bounded (issue 21 item 2): a 20 MB answer is read only up to the provider's cap,
ends as error/too_large, costs little memory and nothing in the cache."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace

import pytest
import requests

from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame
from cti_assets.sandbox.faults import HUGE_BODY_BYTES
from tests.providers.test_runner import frame, observable

CAP = 1024 * 1024
VALUES = [f"45.83.67.{i}" for i in range(1, 9)]


def test_the_sandbox_serves_a_whole_20_mb_json_answer(sb):
    sb.inject(base.INTERNETDB, "huge_body")
    url = f"{sb.base_urls['SHODAN_INTERNETDB_URL']}/{VALUES[0]}"
    response = requests.get(url, timeout=30)
    assert response.status_code == 200 and "content-length" not in response.headers
    assert HUGE_BODY_BYTES - 300 < len(response.content) <= HUGE_BODY_BYTES
    payload = json.loads(response.content)
    assert payload["data"][0]["attributes"]["ip_address"] == VALUES[0]


@pytest.fixture
def conf(sb, tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    return replace(settings_from_env(base.INTERNETDB, sb.base_urls), max_body_bytes=CAP,
                   max_workers=4, deadline_s=30.0)


def test_20_mb_answers_stop_at_the_cap_with_bounded_memory_and_cache(sb, conf, tmp_path):
    sb.inject(base.INTERNETDB, "huge_body", count=len(VALUES))
    cache_path = tmp_path / "cache.sqlite"
    tracemalloc.start()
    try:
        with ResponseCache(cache_path) as cache:
            tracemalloc.reset_peak()
            out, stats = lookup_frame(base.INTERNETDB, frame(*(observable(v) for v in VALUES)),
                                      conf, cache=cache)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert list(out["status"]) == [base.ERROR] * len(VALUES)
    assert set(out["reason"]) == {base.ERR_TOO_LARGE}
    assert stats.http_requests == len(VALUES)  # not retried: the answer will not shrink
    # each worker holds at most one cap's worth plus one chunk; the old full read held 20 MB each
    assert peak < conf.max_workers * 2 * CAP + 4 * CAP, f"peak {peak / 2**20:.1f} MiB"
    assert cache_path.stat().st_size < 256 * 1024
    print(f"8 x 20 MB answers: peak traced {peak / 2**20:.1f} MiB, "
          f"cache {cache_path.stat().st_size / 1024:.0f} KiB")


def test_a_declared_length_over_the_cap_is_not_read_at_all(sb, conf, tmp_path):
    small = replace(conf, max_body_bytes=50)  # InternetDB's answers are ~150 bytes
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        out, _ = lookup_frame(base.INTERNETDB, frame(observable(VALUES[0])), small, cache=cache)
    assert (out.loc[0, "status"], out.loc[0, "reason"]) == (base.ERROR, base.ERR_TOO_LARGE)
    assert "larger than 50 bytes" in out.loc[0, "message"]
