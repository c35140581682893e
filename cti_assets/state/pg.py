"""One PostgreSQL connection per store, shared by its threads, and the schema they all use.

psycopg2 (the driver dagster-postgres needs anyway) with one connection and a lock per store, as
the SQLite stores do; a dropped connection is reopened once. The tables are created in the
configured schema under an advisory lock, so two hosts starting together do not race on DDL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from cti_assets.state.urls import check_identifier, postgres_dsn, redact_url

T = TypeVar("T")


class StateBackendError(RuntimeError):
    """A shared-state backend cannot be reached or used; the message names no secret."""


def _ddl(schema: str) -> str:
    s = f'"{schema}"'
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.answers (
    provider TEXT NOT NULL, entity_type TEXT NOT NULL, value TEXT NOT NULL,
    status TEXT NOT NULL, fields TEXT NOT NULL, fetched_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, raw_digest TEXT, http_status INTEGER, message TEXT,
    PRIMARY KEY (provider, entity_type, value));
CREATE TABLE IF NOT EXISTS {s}.raw_bodies (
    digest TEXT PRIMARY KEY, body BYTEA NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
    encoding TEXT);
CREATE TABLE IF NOT EXISTS {s}.leases (
    provider TEXT NOT NULL, entity_type TEXT NOT NULL, value TEXT NOT NULL,
    holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, entity_type, value));
CREATE TABLE IF NOT EXISTS {s}.quota_ledger (
    provider TEXT NOT NULL, "window" TEXT NOT NULL, exhausted_until DOUBLE PRECISION NOT NULL,
    reason TEXT, recorded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (provider, "window"));
CREATE TABLE IF NOT EXISTS {s}.quota_reported (
    provider TEXT NOT NULL, "window" TEXT NOT NULL, remaining INTEGER NOT NULL,
    reported_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (provider, "window"));
CREATE TABLE IF NOT EXISTS {s}.deferred (
    provider TEXT NOT NULL, stix_id TEXT NOT NULL, partition_key TEXT NOT NULL, reason TEXT,
    first_deferred_at TEXT NOT NULL, PRIMARY KEY (provider, stix_id));
"""


class PgConnection:
    """A psycopg2 connection to the state schema; `run` executes one transaction."""

    def __init__(self, url: str, schema: str) -> None:
        self.schema = check_identifier(schema, "state schema")
        self._dsn = postgres_dsn(url)
        self.where = redact_url(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._lock:
            self._connect()
        self.run(self._create_schema)

    @property
    def tables(self) -> str:
        """The quoted schema, to prefix table names with."""
        return f'"{self.schema}"'

    def _connect(self) -> None:
        import psycopg2

        try:
            self._conn = psycopg2.connect(self._dsn, connect_timeout=10,
                                          application_name="cti-assets-state")
        except psycopg2.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateBackendError(f"cannot connect to PostgreSQL at {self.where}: "
                                    f"{reason.replace(self._dsn, self.where)}") from None

    def _create_schema(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cti_state:{self.schema}",))
        cursor.execute(_ddl(self.schema))
        # answers from before origins gain the column (their '' serves no lookup); checked
        # first, since ALTER TABLE locks the table even when the column is there
        cursor.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                       "AND table_name = 'answers' AND column_name = 'origin'", (self.schema,))
        if cursor.fetchone() is None:
            cursor.execute(f"ALTER TABLE {self.tables}.answers "
                           "ADD COLUMN origin TEXT NOT NULL DEFAULT ''")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._conn, self._conn.cursor() as cursor:
            yield cursor

    def run(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` in one transaction; reconnects once if the connection was lost."""
        import psycopg2

        with self._lock:
            if self._conn is None or self._conn.closed:
                self._connect()
            try:
                with self._transaction() as cursor:
                    return work(cursor)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if not self._conn.closed:
                    raise
                self._connect()  # the server dropped us: one more try on a new connection
                with self._transaction() as cursor:
                    return work(cursor)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
