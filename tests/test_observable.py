"""Normalisation, validation and TLP ranking of observable values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti_assets.observable import (
    TLP_MARKING_IDS,
    TLP_ORDER,
    UNMARKED_TLP,
    Normalized,
    normalize,
    tlp_allows,
    tlp_of,
    tlp_rank,
)
from cti_assets.sources.base import OBSERVABLE_TYPES

ACCEPTED = [
    ("IPv4-Addr", " 8.8.8.8 ", "8.8.8.8"),
    ("IPv4-Addr", "198.51.100[.]7", "198.51.100.7"),
    ("IPv4-Addr", "0.0.0.0", "0.0.0.0"),
    ("IPv6-Addr", "2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("IPv6-Addr", "[2001:db8::a]", "2001:db8::a"),
    ("IPv6-Addr", "0:0:0:0:0:0:0:0", "::"),
    ("Domain-Name", "BÜCHER.example.", "xn--bcher-kva.example"),
    ("Domain-Name", "Example.COM", "example.com"),
    ("Domain-Name", "evil[.]example", "evil.example"),
    ("Domain-Name", "xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("Domain-Name", "straße.test", "xn--strae-oqa.test"),
    ("Domain-Name", "bücher。example", "xn--bcher-kva.example"),
    ("Hostname", "WKS_042", "wks_042"),
    ("Hostname", "_ldap._tcp.DC01.corp.test", "_ldap._tcp.dc01.corp.test"),
    ("Hostname", "mail(.)evil(.)test.", "mail.evil.test"),
    ("Url", "http://Example.COM", "http://example.com/"),
    ("Url", "HTTPS://Evil.Example:443/a/./b/../c?q=1#frag", "https://evil.example/a/c?q=1"),
    ("Url", "hxxps[:]//evil[.]example/x", "https://evil.example/x"),
    ("Url", "http://evil.example:8080/%7euser/%2f%3a", "http://evil.example:8080/~user/%2F%3A"),
    ("Url", "http://BÜCHER.example/ä b", "http://xn--bcher-kva.example/%C3%A4%20b"),
    ("Url", "ftp://files.test:21/pub/", "ftp://files.test/pub/"),
    ("Url", "http://[2001:DB8::1]:80/", "http://[2001:db8::1]/"),
    ("Url", "http://198.51.100.7:8443/gate.php", "http://198.51.100.7:8443/gate.php"),
    ("Url", "http://host.test/[.]", "http://host.test/%5B.%5D"),
    ("Url", "http://user:p%40ss@host.test/", "http://user:p%40ss@host.test/"),
    ("StixFile", "D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e"),
]

REJECTED = [
    ("IPv4-Addr", "999.1.2.3", "invalid_ipv4"),
    ("IPv4-Addr", "010.1.2.3", "invalid_ipv4"),
    ("IPv4-Addr", "10.0.0.0/8", "invalid_ipv4"),
    ("IPv4-Addr", "1.2.3", "invalid_ipv4"),
    ("IPv4-Addr", "1.2.3.4:80", "invalid_ipv4"),
    ("IPv4-Addr", "١.٢.٣.٤", "invalid_ipv4"),  # Arabic-Indic digits are not ASCII digits
    ("IPv6-Addr", "2001:db8::1/64", "invalid_ipv6"),
    ("IPv6-Addr", "fe80::1%eth0", "invalid_ipv6"),
    ("IPv6-Addr", "2001:db8:::1", "invalid_ipv6"),
    ("IPv6-Addr", "198.51.100.1", "invalid_ipv6"),
    ("Domain-Name", "localhost", "invalid_domain"),
    ("Domain-Name", "a" * 64 + ".example", "invalid_domain: label too long"),
    ("Domain-Name", ".".join(["a" * 60] * 5), "invalid_domain: name too long"),
    ("Domain-Name", "under_score.example", "invalid_domain"),
    ("Domain-Name", "-lead.example", "invalid_domain"),
    ("Domain-Name", "a..example", "invalid_domain: empty label"),
    ("Domain-Name", "198.51.100.7", "invalid_domain: numeric"),
    ("Domain-Name", "xn--zz.example", "invalid_domain: bad punycode"),
    ("Domain-Name", "exa mple.com", "invalid_domain"),
    ("Hostname", "host*.test", "invalid_hostname"),
    ("Url", "javascript:alert(1)", "invalid_url: unsupported scheme"),
    ("Url", "file:///etc/passwd", "invalid_url: unsupported scheme"),
    ("Url", "evil.example/path", "invalid_url: missing scheme"),
    ("Url", "http:///path", "invalid_url: missing host"),
    ("Url", "http://a.example:99999/", "invalid_url: bad port"),
    ("Url", "http://999.1.2.3/", "invalid_url"),
    ("Url", "http://[2001:db8::1/", "invalid_url"),
    ("StixFile", "abc", "invalid_hash: length 3"),
    ("StixFile", "0" * 31, "invalid_hash: length 31"),
    ("StixFile", "z" * 32, "invalid_hash: not hexadecimal"),
    ("Email-Addr", "a@b.example", "unsupported_type: Email-Addr"),
    ("IPv4-Addr", None, "empty_value"),
    ("IPv4-Addr", "   ", "empty_value"),
    ("IPv4-Addr", 134744072, "not_text: int"),
    ("Domain-Name", "a" * 5000, "too_long"),
    ("Domain-Name", "evil\x00.example", "invalid_characters: control character U+0000"),
    ("Domain-Name", "evil\ud800.example", "invalid_characters: lone surrogate"),
]


@pytest.mark.parametrize(("entity_type", "raw", "expected"), ACCEPTED)
def test_accepted_values_normalise(entity_type, raw, expected):
    result = normalize(entity_type, raw)
    assert result == Normalized(expected, None, result.hash_type)
    assert result.ok


@pytest.mark.parametrize(("entity_type", "raw", "reason_prefix"), REJECTED)
def test_rejected_values_carry_a_reason(entity_type, raw, reason_prefix):
    result = normalize(entity_type, raw)
    assert not result.ok
    assert result.value is None
    assert result.reason.startswith(reason_prefix), result.reason


@pytest.mark.parametrize(
    ("digest", "hash_type"),
    [("a" * 32, "MD5"), ("B" * 40, "SHA-1"), ("0123456789abcdef" * 4, "SHA-256")],
)
def test_hash_type_follows_length(digest, hash_type):
    result = normalize("StixFile", digest)
    assert (result.value, result.hash_type) == (digest.lower(), hash_type)


def test_stix_type_names_are_accepted_as_aliases():
    assert normalize("ipv4-addr", "8.8.8.8").value == "8.8.8.8"
    assert normalize("file", "a" * 32).hash_type == "MD5"


# --- properties ---------------------------------------------------------------------------

_url_like = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}{path}",
    st.sampled_from(["http", "HTTPS", "ftp", "hxxp", "gopher"]),
    st.text(min_size=0, max_size=30),
    st.text(min_size=0, max_size=40),
)
_domain_like = st.lists(
    st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=12), max_size=5
).map(".".join)
_values = st.one_of(
    st.none(), st.integers(), st.text(max_size=200), _url_like, _domain_like,
    st.ip_addresses().map(str), st.text(alphabet="0123456789.:abcdefABCDEF[]/%", max_size=45),
)


@settings(max_examples=600, deadline=None)
@given(entity_type=st.sampled_from(OBSERVABLE_TYPES), value=_values)
def test_never_raises_and_is_idempotent(entity_type, value):
    result = normalize(entity_type, value)
    assert result.ok != (result.reason is not None)
    if result.ok:
        again = normalize(entity_type, result.value)
        assert again == result, (value, result, again)
    else:
        assert result.reason and not result.reason.startswith("internal_error"), result.reason


_KNOWN_TYPES = {"ipv4-addr", "ipv6-addr", "domain-name", "hostname", "x-opencti-hostname", "url",
                "stixfile", "file"}


@settings(max_examples=200, deadline=None)
@given(entity_type=st.one_of(st.none(), st.integers(), st.text(max_size=20)),
       value=st.text(max_size=20))
def test_unknown_types_are_rejected_not_raised(entity_type, value):
    result = normalize(entity_type, value)
    if not (isinstance(entity_type, str) and entity_type.lower() in _KNOWN_TYPES):
        assert result.reason.startswith("unsupported_type: ")


def test_huge_input_is_rejected_quickly():
    assert normalize("Url", "http://a.example/" + "x" * 10_000_000).reason.startswith("too_long")


# --- TLP ----------------------------------------------------------------------------------


def test_tlp_order_puts_amber_strict_between_amber_and_red():
    assert [tlp_rank(t) for t in TLP_ORDER] == sorted(tlp_rank(t) for t in TLP_ORDER)
    assert tlp_rank("TLP:AMBER") < tlp_rank("TLP:AMBER+STRICT") < tlp_rank("TLP:RED")
    assert not tlp_allows("TLP:AMBER+STRICT", "TLP:AMBER")
    assert tlp_allows("TLP:AMBER", "TLP:AMBER+STRICT")


def test_white_is_clear():
    assert tlp_rank("TLP:WHITE") == tlp_rank("TLP:CLEAR") == 0
    assert tlp_of(["tlp:white"]) == "TLP:CLEAR"
    assert tlp_allows("TLP:WHITE", "TLP:CLEAR")


def test_most_restrictive_marking_wins_and_ids_resolve():
    markings = [TLP_MARKING_IDS["TLP:GREEN"], "PAP:RED", TLP_MARKING_IDS["TLP:AMBER+STRICT"]]
    assert tlp_of(markings) == "TLP:AMBER+STRICT"
    assert tlp_of(["TLP:GREEN", "tlp:red", "statement"]) == "TLP:RED"


def test_unmarked_policy_default_and_env(monkeypatch):
    monkeypatch.delenv("CTI_UNMARKED_TLP", raising=False)
    assert tlp_of(["PAP:RED"]) == UNMARKED_TLP == "TLP:CLEAR"
    assert tlp_of([], unmarked="TLP:GREEN") == "TLP:GREEN"
    monkeypatch.setenv("CTI_UNMARKED_TLP", "tlp:amber")
    assert tlp_of([]) == "TLP:AMBER"
    monkeypatch.setenv("CTI_UNMARKED_TLP", "purple")
    with pytest.raises(ValueError, match="CTI_UNMARKED_TLP"):
        tlp_of([])


@pytest.mark.parametrize("bad", ["PAP:RED", "TLP:PURPLE", "", None])
def test_unknown_tlp_fails_closed(bad):
    assert not tlp_allows(bad, "TLP:RED")
    assert not tlp_allows("TLP:CLEAR", bad)
    with pytest.raises(ValueError):
        tlp_rank(bad)
