"""The durable record of accepted requests, kept until their run has ended and been reported.

pycti acknowledges an AMQP message before our callback runs, so RabbitMQ forgets it at once:
this SQLite file (under CTI_DATA_DIR) is what survives a crash. A request is recorded before
the callback returns; requests of one partition are grouped into a batch before its run is
launched, and the batch id is the run's tag, so a restart finds an already launched run instead
of launching a second one. Rows go when their work has been reported.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cti_assets.connector.request import EnrichmentRequest
from cti_assets.state.sqlite_wal import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    work_id TEXT PRIMARY KEY,
    entity_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    value TEXT NOT NULL,
    partition TEXT NOT NULL,
    applicant_id TEXT NOT NULL,
    notice TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    batch_id TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    partition TEXT NOT NULL,
    formed_at REAL NOT NULL,
    run_id TEXT,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Batch:
    """Requests of one partition that share one Dagster run."""

    batch_id: str
    partition: str
    run_id: str | None
    attempts: int
    next_attempt_at: float


class Ledger:
    """Thread-safe; every change is committed before the call returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = connect_wal(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def accept(self, request: EnrichmentRequest, now: float | None = None) -> bool:
        """Record a request; False when this work was already recorded (a redelivery)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (request.work_id, request.entity_id, request.entity_type, request.value,
                 request.partition, request.applicant_id, request.notice,
                 time.time() if now is None else now),
            )
            return cursor.rowcount == 1

    def form_due_batches(self, window_s: float, now: float | None = None) -> list[Batch]:
        """Group unbatched requests into one batch per partition once the partition's oldest
        request has waited `window_s`; every request of that partition joins."""
        now = time.time() if now is None else now
        formed = []
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, MIN(accepted_at) FROM requests WHERE batch_id IS NULL "
                "GROUP BY partition"
            ).fetchall()
            for partition, oldest in rows:
                if oldest > now - window_s:
                    continue
                batch_id = str(uuid.uuid4())
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT INTO batches (batch_id, partition, formed_at) "
                                 "VALUES (?, ?, ?)", (batch_id, partition, now))
                self._db.execute("UPDATE requests SET batch_id = ? WHERE batch_id IS NULL "
                                 "AND partition = ?", (batch_id, partition))
                self._db.execute("COMMIT")
                formed.append(Batch(batch_id, partition, None, 0, 0.0))
        return formed

    def open_batches(self) -> list[Batch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT batch_id, partition, run_id, attempts, next_attempt_at FROM batches "
                "ORDER BY formed_at").fetchall()
        return [Batch(*row) for row in rows]

    def requests_of(self, batch_id: str) -> list[EnrichmentRequest]:
        with self._lock:
            rows = self._db.execute(
                "SELECT work_id, entity_id, entity_type, value, partition, applicant_id, notice "
                "FROM requests WHERE batch_id = ? ORDER BY accepted_at", (batch_id,)).fetchall()
        return [EnrichmentRequest(*row) for row in rows]

    def pending_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def set_run(self, batch_id: str, run_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET run_id = ? WHERE batch_id = ?",
                             (run_id, batch_id))

    def postpone(self, batch_id: str, until: float) -> None:
        """A launch attempt failed: keep the batch, try again at `until`."""
        with self._lock:
            self._db.execute("UPDATE batches SET attempts = attempts + 1, next_attempt_at = ? "
                             "WHERE batch_id = ?", (until, batch_id))

    def done(self, work_id: str) -> None:
        """The work was reported: forget the request (and its batch once empty)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT batch_id FROM requests WHERE work_id = ?",
                                   (work_id,)).fetchone()
            self._db.execute("DELETE FROM requests WHERE work_id = ?", (work_id,))
            if row and row[0]:
                self._db.execute(
                    "DELETE FROM batches WHERE batch_id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM requests WHERE batch_id = ?)", (row[0], row[0]))
            self._db.execute("COMMIT")
