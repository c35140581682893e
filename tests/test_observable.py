"""Normalisation, validation and TLP ranking of observable values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti_assets.intake.observable import (
    TLP2_MARKING_IDS,
    TLP_MARKING_IDS,
    TLP_ORDER,
    UNMARKED_TLP,
    MarkingRef,
    Normalized,
    decide_tlp,
    marking_ref,
    normalize,
    tlp_allows,
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


def tlp_of(*markings: MarkingRef, unmarked: str | None = None) -> str:
    return decide_tlp(markings, unmarked).tlp


def named(definition_type: str, definition: str, n: int = 0) -> MarkingRef:
    return MarkingRef(f"marking-definition--00000000-0000-4000-8000-{n:012d}", definition_type,
                      definition)


def test_white_is_clear():
    assert tlp_rank("TLP:WHITE") == tlp_rank("TLP:CLEAR") == 0
    assert tlp_of(named("TLP", "tlp:white")) == "TLP:CLEAR"
    assert tlp_allows("TLP:WHITE", "TLP:CLEAR")


def test_most_restrictive_marking_wins_and_ids_resolve():
    markings = [MarkingRef(TLP_MARKING_IDS["TLP:GREEN"]), named("PAP", "PAP:RED"),
                MarkingRef(TLP_MARKING_IDS["TLP:AMBER+STRICT"])]
    assert tlp_of(*markings) == "TLP:AMBER+STRICT"
    assert tlp_of(named("TLP", "TLP:GREEN", 1), named("tlp", "tlp:red", 2),
                  named("statement", "Copyright", 3)) == "TLP:RED"


@pytest.mark.parametrize("tlp", TLP_ORDER)
def test_tlp2_ids_alone_resolve(tlp):
    """OASIS's TLP 2.0 marking definitions referenced by id, no definition object present."""
    decision = decide_tlp([MarkingRef(TLP2_MARKING_IDS[tlp])], unmarked="TLP:CLEAR")
    assert decision.tlp == tlp and decision.reason is None


TLP2_RED_OBJECT = {
    "type": "marking-definition", "spec_version": "2.1", "name": "TLP:RED",
    "id": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
    "created": "2022-10-01T00:00:00.000Z",
    "extensions": {"extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
        "extension_type": "property-extension", "tlp_2_0": "red"}},
}


@pytest.mark.parametrize(("definition", "expected"), [
    # STIX 2.1's TLP 1.0 form under an id of its own
    ({"id": "marking-definition--11111111-1111-4111-8111-111111111111",
      "definition_type": "tlp", "definition": {"tlp": "amber"}}, "TLP:AMBER"),
    # the TLP 2.0 extension, under an id that is not OASIS's
    ({**TLP2_RED_OBJECT, "id": "marking-definition--22222222-2222-4222-8222-222222222222",
      "name": "house red"}, "TLP:RED"),
    # OpenCTI's own form
    ({"id": "marking-definition--33333333-3333-4333-8333-333333333333",
      "definition_type": "TLP", "definition": "TLP:AMBER+STRICT", "x_opencti_order": 3},
     "TLP:AMBER+STRICT"),
])
def test_marking_objects_resolve_by_definition(definition, expected):
    decision = decide_tlp([marking_ref(definition)], unmarked="TLP:CLEAR")
    assert decision == decide_tlp([marking_ref(definition)]) and decision.tlp == expected


@pytest.mark.parametrize("marking", [
    MarkingRef("marking-definition--44444444-4444-4444-8444-444444444444"),  # unknown id alone
    named("TLP", "TLP:PURPLE"),  # a TLP definition naming no TLP
    MarkingRef("not-a-marking-id", None, "something"),
])
def test_unresolvable_marking_fails_closed_to_red(marking):
    decision = decide_tlp([marking, MarkingRef(TLP_MARKING_IDS["TLP:GREEN"])],
                          unmarked="TLP:CLEAR")
    assert decision.tlp == "TLP:RED"
    assert decision.reason == f"tlp_unresolved: {marking.id}"
    assert not tlp_allows(decision.tlp, "TLP:AMBER+STRICT")


def test_non_tlp_markings_are_ignored_not_failed_closed():
    decision = decide_tlp([named("PAP", "PAP:RED"), named("statement", "Copyright ACME", 1)],
                          unmarked="TLP:GREEN")
    assert decision.tlp == "TLP:GREEN" and decision.reason == "unmarked"


def test_unmarked_policy_default_and_env(monkeypatch):
    monkeypatch.delenv("CTI_UNMARKED_TLP", raising=False)
    assert tlp_of(named("PAP", "PAP:RED")) == UNMARKED_TLP == "TLP:CLEAR"
    assert tlp_of(unmarked="TLP:GREEN") == "TLP:GREEN"
    monkeypatch.setenv("CTI_UNMARKED_TLP", "tlp:amber")
    assert tlp_of() == "TLP:AMBER"
    monkeypatch.setenv("CTI_UNMARKED_TLP", "purple")
    with pytest.raises(ValueError, match="CTI_UNMARKED_TLP"):
        tlp_of()


@pytest.mark.parametrize("bad", ["PAP:RED", "TLP:PURPLE", "", None])
def test_unknown_tlp_fails_closed(bad):
    assert not tlp_allows(bad, "TLP:RED")
    assert not tlp_allows("TLP:CLEAR", bad)
    with pytest.raises(ValueError):
        tlp_rank(bad)


@pytest.mark.parametrize("entity_type, value, reason", [
    ("IPv4-Addr", "10.0.0.0/8", "invalid_ipv4: CIDR ranges are not single addresses"),
    ("IPv4-Addr", "1.2.3.4/../../x", "invalid_ipv4: not a dotted quad: 1.2.3.4/../../x"),
    ("IPv6-Addr", "2001:db8::/32", "invalid_ipv6: CIDR ranges are not single addresses"),
    ("IPv6-Addr", "fe80::1%eth0", "invalid_ipv6: zone ids are not supported"),
    ("IPv6-Addr", "::1%eth0/../x", "invalid_ipv6: not an address: ::1%eth0/../x"),
    ("IPv6-Addr", "2a00:1450:4001::1%a b", "invalid_ipv6: not an address: 2a00:1450:4001::1%a b"),
    ("IPv6-Addr", "2a00:1450:4001::1%a:b", "invalid_ipv6: not an address: 2a00:1450:4001::1%a:b"),
    ("IPv6-Addr", "2a00:1450:4001::1%?x=1",
     "invalid_ipv6: not an address: 2a00:1450:4001::1%?x=1"),
    ("IPv6-Addr", "2a00:1450:4001::1%", "invalid_ipv6: not an address: 2a00:1450:4001::1%"),
])
def test_a_rejection_names_what_is_wrong_not_a_lookalike(entity_type, value, reason):
    """A path after an address is not a CIDR range, nor a zone id."""
    assert normalize(entity_type, value).reason == reason
