"""The Dagster instance is created once even when several first runs start together, and a
corrupted one (two alembic heads) is reported in one line that says how to recover."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _databases(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*.db") if p.is_file())


def _alembic_rows(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0]


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    return home


def test_six_simultaneous_first_runs_create_one_clean_instance(fresh_home):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([sys.executable, "-m", "cti_assets.cli", "pools"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    assert [code for code, _ in outcomes] == [0] * 6, [err for _, err in outcomes]
    databases = _databases(fresh_home)
    assert {db.name for db in databases} >= {"runs.db", "schedules.db"}
    versions = {db.name: _alembic_rows(db) for db in databases if _has_alembic(db)}
    assert versions and set(versions.values()) == {1}, versions


def _has_alembic(db: Path) -> bool:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = "
                                  "'alembic_version'").fetchone()[0] == 1


def test_a_corrupted_instance_is_one_clear_line(fresh_home, capsys):
    from cti_assets.cli.main import main

    assert main(["pools"]) == 0
    runs_db = next(db for db in _databases(fresh_home) if db.name == "runs.db")
    with sqlite3.connect(runs_db) as connection:
        connection.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    capsys.readouterr()
    assert main(["pools"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "corrupted" in err and "move" in err
