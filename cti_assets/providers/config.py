"""Per-provider settings: key, base URL, TLP ceiling, rate limits, cache TTLs, timeouts.

`ProviderSettings` is the single source of truth; `DEFAULTS` holds each provider's free tier
(providers.md) and real base URL, `settings_from_env` overlays environment variables, and the
Dagster resources build the same dataclass from their EnvVar-backed fields.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cti_assets.envvars import bad_setting, flag
from cti_assets.providers import base

DAY_S = 86_400
DEFAULT_CACHE_TTL_S: dict[str, int] = {
    "IPv4-Addr": DAY_S,
    "IPv6-Addr": DAY_S,
    "Domain-Name": 3 * DAY_S,
    "Hostname": 3 * DAY_S,
    "Url": DAY_S,
    "StixFile": 30 * DAY_S,
}
DEFAULT_NOT_FOUND_TTL_S = 6 * 3600
DEFAULT_MAX_TLP = "TLP:AMBER"


@dataclass
class ProviderSettings:
    """Everything a client, the limiter, the cache and the runner need about one provider."""

    name: str
    api_key: str | None = field(default=None, repr=False)
    base_url: str = ""
    max_tlp: str = DEFAULT_MAX_TLP
    per_second: float | None = None
    per_minute: int | None = None
    per_day: int | None = None
    per_month: int | None = None
    cache_ttl_s: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CACHE_TTL_S))
    not_found_ttl_s: int = DEFAULT_NOT_FOUND_TTL_S
    timeout_s: float = 10.0  # read timeout: longest silence between two reads of one answer
    connect_timeout_s: float = 3.05
    deadline_s: float = 30.0  # wall-clock limit of one request, a slow drip included
    max_body_bytes: int = 8 * 1024 * 1024  # a longer answer is error/too_large, never read in full
    breaker_failures: int = 3  # consecutive transient failures that open the circuit breaker
    breaker_cooldown_s: float = 30.0  # open this long before one probe may go out
    max_workers: int = 8
    max_retries: int = 3
    paid: bool = False
    backoff_base_s: float = 1.0  # full-jitter exponential backoff on transient errors
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After ends the lookup as rate_limited
    max_wait_s: float = 120.0  # longest wait for a rate-limit slot before giving up
    pool_limit: int = 2  # Dagster pool: lookup steps of this provider running at once

    @property
    def needs_key(self) -> bool:
        """InternetDB never takes a key; GreyNoise Community works without one."""
        if self.name == base.INTERNETDB:
            return False
        if self.name == base.GREYNOISE:
            return self.paid
        return True

    def ttl_for(self, entity_type: str, found: bool = True) -> int:
        if not found:
            return self.not_found_ttl_s
        return int(self.cache_ttl_s.get(entity_type, DAY_S))

    @property
    def origin(self) -> str:
        """The endpoint answers come from, as a digest of the normalised base URL
        (endpoint_origin): cached answers serve only lookups at the endpoint that gave them, and
        the digest is what is stored beside them, so a token in a gateway's path or query is
        never written to the cache."""
        return f"sha256:{_digest(endpoint_origin(self.base_url), 32)}"

    @property
    def state_name(self) -> str:
        """The name rate-limit and quota state is kept under: the provider's own for its
        documented endpoint, else the provider's with a digest of the endpoint, so calls to the
        sandbox (or any other endpoint) never spend or read the real account's counts."""
        documented = DEFAULTS.get(self.name)
        here = endpoint_origin(self.base_url)
        if documented is not None and endpoint_origin(documented.base_url) == here:
            return self.name
        return f"{self.name}_{_digest(here, 12)}"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def endpoint_origin(base_url: str) -> str:
    """`base_url` normalised: scheme and host lower-cased, the scheme's default port and the
    trailing slash dropped, and any user or password left out."""
    parts = urlsplit(base_url.strip())
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:  # not a number: kept as written, so it still tells endpoints apart
        port = None
        netloc = parts.netloc.rpartition("@")[2].lower()
    if port is not None and (parts.scheme.lower(), port) not in (("https", 443), ("http", 80)):
        netloc += f":{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, ""))


DEFAULTS: dict[str, ProviderSettings] = {
    base.VIRUSTOTAL: ProviderSettings(
        base.VIRUSTOTAL, base_url="https://www.virustotal.com/api/v3",
        per_minute=4, per_day=500, per_month=15_500, max_workers=4, pool_limit=1,
    ),
    base.SHODAN: ProviderSettings(
        base.SHODAN, base_url="https://api.shodan.io", per_second=1.0, max_workers=2,
        pool_limit=1,
    ),
    base.INTERNETDB: ProviderSettings(
        base.INTERNETDB, base_url="https://internetdb.shodan.io", per_second=2.0, max_workers=4,
    ),
    base.ABUSEIPDB: ProviderSettings(
        base.ABUSEIPDB, base_url="https://api.abuseipdb.com/api/v2", per_second=2.0,
        per_day=1_000,
    ),
    base.GREYNOISE: ProviderSettings(
        base.GREYNOISE, base_url="https://api.greynoise.io", per_second=1.0, per_day=100,
        max_workers=4,
    ),
    base.SECURITYTRAILS: ProviderSettings(
        base.SECURITYTRAILS, base_url="https://api.securitytrails.com/v1", per_second=1.0,
        per_month=50, max_workers=2, pool_limit=1,
    ),
    # abuse.ch publishes no hard limit ("fair use"); two a second each keeps well inside it
    base.URLHAUS: ProviderSettings(
        base.URLHAUS, base_url="https://urlhaus-api.abuse.ch/v1", per_second=2.0, max_workers=4,
    ),
    base.THREATFOX: ProviderSettings(
        base.THREATFOX, base_url="https://threatfox-api.abuse.ch/api/v1", per_second=2.0,
        max_workers=4,
    ),
    base.MALWAREBAZAAR: ProviderSettings(
        base.MALWAREBAZAAR, base_url="https://mb-api.abuse.ch/api/v1", per_second=2.0,
        max_workers=4,
    ),
    # OTX throttles authenticated keys per hour (10,000 requests) and answers 429 beyond
    base.OTX: ProviderSettings(
        base.OTX, base_url="https://otx.alienvault.com/api/v1", per_second=2.0, max_workers=4,
    ),
    # CrowdSec CTI community key: 50 lookups a day
    base.CROWDSEC: ProviderSettings(
        base.CROWDSEC, base_url="https://cti.api.crowdsec.net/v2", per_second=1.0, per_day=50,
        max_workers=2, pool_limit=1,
    ),
}

KEY_VARS: dict[str, str | None] = {
    base.VIRUSTOTAL: "VIRUSTOTAL_API_KEY",
    base.SHODAN: "SHODAN_API_KEY",
    base.INTERNETDB: None,
    base.ABUSEIPDB: "ABUSEIPDB_API_KEY",
    base.GREYNOISE: "GREYNOISE_API_KEY",
    base.SECURITYTRAILS: "SECURITYTRAILS_API_KEY",
    # one abuse.ch Auth-Key serves URLhaus, ThreatFox and MalwareBazaar
    base.URLHAUS: "ABUSECH_API_KEY",
    base.THREATFOX: "ABUSECH_API_KEY",
    base.MALWAREBAZAAR: "ABUSECH_API_KEY",
    base.OTX: "OTX_API_KEY",
    base.CROWDSEC: "CROWDSEC_API_KEY",
}
URL_VARS: dict[str, str] = {
    base.VIRUSTOTAL: "VIRUSTOTAL_BASE_URL",
    base.SHODAN: "SHODAN_BASE_URL",
    base.INTERNETDB: "SHODAN_INTERNETDB_URL",
    base.ABUSEIPDB: "ABUSEIPDB_BASE_URL",
    base.GREYNOISE: "GREYNOISE_BASE_URL",
    base.SECURITYTRAILS: "SECURITYTRAILS_BASE_URL",
    base.URLHAUS: "URLHAUS_BASE_URL",
    base.THREATFOX: "THREATFOX_BASE_URL",
    base.MALWAREBAZAAR: "MALWAREBAZAAR_BASE_URL",
    base.OTX: "OTX_BASE_URL",
    base.CROWDSEC: "CROWDSEC_BASE_URL",
}
def positive_number(text: str) -> float:
    """A finite number above 0 (a rate, a timeout): 0 would turn a rate limit off."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def positive_whole_number(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def whole_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


# suffix -> (settings attribute, parser, description)
TUNING_VARS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "MAX_TLP": ("max_tlp", str, "highest TLP sent to the provider"),
    "PER_SECOND": ("per_second", positive_number, "requests per second (shared by all processes)"),
    "PER_MINUTE": ("per_minute", positive_whole_number, "requests per minute"),
    "PER_DAY": ("per_day", positive_whole_number, "requests per day"),
    "PER_MONTH": ("per_month", positive_whole_number, "requests per month (30-day window)"),
    "TIMEOUT_S": ("timeout_s", positive_number, "read timeout of one request, seconds"),
    "CONNECT_TIMEOUT_S": ("connect_timeout_s", positive_number, "connect timeout, seconds"),
    "DEADLINE_S": ("deadline_s", positive_number,
                   "wall-clock limit of one request (slow drips too)"),
    "MAX_BODY_BYTES": ("max_body_bytes", positive_whole_number,
                       "largest answer read; longer is error/too_large"),
    "BREAKER_FAILURES": ("breaker_failures", positive_whole_number,
                         "consecutive timeouts/5xx that stop calls for the run"),
    "BREAKER_COOLDOWN_S": ("breaker_cooldown_s", positive_number,
                           "seconds the breaker stays open before one probe"),
    "MAX_WORKERS": ("max_workers", positive_whole_number, "concurrent requests (thread pool size)"),
    "MAX_RETRIES": ("max_retries", whole_number, "retries on 429 and transient errors"),
}


def env_prefix(provider: str) -> str:
    return provider.upper()


def tuning_value(name: str, parse: Callable[[str], Any],
                 env: Mapping[str, str] | None = None) -> Any | None:
    """A provider variable read with its TUNING_VARS parser; None when unset. A value the parser
    refuses is a SettingsError naming the variable."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return None
    try:
        return parse(raw)
    except ValueError:
        raise bad_setting(name, raw, f"a {parse.__name__.replace('_', ' ')}") from None


def settings_from_env(provider: str, env: Mapping[str, str] | None = None) -> ProviderSettings:
    """DEFAULTS[provider] overlaid with the provider's environment variables."""
    env = os.environ if env is None else env
    if provider not in DEFAULTS:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(sorted(DEFAULTS))}")
    overrides: dict[str, Any] = {}
    key_var = KEY_VARS[provider]
    if key_var and env.get(key_var, "").strip():
        overrides["api_key"] = env[key_var].strip()
    if env.get(URL_VARS[provider], "").strip():
        overrides["base_url"] = env[URL_VARS[provider]].strip()
    for suffix, (attribute, parse, _) in TUNING_VARS.items():
        value = tuning_value(f"{env_prefix(provider)}_{suffix}", parse, env)
        if value is not None:
            overrides[attribute] = value
    if provider == base.GREYNOISE and flag("GREYNOISE_PAID", env=env):
        overrides["paid"] = True
    defaults = DEFAULTS[provider]
    return replace(defaults, cache_ttl_s=dict(defaults.cache_ttl_s), **overrides)


def config_table_markdown() -> str:
    """A Markdown table of every provider variable with its default, for the README."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    documented: set[str] = set()
    for provider, defaults in DEFAULTS.items():
        key_var = KEY_VARS[provider]
        if key_var and key_var not in documented:
            documented.add(key_var)
            unset = (
                "unset: the Community API is used without a key"
                if provider == base.GREYNOISE
                else "unset: skipped with reason no_key"
            )
            users = ", ".join(p for p, var in KEY_VARS.items() if var == key_var)
            rows.append(f"| `{key_var}` | unset | {users} API key; {unset} |")
        rows.append(f"| `{URL_VARS[provider]}` | `{defaults.base_url}` | {provider} base URL |")
        prefix = env_prefix(provider)
        for suffix, (attribute, _, meaning) in TUNING_VARS.items():
            default = getattr(defaults, attribute)
            shown = "unset" if default is None else f"`{default}`"
            rows.append(f"| `{prefix}_{suffix}` | {shown} | {provider}: {meaning} |")
    rows.append("| `GREYNOISE_PAID` | `false` | use the paid v3 IP endpoint instead of Community |")
    rows.append("| `CTI_RATELIMIT_REDIS_URL` | unset | older name of `CTI_REDIS_URL` (shared rate "
                "limits and quota records, see the shared state below) |")
    return "\n".join(rows) + "\n"
