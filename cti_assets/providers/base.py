"""The provider layer's common vocabulary: result statuses, reasons and the normalised result.

Every client (VirusTotal, Shodan, AbuseIPDB, GreyNoise, SecurityTrails, URLhaus, ThreatFox,
MalwareBazaar, AlienVault OTX, CrowdSec CTI, the offline network context) returns a
`LookupResult`; the assets, the cache and the scoring model only see these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# Status of one provider lookup for one observable.
OK = "ok"
NOT_FOUND = "not_found"
SKIPPED = "skipped"
DEFERRED = "deferred"
ERROR = "error"
STATUSES = (OK, NOT_FOUND, SKIPPED, DEFERRED, ERROR)

# Reasons for SKIPPED.
SKIP_OUT_OF_SCOPE = "out_of_scope"  # the provider does not handle this observable type
SKIP_TLP = "tlp"  # the observable is marked above the provider's max TLP
SKIP_NO_KEY = "no_key"  # no API key configured
SKIP_SPECIAL_USE = "special_use"  # private / reserved / special-use address or name
SKIP_REJECTED = "rejected"  # the observable itself was rejected by validation
SKIP_REASONS = (SKIP_OUT_OF_SCOPE, SKIP_TLP, SKIP_NO_KEY, SKIP_SPECIAL_USE, SKIP_REJECTED)

# Reasons for DEFERRED.
DEFER_BUDGET = "budget"  # triage kept it for a later run (daily budget)
DEFER_TRIAGE = "not_selected"  # preliminary score certain enough; expensive lookup not worth it
DEFER_UNAVAILABLE = "provider_unavailable"  # circuit breaker open: the provider is failing now

# Classes for ERROR.
ERR_AUTH = "auth"
ERR_QUOTA = "quota_exhausted"
ERR_RATE = "rate_limited"
ERR_TRANSIENT = "transient"
ERR_BAD_REQUEST = "bad_request"
ERR_MALFORMED = "malformed"
ERR_TOO_LARGE = "too_large"  # the answer passed the provider's max_body_bytes; reading stopped
ERROR_CLASSES = (ERR_AUTH, ERR_QUOTA, ERR_RATE, ERR_TRANSIENT, ERR_BAD_REQUEST, ERR_MALFORMED,
                 ERR_TOO_LARGE)

# Provider names, as used in asset keys, pools, cache keys and column prefixes.
NETWORK_CONTEXT = "network_context"
INTERNETDB = "shodan_internetdb"
GREYNOISE = "greynoise"
ABUSEIPDB = "abuseipdb"
VIRUSTOTAL = "virustotal"
SECURITYTRAILS = "securitytrails"
SHODAN = "shodan"
URLHAUS = "urlhaus"
THREATFOX = "threatfox"
MALWAREBAZAAR = "malwarebazaar"
OTX = "otx"
CROWDSEC = "crowdsec"
# Cheap: free or high quota, asked for every observable before triage; expensive: low quota,
# only what triage selects. The lookup assets, triage, merge and the CLI all read these two.
CHEAP_PROVIDERS = (NETWORK_CONTEXT, INTERNETDB, GREYNOISE, ABUSEIPDB, URLHAUS, THREATFOX,
                   MALWAREBAZAAR, OTX)
EXPENSIVE_PROVIDERS = (VIRUSTOTAL, SECURITYTRAILS, SHODAN, CROWDSEC)  # CrowdSec: 50 a day free
ALL_PROVIDERS = CHEAP_PROVIDERS + EXPENSIVE_PROVIDERS
# How explanations name each provider.
PROVIDER_LABELS = {
    VIRUSTOTAL: "VirusTotal",
    ABUSEIPDB: "AbuseIPDB",
    GREYNOISE: "GreyNoise",
    SHODAN: "Shodan",
    INTERNETDB: "Shodan InternetDB",
    SECURITYTRAILS: "SecurityTrails",
    NETWORK_CONTEXT: "network context",
    URLHAUS: "URLhaus",
    THREATFOX: "ThreatFox",
    MALWAREBAZAAR: "MalwareBazaar",
    OTX: "AlienVault OTX",
    CROWDSEC: "CrowdSec",
}


@dataclass
class LookupResult:
    """One provider's answer about one observable, normalised.

    `fields` holds only the scoring/context fields listed for the provider in
    `providers.fields.PROVIDER_FIELDS`; the raw body lives in the cache under `raw_digest`.
    """

    provider: str
    entity_type: str
    value: str  # normalised observable value
    status: str
    reason: str | None = None  # skip reason, defer reason or error class
    fields: dict[str, Any] = field(default_factory=dict)
    fetched_at: datetime | None = None
    raw_digest: str | None = None  # sha256 hex of the raw response body
    from_cache: bool = False
    latency_ms: float | None = None
    http_status: int | None = None
    message: str | None = None  # human-readable detail, secrets redacted
    quota_remaining: int | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)
