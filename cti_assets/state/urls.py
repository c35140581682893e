"""Backend addresses, read from the environment and shown without their secrets.

A Postgres or Redis URL may carry a password and an object-store URL a key; errors, metadata and
the UI only ever see `redact_url`'s form of them.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

POSTGRES_URL_ENV = "CTI_STATE_POSTGRES_URL"
REDIS_URL_ENV = "CTI_REDIS_URL"
LEGACY_REDIS_URL_ENV = "CTI_RATELIMIT_REDIS_URL"  # rate limits only, before CTI_REDIS_URL
BODIES_URL_ENV = "CTI_BODIES_URL"
SCHEMA_ENV = "CTI_STATE_SCHEMA"
KEY_PREFIX_ENV = "CTI_STATE_KEY_PREFIX"
DEFAULT_SCHEMA = "cti_state"
DEFAULT_KEY_PREFIX = "cti_assets"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def env(name: str) -> str | None:
    """A variable's value, None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def redis_url_env() -> str | None:
    """The variable that holds the Redis URL in use (CTI_REDIS_URL, else the older one)."""
    for name in (REDIS_URL_ENV, LEGACY_REDIS_URL_ENV):
        if env(name):
            return name
    return None


def redact_url(url: str | None) -> str:
    """`url` without user info' password and without query parameters (tokens hide there)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name = user.partition(":")[0]
        netloc = f"{name}:***@{host}" if ":" in user else f"{name}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_identifier(name: str, what: str) -> str:
    """A schema name or key prefix checked to be a plain lower-case identifier."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be a lower-case identifier (letters, digits, _)")
    return name


def postgres_dsn(url: str) -> str:
    """A libpq URI from a SQLAlchemy-style URL (postgresql+psycopg2:// is accepted)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)}")
    return f"postgresql://{rest}"
