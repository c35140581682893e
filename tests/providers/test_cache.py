"""ResponseCache: TTLs on an injected clock, errors refused, raw bodies deduplicated."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.http import register_secret, sha256_hex

ORIGIN = "https://api.greynoise.io"  # where the answers in these tests came from


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cache(tmp_path, clock):
    store = ResponseCache(tmp_path / "cache.sqlite", clock=clock)
    yield store
    store.close()


def answer(value="203.0.113.7", status=base.OK, body=b'{"ok": 1}', **fields):
    return base.LookupResult(
        provider=base.GREYNOISE, entity_type="IPv4-Addr", value=value, status=status,
        fields=fields or {"noise": True, "tags": ["a", "b"]},
        fetched_at=datetime(2027, 1, 15, tzinfo=UTC),
        raw_digest=sha256_hex(body) if body else None, http_status=200, message="m",
    )


def test_hit_within_ttl_and_miss_after(cache, clock):
    result = answer()
    assert cache.put(result, b'{"ok": 1}', ttl_s=60, origin=ORIGIN)
    hit = cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN)
    assert hit.from_cache and hit.status == base.OK
    assert hit.fields == {"noise": True, "tags": ["a", "b"]}
    assert hit.raw_digest == result.raw_digest and hit.fetched_at == result.fetched_at
    assert cache.raw_body(hit.raw_digest) == b'{"ok": 1}'
    clock.now += 61
    assert cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN) is None


def test_key_includes_provider_and_type(cache):
    cache.put(answer(), b"{}", ttl_s=60, origin=ORIGIN)
    assert cache.get(base.ABUSEIPDB, "IPv4-Addr", "203.0.113.7", origin=ORIGIN) is None
    assert cache.get(base.GREYNOISE, "IPv6-Addr", "203.0.113.7", origin=ORIGIN) is None


@pytest.mark.parametrize("status", [base.ERROR, base.SKIPPED, base.DEFERRED])
def test_only_answers_are_cached(cache, status):
    assert not cache.put(answer(status=status), b"{}", ttl_s=60, origin=ORIGIN)
    assert cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN) is None


def test_not_found_is_cached_and_replaced_by_a_newer_answer(cache, clock):
    assert cache.put(answer(status=base.NOT_FOUND), b'{"noise": false}', ttl_s=10, origin=ORIGIN)
    found = cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN)
    assert found.status == base.NOT_FOUND
    cache.put(answer(), b'{"ok": 2}', ttl_s=100, origin=ORIGIN)
    clock.now += 50
    assert cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN).status == base.OK


def test_identical_bodies_are_stored_once_and_purged_with_their_answers(cache, clock, tmp_path):
    cache.put(answer("203.0.113.1"), b'{"same": true}', ttl_s=10, origin=ORIGIN)
    cache.put(answer("203.0.113.2"), b'{"same": true}', ttl_s=1000, origin=ORIGIN)
    with sqlite3.connect(tmp_path / "cache.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM raw_bodies").fetchone()[0] == 1
    clock.now += 20
    assert cache.purge_expired() == 1
    assert cache.raw_body(sha256_hex(b'{"same": true}')) is not None
    clock.now += 2000
    assert cache.purge_expired() == 1
    assert cache.raw_body(sha256_hex(b'{"same": true}')) is None


def test_a_body_echoing_a_key_is_scrubbed(cache, tmp_path):
    register_secret("echoed-key-123456")
    cache.put(answer(), b'{"you_sent": "echoed-key-123456"}', ttl_s=60, origin=ORIGIN)
    digest = cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN).raw_digest
    assert cache.raw_body(digest) == b'{"you_sent": "REDACTED"}'
    assert b"echoed-key-123456" not in (tmp_path / "cache.sqlite").read_bytes()


def test_bodies_are_stored_compressed_and_read_back_exactly(cache, tmp_path):
    resolutions = [{"type": "resolution", "attributes": {"host_name": f"h{i}.example.com",
                                                         "ip_address": "203.0.113.7"}}
                   for i in range(20_000)]  # fmt: skip
    body = json.dumps({"data": resolutions}).encode()
    assert len(body) > 1_500_000
    cache.put(answer(), body, ttl_s=60, origin=ORIGIN)
    with sqlite3.connect(tmp_path / "cache.sqlite") as conn:
        stored, encoding = conn.execute("SELECT body, encoding FROM raw_bodies").fetchone()
    assert encoding == "zlib" and len(stored) < len(body) / 10
    assert cache.raw_body(sha256_hex(body)) == body
    assert (tmp_path / "cache.sqlite").stat().st_size < len(body) / 2


def test_uncompressed_rows_of_an_older_cache_file_are_still_read(tmp_path, clock):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the schema before compression
        conn.execute("CREATE TABLE raw_bodies (digest TEXT PRIMARY KEY, body BLOB NOT NULL, "
                     "stored_at REAL NOT NULL)")
        conn.execute("INSERT INTO raw_bodies VALUES (?, ?, ?)",
                     (sha256_hex(b'{"old": 1}'), b'{"old": 1}', 0.0))
    with ResponseCache(path, clock=clock) as store:
        assert store.raw_body(sha256_hex(b'{"old": 1}')) == b'{"old": 1}'
        store.put(answer(), b'{"new": 2}', ttl_s=60, origin=ORIGIN)
        assert store.raw_body(sha256_hex(b'{"new": 2}')) == b'{"new": 2}'


def test_default_path_is_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    store = ResponseCache()
    assert store.path == tmp_path / "cache.sqlite"
    store.close()


def old_cache(path):
    """A cache file as versions before origins and compression wrote it."""
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE answers (provider TEXT NOT NULL, entity_type TEXT NOT NULL, "
            "value TEXT NOT NULL, status TEXT NOT NULL, fields TEXT NOT NULL, "
            "fetched_at REAL NOT NULL, expires_at REAL NOT NULL, raw_digest TEXT, "
            "http_status INTEGER, message TEXT, PRIMARY KEY (provider, entity_type, value))")
        old.execute("CREATE TABLE raw_bodies (digest TEXT PRIMARY KEY, body BLOB NOT NULL, "
                    "stored_at REAL NOT NULL)")
    return path


def test_a_cache_file_from_before_origins_opens_and_its_answers_are_fetched_again(tmp_path):
    """A file whose answers table has no origin column gains one; its rows (origin unknown,
    maybe the sandbox's) serve no lookup, and new answers are stored and served as usual."""
    path = old_cache(tmp_path / "cache.sqlite")
    with sqlite3.connect(path) as old:
        old.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (base.GREYNOISE, "IPv4-Addr", "203.0.113.7", base.OK, "{}", 1.0,
                     4_000_000_000.0, None, 200, None))
    with ResponseCache(path) as cache:
        assert cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN) is None
        assert cache.put(answer(), b'{"ok": 1}', ttl_s=60, origin=ORIGIN)
        assert cache.get(base.GREYNOISE, "IPv4-Addr", "203.0.113.7", origin=ORIGIN) is not None


def _open_when_released(path: str, gate: str) -> None:
    import os
    import time

    while not os.path.exists(gate):
        time.sleep(0.001)
    ResponseCache(path).close()


def test_several_processes_opening_an_old_cache_at_once_all_succeed(tmp_path):
    """The first run after an upgrade opens the old file from every lookup step at once: the
    one that adds the origin column wins, the others find it there."""
    import multiprocessing

    for attempt in range(5):
        path = old_cache(tmp_path / f"old{attempt}.sqlite")
        gate = tmp_path / f"go{attempt}"
        context = multiprocessing.get_context("fork")
        openers = [context.Process(target=_open_when_released, args=(str(path), str(gate)))
                   for _ in range(4)]
        for process in openers:
            process.start()
        gate.touch()
        for process in openers:
            process.join(30)
        assert [process.exitcode for process in openers] == [0, 0, 0, 0]
