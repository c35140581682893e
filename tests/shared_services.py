"""The shared-state services the tests use on loopback, each skipping with its reason when absent:
a throwaway schema on the machine's PostgreSQL (db `test`), a unique Redis key prefix, and an
S3-compatible server (moto's server mode) started by the test. Everything is removed afterwards.
Addresses: CTI_TEST_STATE_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test),
CTI_TEST_REDIS_URL (default redis://127.0.0.1:6379/0)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

POSTGRES_URL = os.environ.get("CTI_TEST_STATE_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CTI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Postgres:
    url: str
    schema: str


@dataclass
class Redis:
    url: str
    prefix: str


@contextmanager
def postgres_schema() -> Iterator[Postgres]:
    """A unique schema name on the test database, dropped at the end (created by the stores)."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 not installed (postgres extra)")
    try:
        conn = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(error).strip()}")
    conn.autocommit = True
    schema = f"cti_t_{secrets.token_hex(5)}"
    try:
        yield Postgres(POSTGRES_URL, schema)
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@contextmanager
def redis_prefix() -> Iterator[Redis]:
    """A unique key prefix on the test Redis, its keys deleted at the end."""
    redis = pytest.importorskip("redis", reason="redis-py not installed (redis extra)")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {error}")
    prefix = f"cti_t_{secrets.token_hex(5)}"
    try:
        yield Redis(REDIS_URL, prefix)
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 and a fresh bucket; yields the AWS_* variables to use and
    `bucket`. The caller puts the variables in the environment (s3fs reads them)."""
    pytest.importorskip("s3fs", reason="s3fs not installed (the s3 extra)")
    server_module = pytest.importorskip("moto.server", reason="moto[server] not installed (dev)")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
               "bucket": f"cti-state-{secrets.token_hex(4)}"}
    finally:
        server.stop()


def make_bucket(env: dict[str, str]) -> None:
    """Create env['bucket'] on the server whose variables are in the environment."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir(env["bucket"])
