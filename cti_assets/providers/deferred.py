"""The deferred ledger: observables kept back from a provider, to be taken up first next time.

Triage defers what today's budget cannot pay for, and an open circuit breaker defers what an
unavailable provider could not answer (any provider, cheap ones too). The ledger remembers them
(SQLite, shared by every process) so that the next run of their partition sends them first (the
runner's `retry_first`, triage's boost), and forgets them once a lookup answered.
`Deferrals` is the interface; the PostgreSQL ledger that several hosts share is in
cti_assets.state.pg_deferred.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

from cti_assets import settings
from cti_assets.state.sqlite_wal import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deferred (
    provider TEXT NOT NULL,
    stix_id TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    reason TEXT,
    first_deferred_at TEXT NOT NULL,
    PRIMARY KEY (provider, stix_id)
)
"""
RESOLVED = ("ok", "not_found")


class Deferrals(Protocol):
    """What the lookup assets and triage need from a deferred ledger."""

    def record(self, provider: str, partition_key: str, lookups: pd.DataFrame) -> None: ...

    def pending(self, provider: str) -> dict[str, str]: ...

    def counts(self) -> dict[str, int]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class DeferredLedger:
    """Pending deferrals per provider, oldest first."""

    backend = "sqlite"

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else settings.data_dir() / "deferred.sqlite"
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return connect_wal(self.path, timeout=30)

    def record(self, provider: str, partition_key: str, lookups: pd.DataFrame) -> None:
        """Remember the deferred rows of a lookup table; forget the ones that got an answer."""
        now = datetime.now(UTC).isoformat()
        deferred = lookups[lookups["status"] == "deferred"]
        resolved = lookups[lookups["status"].isin(RESOLVED)]
        with self._connect() as db:
            db.executemany(
                "INSERT INTO deferred VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (provider, sid, partition_key, reason, now)
                    for sid, reason in zip(deferred["stix_id"], deferred["reason"], strict=True)
                ],
            )
            db.executemany(
                "DELETE FROM deferred WHERE provider = ? AND stix_id = ?",
                [(provider, sid) for sid in resolved["stix_id"]],
            )

    def pending(self, provider: str) -> dict[str, str]:
        """stix_id -> first deferral time, for one provider."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT stix_id, first_deferred_at FROM deferred WHERE provider = ? "
                "ORDER BY first_deferred_at, stix_id",
                (provider,),
            ).fetchall()
        return dict(rows)

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT provider, COUNT(*) FROM deferred GROUP BY provider")
            return dict(rows.fetchall())

    def describe(self) -> str:
        return f"sqlite at {self.path}"

    def close(self) -> None:
        """Nothing held open: each call opens and closes its connection."""
