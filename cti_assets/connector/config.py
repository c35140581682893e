"""The connector's settings, read from the environment when asked.

They live with the connector (as provider settings live with the providers) because only the
connector process reads them. The standard OpenCTI connector variables keep their usual names,
so a deployment configured like any other connector works unchanged.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from cti_assets.sources.base import OBSERVABLE_TYPES

DEFAULT_NAME = "cti-assets"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
DEFAULT_WINDOW_S = 2.0


@dataclass(frozen=True)
class ConnectorSettings:
    """What the connector process needs; the token never appears in repr."""

    opencti_url: str
    opencti_token: str = field(repr=False)
    connector_id: str
    name: str = DEFAULT_NAME
    scope: tuple[str, ...] = OBSERVABLE_TYPES
    auto: bool = False
    log_level: str = "info"
    dagster_url: str = DEFAULT_DAGSTER_URL
    dagster_public_url: str = ""  # run links on works; default: dagster_url
    window_s: float = DEFAULT_WINDOW_S
    poll_s: float = 0.5
    max_backoff_s: float = 60.0

    def in_scope(self, entity_type: str) -> bool:
        """OpenCTI matches scope case-insensitively."""
        return entity_type.lower() in {t.lower() for t in self.scope}

    def helper_config(self) -> dict:
        """The config dict OpenCTIConnectorHelper reads (environment variables still win)."""
        return {
            "opencti": {"url": self.opencti_url, "token": self.opencti_token},
            "connector": {
                "id": self.connector_id,
                "type": "INTERNAL_ENRICHMENT",
                "name": self.name,
                "scope": ",".join(self.scope),
                "auto": self.auto,
                "log_level": self.log_level,
            },
        }


class ConnectorConfigError(ValueError):
    """A setting is missing or malformed."""


def _bool(text: str | None, default: bool) -> bool:
    if text is None or not text.strip():
        return default
    return text.strip().lower() in ("1", "true", "yes")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConnectorConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise ConnectorConfigError(f"{name} must be >= 0, got {text!r}")
    return value


def settings_from_env(env: Mapping[str, str] | None = None) -> ConnectorSettings:
    """CONNECTOR_* and OPENCTI_* as any OpenCTI connector, plus DAGSTER_WEBSERVER_URL and
    CONNECTOR_COALESCE_WINDOW_S (seconds requests for one partition wait to share a run);
    DAGSTER_PUBLIC_URL is the address analysts open run links at, when it differs."""
    env = os.environ if env is None else env
    missing = [n for n in ("OPENCTI_URL", "OPENCTI_TOKEN", "CONNECTOR_ID") if not env.get(n)]
    if missing:
        raise ConnectorConfigError(f"set {', '.join(missing)}")
    connector_id = env["CONNECTOR_ID"].strip()
    if not _is_uuid4(connector_id):
        raise ConnectorConfigError(
            f"CONNECTOR_ID must be a UUIDv4 (the platform registers a connector under it), not "
            f"{connector_id[:60]!r}: make one with "
            "`python -c 'import uuid; print(uuid.uuid4())'` and keep it across restarts")
    scope_text = env.get("CONNECTOR_SCOPE", "").strip()
    scope = tuple(s.strip() for s in scope_text.split(",") if s.strip()) or OBSERVABLE_TYPES
    return ConnectorSettings(
        opencti_url=env["OPENCTI_URL"],
        opencti_token=env["OPENCTI_TOKEN"],
        connector_id=connector_id,
        name=env.get("CONNECTOR_NAME", "").strip() or DEFAULT_NAME,
        scope=scope,
        auto=_bool(env.get("CONNECTOR_AUTO"), False),
        log_level=env.get("CONNECTOR_LOG_LEVEL", "").strip() or "info",
        dagster_url=(env.get("DAGSTER_WEBSERVER_URL", "").strip() or DEFAULT_DAGSTER_URL).rstrip(
            "/"
        ),
        dagster_public_url=env.get("DAGSTER_PUBLIC_URL", "").strip().rstrip("/"),
        window_s=_seconds(env, "CONNECTOR_COALESCE_WINDOW_S", DEFAULT_WINDOW_S),
        poll_s=_seconds(env, "CONNECTOR_POLL_S", 0.5),
    )


def _is_uuid4(text: str) -> bool:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == text.lower()
