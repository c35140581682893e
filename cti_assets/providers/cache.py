"""The provider response cache: answers reused within their TTL, raw bodies kept for lineage.

None of the OpenCTI connectors cached across messages, so every re-run paid the provider again.
Here an answer (ok or not_found; errors are never cached) is keyed by (provider, entity type,
normalised value) with an expiry, and serves only lookups at the endpoint that gave it (its
origin: the sandbox's made-up answers never serve a run against the real provider). The raw
body is stored once per sha256 digest so any score can be traced back to the exact bytes the
provider sent, zlib-compressed (rows written before compression, with no encoding, are read as
they are). No API key is ever written here.

Requests in flight are shared through leases: the worker about to fetch an observable claims it
(one atomic upsert, the same statement on PostgreSQL), others wait for its answer instead of
paying again. A lease ends when released, when it expires, or when its holder on this host died.
`AnswerStore` is the interface; the PostgreSQL backend for several hosts is in
cti_assets.state.pg_cache, and raw bodies may live in an object store (a `BodyStore`,
cti_assets.state.bodies) instead of the cache's own table.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cti_assets import settings as data_settings
from cti_assets.providers import base
from cti_assets.providers.http import scrub_body, sha256_hex
from cti_assets.state.sqlite_wal import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    provider TEXT NOT NULL, entity_type TEXT NOT NULL, value TEXT NOT NULL,
    status TEXT NOT NULL, fields TEXT NOT NULL, fetched_at REAL NOT NULL,
    expires_at REAL NOT NULL, raw_digest TEXT, http_status INTEGER, message TEXT,
    origin TEXT NOT NULL DEFAULT '', PRIMARY KEY (provider, entity_type, value));
CREATE TABLE IF NOT EXISTS raw_bodies (
    digest TEXT PRIMARY KEY, body BLOB NOT NULL, stored_at REAL NOT NULL, encoding TEXT);
CREATE TABLE IF NOT EXISTS leases (
    provider TEXT NOT NULL, entity_type TEXT NOT NULL, value TEXT NOT NULL,
    holder TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (provider, entity_type, value));
"""
CACHEABLE = (base.OK, base.NOT_FOUND)
ANSWER_COLUMNS = ("provider, entity_type, value, status, fields, fetched_at, expires_at, "
                  "raw_digest, http_status, message, origin")
ZLIB = "zlib"
_HOST = socket.gethostname()


class AnswerStore(Protocol):
    """What the runner needs from a response cache, whatever the database behind it."""

    def get(self, provider: str, entity_type: str, value: str, *,
            origin: str) -> base.LookupResult | None: ...

    def put(self, result: base.LookupResult, raw_body: bytes | None, ttl_s: int, *,
            origin: str) -> bool: ...

    def claim(self, provider: str, entity_type: str, value: str, lease_s: float) -> bool: ...

    def release(self, provider: str, entity_type: str, value: str) -> None: ...

    def raw_body(self, digest: str) -> bytes | None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class BodyStore(Protocol):
    """Raw answer bodies by sha256 digest (stored compressed), wherever they live."""

    backend: str

    def put(self, digest: str, body: bytes) -> None: ...

    def get(self, digest: str) -> bytes | None: ...


def storable(result: base.LookupResult, raw_body: bytes | None, ttl_s: int,
             now: float) -> tuple[float, str | None, bytes | None] | None:
    """What any backend stores of an answer: (fetched_at, digest, scrubbed body), or None when
    the answer must not be cached (an error or skip, or no time to live)."""
    if result.status not in CACHEABLE or ttl_s <= 0:
        return None
    fetched = result.fetched_at.timestamp() if result.fetched_at else now
    if raw_body is None:
        return fetched, result.raw_digest, None
    scrubbed = scrub_body(raw_body)
    return fetched, sha256_hex(scrubbed), scrubbed


def holder_id(owner: object) -> str:
    """A lease holder's name: host, process and object, so a dead holder can be recognised."""
    return f"{_HOST}:{os.getpid()}:{id(owner)}"


def holder_is_dead(holder: str) -> bool:
    """Whether a lease holder ("host:pid:n") is a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class ResponseCache:
    """SQLite (WAL, busy timeout) cache of provider answers, safe to share between threads."""

    backend = "sqlite"

    def __init__(self, path: str | Path | None = None, *, clock: Callable[[], float] = time.time,
                 bodies: BodyStore | None = None) -> None:
        self.path = Path(path) if path is not None else data_settings.cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.bodies = bodies  # None: in this file's raw_bodies table
        self.holder = holder_id(self)
        self._lock = threading.Lock()
        self._conn = connect_wal(self.path, timeout=30.0, check_same_thread=False)
        with self._lock:
            self._conn.executescript(_SCHEMA)
            # a file from before compression, or before origins (whose answers then serve no
            # lookup); several processes may open it at once
            self._add_column("raw_bodies", "encoding", "TEXT")
            self._add_column("answers", "origin", "TEXT NOT NULL DEFAULT ''")

    def _add_column(self, table: str, name: str, declaration: str) -> None:
        columns = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
        if name in columns:
            return
        try:
            self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
        except sqlite3.OperationalError as error:
            if "duplicate column name" not in str(error):
                raise  # another process added it between the check and here: nothing to do

    def get(self, provider: str, entity_type: str, value: str, *,
            origin: str) -> base.LookupResult | None:
        """The unexpired answer for this observable from `origin`, marked from_cache; None
        when absent."""
        with self._lock:
            row = self._conn.execute(
                "SELECT status, fields, fetched_at, raw_digest, http_status, message FROM answers "
                "WHERE provider = ? AND entity_type = ? AND value = ? AND expires_at > ? "
                "AND origin = ?",
                (provider, entity_type, value, self._clock(), origin),
            ).fetchone()
        if row is None:
            return None
        status, fields, fetched_at, raw_digest, http_status, message = row
        return base.LookupResult(
            provider=provider,
            entity_type=entity_type,
            value=value,
            status=status,
            fields=json.loads(fields),
            fetched_at=datetime.fromtimestamp(fetched_at, UTC),
            raw_digest=raw_digest,
            from_cache=True,
            http_status=http_status,
            message=message,
        )

    def put(self, result: base.LookupResult, raw_body: bytes | None, ttl_s: int, *,
            origin: str) -> bool:
        """Store an ok/not_found answer from `origin` for `ttl_s` seconds (it replaces one from
        any origin); errors and skips are refused."""
        now = self._clock()
        stored = storable(result, raw_body, ttl_s, now)
        if stored is None:
            return False
        fetched, digest, raw_body = stored
        if raw_body is not None and digest is not None and self.bodies is not None:
            self.bodies.put(digest, raw_body)  # the body first: an index row never lacks it
            raw_body = None
        with self._lock, self._conn:
            if raw_body is not None and digest is not None:
                self._conn.execute(
                    "INSERT OR IGNORE INTO raw_bodies (digest, body, stored_at, encoding) "
                    "VALUES (?, ?, ?, ?)", (digest, zlib.compress(raw_body, 6), now, ZLIB),
                )
            self._conn.execute(
                f"INSERT OR REPLACE INTO answers ({ANSWER_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.provider, result.entity_type, result.value, result.status,
                    json.dumps(result.fields, sort_keys=True, default=str), fetched,
                    now + ttl_s, digest, result.http_status, result.message, origin,
                ),
            )
        return True

    def claim(self, provider: str, entity_type: str, value: str, lease_s: float) -> bool:
        """Take the lease on fetching this observable for `lease_s` seconds; False while another
        live holder has it (wait for its answer with `get`)."""
        now = self._clock()
        key = (provider, entity_type, value)
        with self._lock, self._conn:
            taken = self._conn.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(provider, entity_type, value) DO UPDATE SET "
                "holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder",
                (*key, self.holder, now + lease_s, now),
            ).rowcount
            if taken:
                return True
            row = self._conn.execute(
                "SELECT holder FROM leases WHERE provider = ? AND entity_type = ? AND value = ?",
                key,
            ).fetchone()
            if row is None or not holder_is_dead(row[0]):
                return False
            return bool(self._conn.execute(
                "UPDATE leases SET holder = ?, expires_at = ? WHERE provider = ? AND "
                "entity_type = ? AND value = ? AND holder = ?",
                (self.holder, now + lease_s, *key, row[0]),
            ).rowcount)

    def release(self, provider: str, entity_type: str, value: str) -> None:
        """End this cache's lease on the observable (no-op if another holder has it now)."""
        with self._lock, self._conn:
            self._conn.execute(
                "DELETE FROM leases WHERE provider = ? AND entity_type = ? AND value = ? "
                "AND holder = ?", (provider, entity_type, value, self.holder),
            )

    def raw_body(self, digest: str) -> bytes | None:
        """The exact body stored under `digest`, for lineage; None when unknown."""
        if self.bodies is not None:
            return self.bodies.get(digest)
        with self._lock:
            row = self._conn.execute(
                "SELECT body, encoding FROM raw_bodies WHERE digest = ?", (digest,)
            ).fetchone()
        if row is None:
            return None
        body, encoding = bytes(row[0]), row[1]
        return zlib.decompress(body) if encoding == ZLIB else body

    def purge_expired(self) -> int:
        """Delete expired answers and the bodies nothing refers to any more."""
        with self._lock, self._conn:
            gone = self._conn.execute(
                "DELETE FROM answers WHERE expires_at <= ?", (self._clock(),)
            ).rowcount
            self._conn.execute(
                "DELETE FROM raw_bodies WHERE digest NOT IN "
                "(SELECT raw_digest FROM answers WHERE raw_digest IS NOT NULL)"
            )
        return gone

    def describe(self) -> str:
        """The backend, for asset metadata (a local path, never a secret)."""
        bodies = self.bodies.backend if self.bodies is not None else "sqlite"
        return f"sqlite index, {bodies} bodies"

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
