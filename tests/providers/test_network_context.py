"""Tests of the offline network_context provider: ranges, names, PSL, IDN, features, frame."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import socket
from datetime import UTC, datetime

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti_assets.providers import network_context as nc
from cti_assets.providers.fields import PROVIDER_FIELDS, PROVIDER_SCOPE
from cti_assets.tables import LOOKUP_COLUMNS, OBSERVABLE_COLUMNS

FIELDS = set(PROVIDER_FIELDS["network_context"])
URL_FIELDS = {"url_host_is_ip", "url_path_depth", "url_has_credentials", "url_nonstandard_port"}
NAME_FIELDS = {
    "label_bigram_score",
    "registrable_domain",
    "public_suffix",
    "is_idn",
    "punycode",
    "has_confusables",
    "label_entropy",
    "label_length",
}


@pytest.mark.parametrize(
    ("address", "range_name"),
    [
        ("0.1.2.3", "this-network"),
        ("10.1.2.3", "private-use"),
        ("172.16.0.1", "private-use"),
        ("172.31.255.255", "private-use"),
        ("172.32.0.1", None),
        ("192.168.10.20", "private-use"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("100.128.0.1", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "link-local"),
        ("192.0.0.8", "ietf-protocol-assignments"),
        ("192.0.0.9", None),
        ("192.0.2.5", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("198.20.0.1", None),
        ("192.88.99.1", "6to4-relay-anycast"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("233.252.0.7", "documentation"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.254", "reserved"),
        ("255.255.255.255", "limited-broadcast"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("185.220.101.4", None),
    ],
)
def test_ipv4_ranges(address, range_name):
    fields = nc.analyse("IPv4-Addr", address)
    assert fields["range_name"] == range_name
    assert fields["is_special_use"] is (range_name is not None)
    assert nc.special_use_reason("IPv4-Addr", address) == range_name


@pytest.mark.parametrize(
    ("address", "range_name"),
    [
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:808:808", "ipv4-mapped"),
        ("64:ff9b::a00:1", "private-use"),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
        ("64:ff9b:1::1", "local-nat64"),
        ("100::1", "discard-only"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
        ("2001:2::1", "benchmarking"),
        ("2001:4:112::1", None),
        ("2001:1::1", None),
        ("2001:5::1", "ietf-protocol-assignments"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("2002:c000:204::1", "6to4"),
        ("5f00::1", "srv6-sid"),
        ("fd12:3456::1", "unique-local"),
        ("fc00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local-deprecated"),
        ("ff02::1", "multicast"),
        ("4000::1", "reserved"),
        ("2606:4700:4700::1111", None),
        ("2a00:1450:4001::200e", None),
    ],
)
def test_ipv6_ranges(address, range_name):
    assert nc.analyse("IPv6-Addr", address)["range_name"] == range_name
    assert nc.special_use_reason("IPv6-Addr", address) == range_name


@pytest.mark.parametrize(
    ("cidr", "range_name"),
    [("10.0.0.0/8", "private-use"), ("192.168.1.0/24", "private-use"), ("10.0.0.0/7", None)],
)
def test_cidr_is_special_only_when_wholly_inside_a_range(cidr, range_name):
    assert nc.special_use_reason("IPv4-Addr", cidr) == range_name


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_everything_the_stdlib_calls_non_global_is_flagged(address):
    # IANA made global exceptions inside 2001::/23 that older stdlib tables lack.
    if address.version == 6 and address in ipaddress.ip_network("2001::/23"):
        return
    if not address.is_global:
        assert nc.special_use_reason(f"IPv{address.version}-Addr", str(address)) is not None


@pytest.mark.parametrize(
    ("name", "range_name"),
    [
        ("localhost", ".localhost"),
        ("app.localhost", ".localhost"),
        ("printer.local", ".local"),
        ("unit.test", ".test"),
        ("www.example", ".example"),
        ("example.com", ".example.com"),
        ("www.example.net", ".example.net"),
        ("mail.example.org", ".example.org"),
        ("bad.invalid", ".invalid"),
        ("duskgytldkxiuqc6.onion", ".onion"),
        ("router.home.arpa", ".home.arpa"),
        ("1.0.168.192.in-addr.arpa", ".in-addr.arpa"),
        ("ipv4only.arpa", ".ipv4only.arpa"),
        ("db.internal", ".internal"),
        ("thing.alt", ".alt"),
        ("dc01.corp", ".corp"),
        ("nas.lan", ".lan"),
    ],
)
def test_special_use_domains(name, range_name):
    for entity_type in ("Domain-Name", "Hostname"):
        fields = nc.analyse(entity_type, name)
        assert fields["range_name"] == range_name
        assert fields["is_special_use"] is True
        assert nc.special_use_reason(entity_type, name) == f"special-use-domain:{range_name}"


@pytest.mark.parametrize(
    "name", ["notexample.com", "example.co.uk", "mylocal.com", "localhost.com", "test.com", "com"]
)
def test_lookalikes_of_special_names_are_public(name):
    assert nc.special_use_reason("Domain-Name", name) is None
    assert nc.analyse("Domain-Name", name)["is_special_use"] is False


@pytest.mark.parametrize("name", ["wpad", "fileserver", "dc1.acme-internal-zone"])
def test_names_outside_the_public_suffix_list_are_internal(name):
    assert nc.special_use_reason("Hostname", name) == nc.NON_PUBLIC_TLD
    assert nc.analyse("Hostname", name)["range_name"] == nc.NON_PUBLIC_TLD


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/admin", "private-use"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://[::1]:8080/", "loopback"),
        ("https://printer.local:631/jobs", "special-use-domain:.local"),
        ("http://localhost:3000/", "special-use-domain:.localhost"),
        ("http://0x7f.1/", "loopback"),  # legacy forms browsers read as 127.0.0.1
        ("http://2130706433/", "loopback"),
        ("http://intranet-portal/login", nc.NON_PUBLIC_TLD),
        ("https://evil-login.com/x", None),
        ("http://8.8.8.8/", None),
        ("file:///etc/passwd", None),
    ],
)
def test_url_is_judged_by_its_host(url, reason):
    assert nc.special_use_reason("Url", url) == reason


@pytest.mark.parametrize(
    ("entity_type", "value"),
    [("StixFile", "d41d8cd98f00b204e9800998ecf8427e"), ("Email-Addr", "a@10.0.0.1"), ("Url", "")],
)
def test_special_use_reason_is_none_where_not_applicable(entity_type, value):
    assert nc.special_use_reason(entity_type, value) is None
    assert nc.special_use_reason(entity_type, None) is None


@pytest.mark.parametrize(
    ("host", "registrable", "suffix"),
    [
        ("www.bbc.co.uk", "bbc.co.uk", "co.uk"),
        ("forums.news.cnn.com", "cnn.com", "com"),
        ("shop.evil.com.br", "evil.com.br", "com.br"),
        ("a.b.evil.github.io", "evil.github.io", "github.io"),  # private suffix included
        ("phish.blogspot.com", "phish.blogspot.com", "blogspot.com"),
        ("xn--e1afmkfd.xn--p1ai", "xn--e1afmkfd.xn--p1ai", "xn--p1ai"),
        ("co.uk", None, "co.uk"),
    ],
)
def test_public_suffix_and_registrable_domain(host, registrable, suffix):
    fields = nc.analyse("Domain-Name", host)
    assert (fields["registrable_domain"], fields["public_suffix"]) == (registrable, suffix)
    url_fields = nc.analyse("Url", f"https://{host}/")
    assert (url_fields["registrable_domain"], url_fields["public_suffix"]) == (registrable, suffix)


@pytest.mark.parametrize(
    ("name", "is_idn", "confusable"),
    [
        ("xn--pple-43d.com", True, True),  # Cyrillic а + Latin pple
        ("xn--80ak6aa92e.com", True, True),  # all-Cyrillic look-alike of "apple"
        ("login.xn--pple-43d.evil.com", True, True),  # confusable in a subdomain
        ("xn--mnchen-3ya.de", True, False),  # münchen: Latin with diacritic
        ("xn--e1afmkfd.xn--p1ai", True, False),  # пример.рф: ordinary Cyrillic
        ("apple.com", False, False),
    ],
)
def test_idn_and_confusables(name, is_idn, confusable):
    fields = nc.analyse("Domain-Name", name)
    assert fields["is_idn"] is is_idn
    assert fields["has_confusables"] is confusable
    assert fields["punycode"] == (name if is_idn else None)


def test_idn_label_features_use_the_unicode_form():
    label = "xn--pple-43d".removeprefix("xn--").encode("ascii").decode("punycode")
    fields = nc.analyse("Domain-Name", "xn--pple-43d.com")
    assert fields["label_length"] == len(label) == 5
    assert fields["label_entropy"] == pytest.approx(nc.shannon_entropy(label), abs=1e-6)


def test_entropy_of_random_label_exceeds_dictionary_word():
    random_like = nc.analyse("Domain-Name", "kq3x9zt7vw1pj.com")["label_entropy"]
    word = nc.analyse("Domain-Name", "microsoft.com")["label_entropy"]
    assert random_like > word > 0


def test_entropy_and_length_come_from_the_longest_non_suffix_label():
    fields = nc.analyse("Hostname", "a.bbc.co.uk")
    expected = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert fields["label_length"] == 3
    assert fields["label_entropy"] == pytest.approx(expected, abs=1e-6)
    assert nc.analyse("Domain-Name", "aaaa.com")["label_entropy"] == 0.0
    assert nc.analyse("Domain-Name", "com")["label_entropy"] is None


@pytest.mark.parametrize(
    ("url", "host_is_ip", "depth", "credentials", "nonstandard_port"),
    [
        ("http://user:pw@evil.com/a/b/c?q=1", False, 3, True, False),
        ("http://evil.com@1.2.3.4/x/", True, 1, True, False),
        ("http://evil.com:8080/", False, 0, False, True),
        ("https://evil.com:443/login", False, 1, False, False),
        ("http://evil.com:443/", False, 0, False, True),
        ("http://evil.com:99999/", False, 0, False, True),
        ("http://evil.com", False, 0, False, False),
        ("http://[2606:4700::1]:80/a//b", True, 2, False, False),
    ],
)
def test_url_features(url, host_is_ip, depth, credentials, nonstandard_port):
    fields = nc.analyse("Url", url)
    assert fields["url_host_is_ip"] is host_is_ip
    assert fields["url_path_depth"] == depth
    assert fields["url_has_credentials"] is credentials
    assert fields["url_nonstandard_port"] is nonstandard_port


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [("md5", "MD5"), ("sha1", "SHA-1"), ("sha256", "SHA-256"), ("sha512", "SHA-512")],
)
def test_hash_type_from_length(algorithm, expected):
    digest = hashlib.new(algorithm, b"sample").hexdigest()
    assert nc.analyse("StixFile", digest)["hash_type"] == expected
    assert nc.analyse("StixFile", digest.upper())["hash_type"] == expected


def test_hash_type_falls_back_to_the_declared_type():
    assert nc.analyse("StixFile", "3:abc:def", "SSDEEP")["hash_type"] == "SSDEEP"
    assert nc.analyse("StixFile", "z" * 32)["hash_type"] is None


@pytest.mark.parametrize(
    ("entity_type", "value", "applicable"),
    [
        ("IPv4-Addr", "8.8.8.8", {"is_special_use"}),
        ("Domain-Name", "evil.com", {"is_special_use"} | NAME_FIELDS - {"punycode"}),
        ("Url", "https://evil.com/", {"is_special_use"} | NAME_FIELDS - {"punycode"} | URL_FIELDS),
        ("StixFile", "d41d8cd98f00b204e9800998ecf8427e", {"hash_type"}),
    ],
)
def test_every_field_present_and_none_where_not_applicable(entity_type, value, applicable):
    fields = nc.analyse(entity_type, value)
    assert set(fields) == FIELDS
    assert {key for key, field in fields.items() if field is not None} == applicable


def _observables(rows: list[tuple[str, str | None, str, str | None]]) -> pd.DataFrame:
    records = []
    for index, (entity_type, value, status, reason) in enumerate(rows):
        records.append(
            {
                "internal_id": f"id-{index}",
                "stix_id": f"x-observable--{index:04d}",
                "entity_type": entity_type,
                "value": value,
                "normalized_value": value if status == "ok" else None,
                "hash_type": "MD5" if entity_type == "StixFile" else None,
                "tlp": "TLP:CLEAR",
                "marking_ids": [],
                "labels": [],
                "existing_score": None,
                "created_at": datetime(2024, 5, 1, tzinfo=UTC),
                "status": status,
                "reason": reason,
            }
        )
    return pd.DataFrame(records, columns=list(OBSERVABLE_COLUMNS)).astype(
        {k: v for k, v in OBSERVABLE_COLUMNS.items() if v != "list"}
    )


def test_frame_has_one_row_per_observable_in_order():
    observables = _observables(
        [
            ("IPv4-Addr", "10.0.0.1", "ok", None),
            ("Domain-Name", "xn--pple-43d.com", "ok", None),
            ("Url", "not a url at all", "rejected", "unparsable URL"),
            ("StixFile", "d41d8cd98f00b204e9800998ecf8427e", "ok", None),
            ("Email-Addr", "a@b.com", "ok", None),
            ("IPv4-Addr", "not-an-ip", "ok", None),
            ("Url", "http://user@evil.com:8443/a/b", "ok", None),
            ("Email-Addr", "b@c.com", "skipped", "out_of_scope"),
        ]
    )
    frame = nc.network_context_frame(observables)

    assert list(frame.columns) == list(LOOKUP_COLUMNS)
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == LOOKUP_COLUMNS
    assert frame["stix_id"].tolist() == observables["stix_id"].tolist()
    assert set(frame["provider"]) == {"network_context"}
    assert frame["status"].tolist() == [
        "ok", "ok", "skipped", "ok", "skipped", "error", "ok", "skipped"
    ]
    assert frame["reason"].tolist()[2] == "rejected"
    assert "unparsable URL" in frame["message"].tolist()[2]
    assert frame["reason"].tolist()[4] == "out_of_scope"
    assert frame["reason"].tolist()[5] == "malformed"
    assert frame["reason"].tolist()[7] == "out_of_scope"
    assert frame["message"].tolist()[7] == "observable skipped: out_of_scope"
    assert frame["fetched_at"].isna().all()
    assert frame["latency_ms"].isna().all()
    assert not frame["from_cache"].any()

    for _, row in frame[frame["status"] == "ok"].iterrows():
        fields = json.loads(row["fields"])
        hash_type = "MD5" if row["entity_type"] == "StixFile" else None
        assert fields == nc.analyse(row["entity_type"], row["normalized_value"], hash_type)
        assert row["fields"] == json.dumps(fields, sort_keys=True)
        assert row["raw_digest"] == hashlib.sha256(row["fields"].encode()).hexdigest()
    assert frame[frame["status"] != "ok"]["fields"].isna().all()


def test_frame_of_no_observables_is_empty_with_the_contract_columns():
    frame = nc.network_context_frame(_observables([]))
    assert frame.empty
    assert list(frame.columns) == list(LOOKUP_COLUMNS)


def test_frame_names_missing_columns():
    with pytest.raises(ValueError, match="normalized_value"):
        nc.network_context_frame(pd.DataFrame({"stix_id": ["x"], "entity_type": ["Url"]}))


def test_no_socket_is_opened(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network_context must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for cached in (nc._extractor, nc._judge_host, nc._name_fields, nc._canonical):
        cached.cache_clear()  # build the PSL extractor and compute everything under the patch

    observables = _observables(
        [
            ("Domain-Name", "www.some-new-name.co.uk", "ok", None),
            ("Hostname", "printer.local", "ok", None),
            ("Url", "https://a.b.evil.github.io:8443/x", "ok", None),
            ("IPv6-Addr", "2001:db8::1", "ok", None),
        ]
    )
    frame = nc.network_context_frame(observables)
    assert (frame["status"] == "ok").all()
    assert nc.analyse("Domain-Name", "another.example-name.com")["registrable_domain"] == (
        "example-name.com"
    )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


ENTITY_TYPES = st.sampled_from([*PROVIDER_SCOPE["network_context"], "Email-Addr", ""])
VALUES = st.one_of(
    st.text(),
    st.text().map(lambda text: "http://" + text),
    st.text(alphabet="0123456789abcdefx.:/%[]@-", max_size=40),
    st.builds(lambda a, b: f"{a}.{b}", st.text(max_size=20), st.text(max_size=10)),
)


@settings(max_examples=400, deadline=None)
@given(entity_type=ENTITY_TYPES, value=VALUES, hash_type=st.none() | st.text(max_size=8))
def test_analyse_answers_for_any_string_without_falling_back(entity_type, value, hash_type):
    records = _Records()
    nc.log.addHandler(records)
    try:
        fields = nc.analyse(entity_type, value, hash_type)
        nc.special_use_reason(entity_type, value)
    finally:
        nc.log.removeHandler(records)
    assert set(fields) == FIELDS
    assert records.records == []  # the never-raise safety net was not needed
    json.dumps(fields, allow_nan=False)


def test_oversized_hostile_names_are_still_judged():
    assert nc.analyse("Hostname", "a." * 20000 + "local")["range_name"] == ".local"
    fields = nc.analyse("Url", "http://" + "b." * 20000 + "com/" + "x/" * 5000)
    assert (fields["registrable_domain"], fields["url_path_depth"]) == ("b.com", 5000)
