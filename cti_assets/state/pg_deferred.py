"""The deferred ledger on PostgreSQL: what one host deferred, another host takes up first.

Same contract as cti_assets.providers.deferred.DeferredLedger (record, pending, counts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from cti_assets.providers.deferred import RESOLVED
from cti_assets.state.pg import PgConnection


class PostgresDeferredLedger:
    """Pending deferrals per provider in the state schema's `deferred` table, oldest first."""

    backend = "postgres"

    def __init__(self, url: str, *, schema: str) -> None:
        self._db = PgConnection(url, schema)
        self._t = self._db.tables

    def record(self, provider: str, partition_key: str, lookups: pd.DataFrame) -> None:
        """Remember the deferred rows of a lookup table; forget the ones that got an answer."""
        now = datetime.now(UTC).isoformat()
        deferred = lookups[lookups["status"] == "deferred"]
        resolved = lookups[lookups["status"].isin(RESOLVED)]
        adds = [(provider, sid, partition_key, reason, now)
                for sid, reason in zip(deferred["stix_id"], deferred["reason"], strict=True)]
        drops = [(provider, sid) for sid in resolved["stix_id"]]

        def write(c: Any) -> None:
            if adds:
                c.executemany(f"INSERT INTO {self._t}.deferred VALUES (%s, %s, %s, %s, %s) "
                              "ON CONFLICT DO NOTHING", adds)
            if drops:
                c.executemany(f"DELETE FROM {self._t}.deferred WHERE provider = %s "
                              "AND stix_id = %s", drops)

        self._db.run(write)

    def pending(self, provider: str) -> dict[str, str]:
        """stix_id -> first deferral time, for one provider."""
        def read(c: Any) -> list[Any]:
            c.execute(f"SELECT stix_id, first_deferred_at FROM {self._t}.deferred "
                      "WHERE provider = %s ORDER BY first_deferred_at, stix_id", (provider,))
            return list(c.fetchall())

        return dict(self._db.run(read))

    def counts(self) -> dict[str, int]:
        def read(c: Any) -> list[Any]:
            c.execute(f"SELECT provider, COUNT(*) FROM {self._t}.deferred GROUP BY provider")
            return list(c.fetchall())

        return {provider: int(n) for provider, n in self._db.run(read)}

    def describe(self) -> str:
        return f"postgres at {self._db.where} (schema {self._db.schema})"

    def close(self) -> None:
        self._db.close()
