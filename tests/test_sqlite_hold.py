"""Holding a WAL database open: another connection's close no longer checkpoints it (the log
stays), nothing is lost, and a database that does not exist is neither held nor created."""

import sqlite3

from cti_assets.sqlite_hold import hold_open


def _wal_database(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (n INTEGER)")
    conn.commit()
    conn.close()


def _write_and_close(path, n):
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO events VALUES (?)", (n,))
    conn.commit()
    conn.close()


def test_a_close_under_the_hold_does_not_checkpoint(tmp_path):
    db = tmp_path / "run.db"
    _wal_database(db)
    wal = tmp_path / "run.db-wal"

    _write_and_close(db, 1)
    assert not wal.exists()  # the last connection's close checkpointed and removed the log

    with hold_open([db]) as held:
        assert held == [db]
        for n in range(2, 12):
            _write_and_close(db, n)
        assert wal.exists() and wal.stat().st_size > 0  # each close was only a close

    conn = sqlite3.connect(db)
    assert [n for (n,) in conn.execute("SELECT n FROM events ORDER BY n")] == list(range(1, 12))
    conn.close()
    assert not wal.exists()  # the first close without a holder checkpoints as before


def test_the_holder_never_writes_and_skips_what_does_not_exist(tmp_path):
    db = tmp_path / "index.db"
    _wal_database(db)
    missing = tmp_path / "not-yet.db"
    with hold_open([missing, db]) as held:
        assert held == [db]
        _write_and_close(db, 7)
    assert not missing.exists()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT n FROM events").fetchall() == [(7,)]
    conn.close()
