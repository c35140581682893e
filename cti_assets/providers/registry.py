"""Which client serves which provider, and each provider's public page for an observable.

`make_client` is the one place the runner and the assets get a client from; the page URLs
become external references on what the write-back creates, so an analyst can click through.
Adding a provider: its client module, an entry here, its settings in `config.py`, its fields
and scope in `fields.py`, and its name in `base.py` (cheap or expensive); the lookup assets,
triage, merge, resources and the CLI derive from those (docs/providers.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from cti_assets.providers import base
from cti_assets.providers.clients.abuseipdb import AbuseIPDBClient
from cti_assets.providers.clients.crowdsec import CrowdSecClient
from cti_assets.providers.clients.greynoise import GreyNoiseClient
from cti_assets.providers.clients.malwarebazaar import MalwareBazaarClient
from cti_assets.providers.clients.otx import SECTION_TYPES as OTX_SECTIONS
from cti_assets.providers.clients.otx import OTXClient
from cti_assets.providers.clients.securitytrails import SecurityTrailsClient
from cti_assets.providers.clients.shodan import InternetDBClient, ShodanClient
from cti_assets.providers.clients.threatfox import ThreatFoxClient
from cti_assets.providers.clients.urlhaus import URLhausClient
from cti_assets.providers.clients.virustotal import VirusTotalClient
from cti_assets.providers.config import ProviderSettings, settings_from_env
from cti_assets.providers.http import ProviderClient

if TYPE_CHECKING:
    from cti_assets.providers.ratelimit import SharedLimiter

CLIENTS: dict[str, type[ProviderClient]] = {
    base.VIRUSTOTAL: VirusTotalClient,
    base.SHODAN: ShodanClient,
    base.INTERNETDB: InternetDBClient,
    base.ABUSEIPDB: AbuseIPDBClient,
    base.GREYNOISE: GreyNoiseClient,
    base.SECURITYTRAILS: SecurityTrailsClient,
    base.URLHAUS: URLhausClient,
    base.THREATFOX: ThreatFoxClient,
    base.MALWAREBAZAAR: MalwareBazaarClient,
    base.OTX: OTXClient,
    base.CROWDSEC: CrowdSecClient,
}

# provider -> entity type -> page template; {v} is the percent-encoded value, {hash} the name of
# a hash value's kind (md5, sha1, sha256)
PROVIDER_PAGE_URLS: dict[str, dict[str, str]] = {
    base.VIRUSTOTAL: {
        "IPv4-Addr": "https://www.virustotal.com/gui/ip-address/{v}",
        "IPv6-Addr": "https://www.virustotal.com/gui/ip-address/{v}",
        "Domain-Name": "https://www.virustotal.com/gui/domain/{v}",
        "Hostname": "https://www.virustotal.com/gui/domain/{v}",
        "Url": "https://www.virustotal.com/gui/search/{v}",
        "StixFile": "https://www.virustotal.com/gui/file/{v}",
    },
    base.ABUSEIPDB: {
        "IPv4-Addr": "https://www.abuseipdb.com/check/{v}",
        "IPv6-Addr": "https://www.abuseipdb.com/check/{v}",
    },
    base.GREYNOISE: {"IPv4-Addr": "https://viz.greynoise.io/ip/{v}"},
    base.SHODAN: {
        "IPv4-Addr": "https://www.shodan.io/host/{v}",
        "IPv6-Addr": "https://www.shodan.io/host/{v}",
    },
    base.INTERNETDB: {
        "IPv4-Addr": "https://internetdb.shodan.io/{v}",
        "IPv6-Addr": "https://internetdb.shodan.io/{v}",
    },
    base.SECURITYTRAILS: {
        "Domain-Name": "https://securitytrails.com/domain/{v}/dns",
        "Hostname": "https://securitytrails.com/domain/{v}/dns",
    },
    base.URLHAUS: {
        "Url": "https://urlhaus.abuse.ch/browse.php?search={v}",
        "Domain-Name": "https://urlhaus.abuse.ch/host/{v}/",
        "Hostname": "https://urlhaus.abuse.ch/host/{v}/",
        "IPv4-Addr": "https://urlhaus.abuse.ch/host/{v}/",
        "StixFile": "https://urlhaus.abuse.ch/browse.php?search={v}",
    },
    base.THREATFOX: {t: "https://threatfox.abuse.ch/browse.php?search=ioc%3A{v}"
                     for t in ("IPv4-Addr", "Domain-Name", "Hostname", "Url", "StixFile")},
    base.MALWAREBAZAAR: {"StixFile": "https://bazaar.abuse.ch/browse.php?search={hash}%3A{v}"},
    base.OTX: {t: f"https://otx.alienvault.com/indicator/{kind.lower()}/{{v}}"
               for t, kind in OTX_SECTIONS.items()},
    base.CROWDSEC: {
        "IPv4-Addr": "https://app.crowdsec.net/cti/{v}",
        "IPv6-Addr": "https://app.crowdsec.net/cti/{v}",
    },
}


def make_client(provider: str, settings: ProviderSettings, *,
                limiter: SharedLimiter | None = None,
                internetdb_settings: ProviderSettings | None = None) -> ProviderClient:
    """The client of `provider`; Shodan gets an InternetDB client for its 403 fallback."""
    if provider not in CLIENTS:
        raise ValueError(f"no HTTP client for provider {provider!r}; "
                         f"known: {', '.join(sorted(CLIENTS))}")
    if provider == base.SHODAN:
        idb_settings = internetdb_settings or settings_from_env(base.INTERNETDB)
        idb_limiter = None
        if limiter is not None:
            idb_limiter = limiter.sibling(idb_settings)  # same buckets and quota backends
        internetdb = InternetDBClient(idb_settings, idb_limiter)
        return ShodanClient(settings, limiter, internetdb=internetdb)
    return CLIENTS[provider](settings, limiter)


def provider_page_url(provider: str, entity_type: str, value: str) -> str | None:
    """The provider's public web page about this observable; None when it has none."""
    template = PROVIDER_PAGE_URLS.get(provider, {}).get(entity_type)
    if template is None or not value:
        return None
    kind = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(value), "sha256")
    return template.format(v=quote(value, safe=""), hash=kind)
