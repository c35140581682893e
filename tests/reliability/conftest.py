"""The PostgreSQL fixtures of tests/deploy (a throwaway database on 127.0.0.1:5432, skipped with
the reason when absent), shared with the reliability scenarios."""

from tests.deploy.conftest import postgres_db, postgres_home  # noqa: F401 - pytest fixtures
