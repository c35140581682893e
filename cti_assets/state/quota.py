"""Quota records for several hosts: in Redis (next to the shared buckets) or in PostgreSQL.

A provider that says its quota is spent is recorded "exhausted until the window ends"; kept
here instead of the local SQLite file, that record stops every host, not only the one that saw
the refusal. Same contract as cti_assets.providers.ratelimit.SqliteQuotaLedger.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cti_assets.state.pg import PgConnection


class RedisQuotaLedger:
    """Two hashes per provider: `<prefix>:quota:<provider>:exhausted` (window -> until) and
    `...:reported` (window -> remaining and when)."""

    backend = "redis"

    def __init__(self, url: str, provider: str, key_prefix: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url)
        self._exhausted = f"{key_prefix}:quota:{provider}:exhausted"
        self._reported = f"{key_prefix}:quota:{provider}:reported"

    def mark(self, window: str, until_ts: float, reason: str) -> None:
        del reason  # the until is what every host needs; the reason is in the run's rows
        self._redis.hset(self._exhausted, window, repr(float(until_ts)))

    def exhausted_until(self, now_ts: float) -> float | None:
        values = [float(v) for v in self._redis.hvals(self._exhausted)]
        live = [v for v in values if v > now_ts]
        return max(live) if live else None

    def clear(self) -> None:
        self._redis.delete(self._exhausted)

    def record_reported(self, window: str, remaining: int, at_ts: float) -> None:
        self._redis.hset(self._reported, window, json.dumps([int(remaining), at_ts]))

    def reported(self, window: str) -> tuple[int, float] | None:
        raw = self._redis.hget(self._reported, window)
        if raw is None:
            return None
        remaining, at_ts = json.loads(raw)
        return int(remaining), float(at_ts)

    def close(self) -> None:
        self._redis.close()


class PostgresQuotaLedger:
    """The quota_ledger and quota_reported tables of the state schema."""

    backend = "postgres"

    def __init__(self, db: PgConnection, provider: str, *, owns: bool = False) -> None:
        self._db = db
        self._t = db.tables
        self.provider = provider
        self._owns = owns

    def mark(self, window: str, until_ts: float, reason: str) -> None:
        self._db.run(lambda c: c.execute(
            f'INSERT INTO {self._t}.quota_ledger VALUES (%s, %s, %s, %s, %s) '
            'ON CONFLICT (provider, "window") DO UPDATE SET '
            "exhausted_until = EXCLUDED.exhausted_until, reason = EXCLUDED.reason, "
            "recorded_at = EXCLUDED.recorded_at",
            (self.provider, window, until_ts, reason, time.time())))

    def exhausted_until(self, now_ts: float) -> float | None:
        def read(c: Any) -> Any:
            c.execute(f"SELECT MAX(exhausted_until) FROM {self._t}.quota_ledger "
                      "WHERE provider = %s AND exhausted_until > %s", (self.provider, now_ts))
            return c.fetchone()

        row = self._db.run(read)
        return float(row[0]) if row and row[0] else None

    def clear(self) -> None:
        self._db.run(lambda c: c.execute(
            f"DELETE FROM {self._t}.quota_ledger WHERE provider = %s", (self.provider,)))

    def record_reported(self, window: str, remaining: int, at_ts: float) -> None:
        self._db.run(lambda c: c.execute(
            f'INSERT INTO {self._t}.quota_reported VALUES (%s, %s, %s, %s) '
            'ON CONFLICT (provider, "window") DO UPDATE SET remaining = EXCLUDED.remaining, '
            "reported_at = EXCLUDED.reported_at",
            (self.provider, window, int(remaining), at_ts)))

    def reported(self, window: str) -> tuple[int, float] | None:
        def read(c: Any) -> Any:
            c.execute(f'SELECT remaining, reported_at FROM {self._t}.quota_reported '
                      'WHERE provider = %s AND "window" = %s', (self.provider, window))
            return c.fetchone()

        row = self._db.run(read)
        return (int(row[0]), float(row[1])) if row else None

    def close(self) -> None:
        if self._owns:
            self._db.close()
