"""make_client and the providers' public pages."""

from __future__ import annotations

import pytest

from cti_assets.providers import base
from cti_assets.providers.clients.shodan import ShodanClient
from cti_assets.providers.config import DEFAULTS
from cti_assets.providers.registry import CLIENTS, make_client, provider_page_url


@pytest.mark.parametrize("provider", list(CLIENTS))
def test_make_client_gives_the_provider_client(provider):
    client = make_client(provider, DEFAULTS[provider])
    assert isinstance(client, CLIENTS[provider]) and client.provider == provider
    client.close()


def test_shodan_client_carries_its_internetdb_fallback():
    client = make_client(base.SHODAN, DEFAULTS[base.SHODAN])
    assert isinstance(client, ShodanClient) and client.internetdb.provider == base.INTERNETDB
    client.close()


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="network_context"):
        make_client(base.NETWORK_CONTEXT, DEFAULTS[base.VIRUSTOTAL])


def test_page_urls():
    assert provider_page_url(base.VIRUSTOTAL, "IPv4-Addr", "8.8.8.8") == (
        "https://www.virustotal.com/gui/ip-address/8.8.8.8")
    assert provider_page_url(base.ABUSEIPDB, "IPv6-Addr", "2001:db8::1") == (
        "https://www.abuseipdb.com/check/2001%3Adb8%3A%3A1")
    assert provider_page_url(base.GREYNOISE, "IPv4-Addr", "1.2.3.4") == (
        "https://viz.greynoise.io/ip/1.2.3.4")
    assert provider_page_url(base.SHODAN, "IPv4-Addr", "1.2.3.4") == (
        "https://www.shodan.io/host/1.2.3.4")
    assert provider_page_url(base.SECURITYTRAILS, "Domain-Name", "evil.com") == (
        "https://securitytrails.com/domain/evil.com/dns")
    url_page = provider_page_url(base.VIRUSTOTAL, "Url", "http://x.com/a?b=1#c")
    assert url_page.startswith("https://www.virustotal.com/gui/") and "?" not in url_page
    assert provider_page_url(base.GREYNOISE, "Domain-Name", "evil.com") is None
    assert provider_page_url("nope", "IPv4-Addr", "1.2.3.4") is None
