"""The response cache on PostgreSQL, for several hosts: the answers index and in-flight leases.

Same contract as the SQLite cache (cti_assets.providers.cache.ResponseCache): unexpired ok and
not_found answers by (provider, entity type, value) for the origin that gave them, one atomic
upsert to claim a fetch, raw bodies by digest, zlib-compressed, either in the `raw_bodies`
table or in an object store (`bodies`). An answer one host paid for is read by every other
host instead of paid again.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.cache import (
    ANSWER_COLUMNS,
    ZLIB,
    BodyStore,
    holder_id,
    holder_is_dead,
    storable,
)
from cti_assets.state.pg import PgConnection


class PostgresBodies:
    """Raw bodies in the state schema's raw_bodies table (when no object store is set)."""

    backend = "postgres"

    def __init__(self, db: PgConnection, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def put(self, digest: str, body: bytes) -> None:
        import psycopg2

        data = psycopg2.Binary(zlib.compress(body, 6))
        self._db.run(lambda c: c.execute(
            f"INSERT INTO {self._db.tables}.raw_bodies VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (digest) DO NOTHING", (digest, data, self._clock(), ZLIB)))

    def get(self, digest: str) -> bytes | None:
        def read(c: Any) -> Any:
            c.execute(f"SELECT body, encoding FROM {self._db.tables}.raw_bodies "
                      "WHERE digest = %s", (digest,))
            return c.fetchone()

        row = self._db.run(read)
        if row is None:
            return None
        body = bytes(row[0])
        return zlib.decompress(body) if row[1] == ZLIB else body


class PostgresResponseCache:
    """Provider answers and leases in PostgreSQL, shared by every host and thread."""

    backend = "postgres"

    def __init__(self, url: str, *, schema: str, bodies: BodyStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = PgConnection(url, schema)
        self._clock = clock
        self.bodies: BodyStore = bodies if bodies is not None else PostgresBodies(self._db, clock)
        self.holder = holder_id(self)
        self._t = self._db.tables

    def get(self, provider: str, entity_type: str, value: str, *,
            origin: str) -> base.LookupResult | None:
        """The unexpired answer for this observable from `origin`, marked from_cache; None
        when absent."""
        def read(c: Any) -> Any:
            c.execute(
                "SELECT status, fields, fetched_at, raw_digest, http_status, message "
                f"FROM {self._t}.answers WHERE provider = %s AND entity_type = %s "
                "AND value = %s AND expires_at > %s AND origin = %s",
                (provider, entity_type, value, self._clock(), origin))
            return c.fetchone()

        row = self._db.run(read)
        if row is None:
            return None
        status, fields, fetched_at, raw_digest, http_status, message = row
        return base.LookupResult(
            provider=provider, entity_type=entity_type, value=value, status=status,
            fields=json.loads(fields), fetched_at=datetime.fromtimestamp(fetched_at, UTC),
            raw_digest=raw_digest, from_cache=True, http_status=http_status, message=message,
        )

    def put(self, result: base.LookupResult, raw_body: bytes | None, ttl_s: int, *,
            origin: str) -> bool:
        """Store an ok/not_found answer from `origin` for `ttl_s` seconds (it replaces one from
        any origin); errors and skips are refused.
        The body is stored first, so an answer's digest always leads to its bytes."""
        now = self._clock()
        stored = storable(result, raw_body, ttl_s, now)
        if stored is None:
            return False
        fetched, digest, raw_body = stored
        if raw_body is not None and digest is not None:
            self.bodies.put(digest, raw_body)
        row = (result.provider, result.entity_type, result.value, result.status,
               json.dumps(result.fields, sort_keys=True, default=str), fetched, now + ttl_s,
               digest, result.http_status, result.message, origin)
        self._db.run(lambda c: c.execute(
            f"INSERT INTO {self._t}.answers ({ANSWER_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (provider, entity_type, value) DO UPDATE SET status = EXCLUDED.status, "
            "fields = EXCLUDED.fields, fetched_at = EXCLUDED.fetched_at, "
            "expires_at = EXCLUDED.expires_at, raw_digest = EXCLUDED.raw_digest, "
            "http_status = EXCLUDED.http_status, message = EXCLUDED.message, "
            "origin = EXCLUDED.origin", row))
        return True

    def claim(self, provider: str, entity_type: str, value: str, lease_s: float) -> bool:
        """Take the lease on fetching this observable for `lease_s` seconds; False while another
        live holder has it (on any host)."""
        now = self._clock()
        key = (provider, entity_type, value)

        def take(c: Any) -> bool:
            c.execute(
                f"INSERT INTO {self._t}.leases AS l VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (provider, entity_type, value) DO UPDATE SET "
                "holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
                "WHERE l.expires_at <= %s OR l.holder = EXCLUDED.holder",
                (*key, self.holder, now + lease_s, now))
            if c.rowcount:
                return True
            c.execute(f"SELECT holder FROM {self._t}.leases WHERE provider = %s "
                      "AND entity_type = %s AND value = %s", key)
            row = c.fetchone()
            if row is None or not holder_is_dead(row[0]):
                return False
            c.execute(f"UPDATE {self._t}.leases SET holder = %s, expires_at = %s "
                      "WHERE provider = %s AND entity_type = %s AND value = %s AND holder = %s",
                      (self.holder, now + lease_s, *key, row[0]))
            return bool(c.rowcount)

        return self._db.run(take)

    def release(self, provider: str, entity_type: str, value: str) -> None:
        """End this cache's lease on the observable (no-op if another holder has it now)."""
        self._db.run(lambda c: c.execute(
            f"DELETE FROM {self._t}.leases WHERE provider = %s AND entity_type = %s "
            "AND value = %s AND holder = %s", (provider, entity_type, value, self.holder)))

    def raw_body(self, digest: str) -> bytes | None:
        """The exact body stored under `digest`, for lineage; None when unknown."""
        return self.bodies.get(digest)

    def purge_expired(self) -> int:
        """Delete expired answers (and, in Postgres, the bodies nothing refers to any more;
        object-store bodies stay: they are content-addressed lineage, cheap to keep)."""
        def purge(c: Any) -> int:
            c.execute(f"DELETE FROM {self._t}.answers WHERE expires_at <= %s", (self._clock(),))
            gone = int(c.rowcount)
            c.execute(f"DELETE FROM {self._t}.raw_bodies b WHERE NOT EXISTS (SELECT 1 FROM "
                      f"{self._t}.answers a WHERE a.raw_digest = b.digest)")
            return gone

        return self._db.run(purge)

    def describe(self) -> str:
        """The backend, for asset metadata (the address without its password)."""
        return f"postgres index at {self._db.where} (schema {self._db.schema}), " \
               f"{self.bodies.backend} bodies"

    def __enter__(self) -> PostgresResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
