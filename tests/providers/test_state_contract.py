"""One contract, both backends: the response cache (answers, raw bodies, in-flight leases), the
limiter's buckets and quota records, and the deferred ledger behave the same on the embedded
SQLite files and on the shared services (PostgreSQL, Redis, an S3 server started here).

"Two hosts" are two store objects: on the embedded backend they share one data directory (two
processes of one host); on the shared backend each has its own data directory and they share
only the services, which is what a second machine has."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import pandas as pd
import pytest

from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.deferred import DeferredLedger
from cti_assets.providers.ratelimit import SharedLimiter
from tests.shared_services import make_bucket, postgres_schema, redis_prefix, s3_server

pytestmark = pytest.mark.services


ORIGIN = "https://api.abuseipdb.com/api/v2"  # where the answers in these tests came from


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pg():
    with postgres_schema() as service:
        yield service


@pytest.fixture
def rd():
    with redis_prefix() as service:
        yield service


@pytest.fixture
def s3_bodies(monkeypatch):
    with s3_server() as env:
        for name, value in env.items():
            if name != "bucket":
                monkeypatch.setenv(name, value)
        make_bucket(env)
        yield f"s3://{env['bucket']}/bodies"


# --- response cache ---------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "sqlite+s3", "postgres", "postgres+s3"])
def caches(request, tmp_path):
    """Two caches of two "hosts" and their shared clock."""
    clock = Clock()
    if request.param.startswith("sqlite"):
        from cti_assets.state.bodies import ObjectBodies

        path = tmp_path / "cache.sqlite"
        bodies_url = request.getfixturevalue("s3_bodies") if "s3" in request.param else None
        pair = [ResponseCache(path, clock=clock,
                              bodies=ObjectBodies(bodies_url) if bodies_url else None)
                for _ in range(2)]
    else:
        from cti_assets.state.bodies import ObjectBodies
        from cti_assets.state.pg_cache import PostgresResponseCache

        service = request.getfixturevalue("pg")
        bodies_url = request.getfixturevalue("s3_bodies") if "s3" in request.param else None
        pair = [PostgresResponseCache(service.url, schema=service.schema, clock=clock,
                                      bodies=ObjectBodies(bodies_url) if bodies_url else None)
                for _ in range(2)]
    yield pair[0], pair[1], clock
    for cache in pair:
        cache.close()


def _answer(value: str = "45.83.12.7", status: str = base.OK) -> base.LookupResult:
    return base.LookupResult(provider=base.ABUSEIPDB, entity_type="IPv4-Addr", value=value,
                             status=status, fields={"abuse_confidence_score": 66},
                             fetched_at=datetime.fromtimestamp(1_800_000_000, UTC))


def test_an_answer_stored_by_one_host_is_read_by_the_other(caches):
    first, second, clock = caches
    body = b'{"data": {"abuseConfidenceScore": 66}}'
    assert first.put(_answer(), body, ttl_s=60, origin=ORIGIN)
    got = second.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN)
    assert got is not None and got.from_cache and got.status == base.OK
    assert got.fields == {"abuse_confidence_score": 66}
    assert got.raw_digest is not None and second.raw_body(got.raw_digest) == body
    assert second.raw_body("0" * 64) is None
    clock.now += 61
    assert second.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN) is None


def test_errors_are_never_cached_and_a_later_answer_replaces_the_earlier(caches):
    first, second, _ = caches
    assert not first.put(_answer(status=base.ERROR), b"{}", ttl_s=60, origin=ORIGIN)
    assert second.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN) is None
    first.put(_answer(status=base.NOT_FOUND), None, ttl_s=60, origin=ORIGIN)
    second.put(_answer(), b'{"n": 2}', ttl_s=60, origin=ORIGIN)
    got = first.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN)
    assert got is not None and got.status == base.OK
    assert first.raw_body(got.raw_digest) == b'{"n": 2}'


def test_an_answer_serves_only_lookups_at_the_endpoint_that_gave_it(caches):
    """The sandbox's made-up answer never serves a run against the real provider, and back."""
    first, second, _ = caches
    sandbox = "http://127.0.0.1:8765/abuseipdb/api/v2"
    first.put(_answer(), b'{"made": "up"}', ttl_s=60, origin=sandbox)
    assert second.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN) is None
    assert second.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=sandbox) is not None
    second.put(_answer(), b'{"real": 1}', ttl_s=60, origin=ORIGIN)  # replaces the sandbox's
    got = first.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN)
    assert got is not None and first.raw_body(got.raw_digest) == b'{"real": 1}'
    assert first.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=sandbox) is None


def test_answers_stored_before_origins_serve_no_lookup(caches):
    """A cache written before answers carried their origin is opened as it is; its answers,
    of unknown origin, are fetched again rather than trusted."""
    first, second, _ = caches
    first.put(_answer(), b"{}", ttl_s=60, origin="")  # what the added column gives old rows
    assert second.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN) is None


def test_a_fetch_in_flight_is_claimed_by_one_host_at_a_time(caches):
    first, second, clock = caches
    key = (base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7")
    assert first.claim(*key, lease_s=30)
    assert not second.claim(*key, lease_s=30)
    assert first.claim(*key, lease_s=30)  # its own lease, renewed
    second.release(*key)  # not the holder: no effect
    assert not second.claim(*key, lease_s=30)
    first.release(*key)
    assert second.claim(*key, lease_s=30)
    clock.now += 31  # the holder vanished without releasing: its lease ends on expiry
    assert first.claim(*key, lease_s=30)


def test_purge_drops_expired_answers(caches):
    first, second, clock = caches
    first.put(_answer("45.83.12.7"), b"a", ttl_s=10, origin=ORIGIN)
    first.put(_answer("45.83.12.8"), b"b", ttl_s=100, origin=ORIGIN)
    clock.now += 11
    assert second.purge_expired() == 1
    assert first.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.8", origin=ORIGIN) is not None


def test_a_postgres_cache_from_before_origins_gains_the_column_and_refetches(pg):
    import psycopg2

    from cti_assets.state.pg_cache import PostgresResponseCache

    with psycopg2.connect(pg.url) as conn, conn.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{pg.schema}"')
        cursor.execute(
            f'CREATE TABLE "{pg.schema}".answers (provider TEXT NOT NULL, '
            "entity_type TEXT NOT NULL, value TEXT NOT NULL, status TEXT NOT NULL, "
            "fields TEXT NOT NULL, fetched_at DOUBLE PRECISION NOT NULL, "
            "expires_at DOUBLE PRECISION NOT NULL, raw_digest TEXT, http_status INTEGER, "
            "message TEXT, PRIMARY KEY (provider, entity_type, value))")
        cursor.execute(f'INSERT INTO "{pg.schema}".answers VALUES '
                       "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                       (base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", base.OK, "{}", 1.0,
                        4_000_000_000.0, None, 200, None))
    cache = PostgresResponseCache(pg.url, schema=pg.schema)
    try:
        assert cache.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN) is None
        assert cache.put(_answer(), b"{}", ttl_s=60, origin=ORIGIN)
        assert cache.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN) is not None
    finally:
        cache.close()


def test_bodies_in_the_object_store_are_compressed_by_digest(pg, s3_bodies):
    import s3fs

    from cti_assets.state.bodies import ObjectBodies
    from cti_assets.state.pg_cache import PostgresResponseCache

    body = b'{"data": "' + b"x" * 5000 + b'"}'
    with PostgresResponseCache(pg.url, schema=pg.schema, bodies=ObjectBodies(s3_bodies)) as cache:
        cache.put(_answer(), body, ttl_s=60, origin=ORIGIN)
        digest = cache.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN).raw_digest
    stored = s3fs.S3FileSystem().cat_file(f"{s3_bodies}/{digest[:2]}/{digest}.zlib")
    assert len(stored) < 200 and zlib.decompress(stored) == body


def test_a_missing_bodies_bucket_is_one_line_before_any_answer_is_paid_for(s3_bodies, tmp_path,
                                                                          monkeypatch):
    """Checked when the cache opens (a lookup step's first act): with a bucket that is not
    there, the step fails before a provider is paid for answers whose bodies could not be kept
    (a retry would pay them again)."""
    from cti_assets.state.config import StateConfig
    from cti_assets.state.pg import StateBackendError

    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    StateConfig(bodies_url=s3_bodies).open_cache().close()  # the bucket is there
    missing = s3_bodies.replace("s3://", "s3://no-such-bucket-").split("/")[2]
    with pytest.raises(StateBackendError) as error:
        StateConfig(bodies_url=f"s3://{missing}/bodies").open_cache()
    assert str(error.value) == (f"the bodies store s3://{missing}/bodies has no bucket "
                                f"{missing!r}: create it, or fix CTI_BODIES_URL")


# --- rate limits and quota records --------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis", "postgres_quota"])
def limiters(request, tmp_path):
    """A limiter factory for two hosts: (host number, limits) -> SharedLimiter."""
    made: list[SharedLimiter] = []
    provider = "contract_test"
    if request.param == "sqlite":
        def make(host: int, limits: dict) -> SharedLimiter:
            del host  # one host: one data directory
            made.append(SharedLimiter(provider, limits, path=tmp_path / "rl.sqlite",
                                      max_wait_s=0.2, redis_url=""))
            return made[-1]
    else:
        from cti_assets.state.config import StateConfig

        if request.param == "redis":
            service = request.getfixturevalue("rd")
            state = StateConfig(redis_url=service.url, key_prefix=service.prefix)
        else:
            service = request.getfixturevalue("pg")
            state = StateConfig(postgres_url=service.url, schema=service.schema)

        def make(host: int, limits: dict) -> SharedLimiter:
            made.append(SharedLimiter(
                provider, limits, path=tmp_path / f"host{host}" / "rl.sqlite", max_wait_s=0.2,
                redis_url=state.redis_url or "", key_prefix=state.key_prefix,
                quota=state.shared_quota))
            return made[-1]
    yield request.param, make
    for limiter in made:
        limiter.close()


def test_quota_exhausted_on_one_host_stops_the_other(limiters):
    _, make = limiters
    first, second = make(1, {"second": 50}), make(2, {"second": 50})
    assert second.acquire() is None
    first.mark_exhausted("day", "Daily rate limit of 1000 requests exceeded")
    blocked = second.acquire()
    assert blocked is not None and blocked.error_class == base.ERR_QUOTA
    assert second.exhausted_until() is not None and second.remaining("day") == 0
    second.clear_exhausted()
    assert first.exhausted_until() is None and first.acquire() is None


def test_quota_reported_by_the_provider_is_seen_by_the_other_host(limiters):
    _, make = limiters
    first, second = make(1, {"day": 1000}), make(2, {"day": 1000})
    first.record_reported("day", 7)
    assert second.remaining("day") == 7


def test_one_per_second_budget_for_both_hosts_when_buckets_are_shared(limiters):
    backend, make = limiters
    first, second = make(1, {"second": 3}), make(2, {"second": 3})
    outcomes = [limiter.acquire() for _ in range(3) for limiter in (first, second)]
    granted = [o for o in outcomes if o is None]
    assert all(o.error_class == base.ERR_RATE for o in outcomes if o is not None)
    # requests are spaced one every 1 / (0.9 x 3) = 0.37 s, beyond the 0.2 s allowed wait:
    # one host's first ask is granted; on a shared schedule the other host's is not
    if backend == "postgres_quota":  # documented: without Redis each host keeps its buckets
        assert len(granted) == 2, outcomes
        return
    assert len(granted) == 1, outcomes


def test_each_limiter_names_its_backends(limiters):
    backend, make = limiters
    expected = {"sqlite": "buckets=sqlite, quota=sqlite", "redis": "buckets=redis, quota=redis",
                "postgres_quota": "buckets=sqlite, quota=postgres"}
    assert make(1, {"second": 5}).backend == expected[backend]


# --- deferred ledger ----------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def ledgers(request, tmp_path):
    if request.param == "sqlite":
        pair = [DeferredLedger(tmp_path / "deferred.sqlite") for _ in range(2)]
    else:
        from cti_assets.state.pg_deferred import PostgresDeferredLedger

        service = request.getfixturevalue("pg")
        pair = [PostgresDeferredLedger(service.url, schema=service.schema) for _ in range(2)]
    yield pair
    for ledger in pair:
        ledger.close()


def _lookups(statuses: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"stix_id": list(statuses), "status": list(statuses.values()),
                         "reason": ["budget" if s == "deferred" else None
                                    for s in statuses.values()]})


def test_deferrals_of_one_host_are_taken_up_by_the_other(ledgers):
    first, second = ledgers
    first.record(base.VIRUSTOTAL, "2026-11-20", _lookups(
        {"ipv4-addr--a": "deferred", "ipv4-addr--b": "deferred", "ipv4-addr--c": "ok"}))
    first.record(base.VIRUSTOTAL, "2026-11-21", _lookups({"ipv4-addr--a": "deferred"}))
    assert sorted(second.pending(base.VIRUSTOTAL)) == ["ipv4-addr--a", "ipv4-addr--b"]
    assert second.counts() == {base.VIRUSTOTAL: 2}
    second.record(base.VIRUSTOTAL, "2026-11-20", _lookups(
        {"ipv4-addr--a": "ok", "ipv4-addr--b": "error"}))
    assert list(first.pending(base.VIRUSTOTAL)) == ["ipv4-addr--b"]
    assert first.pending(base.SHODAN) == {}


def test_a_dropped_postgres_connection_is_reopened(pg):
    """A server restart or an idle-connection reaper ends the store's session: the next call
    reconnects once instead of failing the run."""
    import psycopg2

    from cti_assets.state.pg_cache import PostgresResponseCache

    with PostgresResponseCache(pg.url, schema=pg.schema) as cache:
        cache.put(_answer(), b"{}", ttl_s=600, origin=ORIGIN)
        pid = cache._db._conn.get_backend_pid()  # noqa: SLF001 - the session to end
        admin = psycopg2.connect(pg.url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
        got = cache.get(base.ABUSEIPDB, "IPv4-Addr", "45.83.12.7", origin=ORIGIN)
        assert got is not None and got.status == base.OK
        assert cache._db._conn.get_backend_pid() != pid  # noqa: SLF001
