"""Open an SQLite file shared by several processes in WAL mode, whoever opens it first.

Switching a database to WAL needs a moment alone with it, and SQLite answers "database is
locked" at once, without waiting out the busy timeout, when another process is opening or
writing the same file right then. Parallel step processes open the same rate-limit and cache
files together, so the switch is retried here until the connection's own timeout is spent.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

RETRY_EVERY_S = 0.05


def connect_wal(path: str | Path, timeout: float, **options: Any) -> sqlite3.Connection:
    """A connection to `path` in WAL mode (`options` go to sqlite3.connect)."""
    conn = sqlite3.connect(path, timeout=timeout, **options)
    deadline = time.monotonic() + timeout
    conn.execute(f"PRAGMA busy_timeout={int(RETRY_EVERY_S * 1000)}")  # one attempt's wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(RETRY_EVERY_S)
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")  # the caller's, from now on
    return conn
