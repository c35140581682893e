"""connect_wal: a file another process holds while it is switched to WAL is retried, not lost."""

from __future__ import annotations

import sqlite3

import pytest

from cti_assets.state import sqlite_wal


def _held(path) -> sqlite3.Connection:
    """Another connection holding the (rollback-journal) file exclusively."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE IF NOT EXISTS t (x)")
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_the_switch_waits_for_the_holder_and_ends_in_wal(tmp_path, monkeypatch):
    path = tmp_path / "shared.sqlite"
    other = _held(path)
    retries: list[float] = []

    def holder_lets_go(seconds: float) -> None:
        retries.append(seconds)
        other.execute("COMMIT")  # the other process finishes while we wait

    monkeypatch.setattr(sqlite_wal.time, "sleep", holder_lets_go)
    conn = sqlite_wal.connect_wal(path, timeout=5.0)
    assert retries == [sqlite_wal.RETRY_EVERY_S]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000  # the caller's again


def test_a_holder_that_never_lets_go_ends_in_the_error_after_the_timeout(tmp_path):
    path = tmp_path / "shared.sqlite"
    _held(path)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite_wal.connect_wal(path, timeout=0.2)
