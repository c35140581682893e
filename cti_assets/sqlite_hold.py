"""Keep SQLite databases in WAL mode open, idle and read-only, while a burst of short-lived
connections writes to them.

Dagster's embedded (SQLite) event log opens a connection, writes one event, commits and closes,
for every event of a run. Closing the last connection to a WAL database checkpoints it: the log
is copied into the database and both are synced before the log is removed, about 10 ms on this
project's test machine, and a small run writes a few hundred events (bench/latency.py: half of
a one-observable run). While any other connection is open the closing one is not the last, so
a close is only a close; the checkpoints then happen as SQLite's automatic ones (every 1,000
pages) and when the holder itself closes.

The held connection is read-only and never inside a transaction, so it neither writes nor
keeps a snapshot that would stop a checkpoint. A database that does not exist yet is skipped
rather than created. If the holding process dies, the kernel closes its files: nothing leaks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def hold_open(paths: Iterable[str | Path]) -> Iterator[list[Path]]:
    """Hold a read-only connection to each existing database for the block; the paths held."""
    held: list[tuple[Path, sqlite3.Connection]] = []
    try:
        for path in map(Path, paths):
            if not path.is_file():
                continue
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False)
            try:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error:
                conn.close()  # holding is an optimisation: one it cannot read is left alone
                continue
            held.append((path, conn))
        yield [path for path, _ in held]
    finally:
        for _, conn in held:
            conn.close()
