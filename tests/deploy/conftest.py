"""A throwaway PostgreSQL database per test, on the machine's server (127.0.0.1:5432 by default;
CTI_TEST_POSTGRES_HOST/PORT/USER/PASSWORD to change), dropped afterwards. Tests that need it skip
with the reason when the driver, dagster-postgres or the server is missing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def postgres_params() -> dict:
    return {
        "hostname": os.environ.get("CTI_TEST_POSTGRES_HOST", "127.0.0.1"),
        "port": int(os.environ.get("CTI_TEST_POSTGRES_PORT", "5432")),
        "username": os.environ.get("CTI_TEST_POSTGRES_USER", "postgres"),
        "password": os.environ.get("CTI_TEST_POSTGRES_PASSWORD", ""),
    }


@pytest.fixture
def postgres_db():
    """The connection parameters of a new, empty database; dropped after the test."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 not installed (postgres extra)")
    pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed (postgres)")
    params = postgres_params()
    try:
        admin = psycopg2.connect(
            host=params["hostname"], port=params["port"], user=params["username"],
            password=params["password"], dbname="postgres", connect_timeout=3,
        )
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {params['hostname']}:{params['port']}: {error}")
    admin.autocommit = True
    name = f"cti_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**params, "db_name": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def instance_yaml(source: Path, storage: dict | None = None) -> dict:
    """A dagster.yaml of the repository with the run storage swapped for `storage`."""
    config = yaml.safe_load(source.read_text())
    if storage is not None:
        config["storage"] = storage
    return config


def postgres_storage(db: dict) -> dict:
    """deploy/dagster.yaml's storage block with literal values instead of env variables."""
    deploy = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())["storage"]
    pg = dict(deploy["postgres"]["postgres_db"])
    pg.update(db)
    return {"postgres": {"postgres_db": pg}}


@pytest.fixture
def postgres_home(tmp_path, postgres_db) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the repository's, on the throwaway database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = instance_yaml(REPO / "dagster.yaml", postgres_storage(postgres_db))
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home
