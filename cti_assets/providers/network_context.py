"""Offline network context: special-use ranges and names, public suffix, IDN and lexical features.

Two jobs, both computed locally without any network access. First, the gate every external
provider consults (`special_use_reason`): private, reserved and special-use addresses and
names must never leave the organisation nor spend quota. Second, cheap features the scoring
model reads for every observable (`analyse`): registrable domain, IDN/confusable hints, label
entropy, URL shape and hash type.

Decisions worth knowing:
- IP ranges come from the IANA IPv4/IPv6 special-purpose registries plus bogons (multicast,
  240/4, IPv6 space outside 2000::/3). Blocks IANA marks globally reachable (AS112, AMT,
  192.0.0.9/10, ORCHIDv2, ...) are not special. 6to4 (2002::/16) and Teredo (2001::/32) are
  special: the useful identity is the embedded IPv4, not the tunnel address. An IPv4-mapped
  address is "ipv4-mapped"; a NAT64 well-known-prefix address is judged by its embedded IPv4.
  A CIDR value is special only when it lies wholly inside one special range.
- Special-use names: the IANA special-use domain registry (RFC 6761 .localhost .test .example
  .invalid and example.com/.net/.org, RFC 6762 .local, RFC 7686 .onion, RFC 9476 .alt, RFC 8375
  home.arpa), ICANN's .internal, the non-delegated private TLDs of RFC 6762 appendix G (.intranet
  .private .corp .home .lan) plus .localdomain, and all of .arpa (reverse-DNS and protocol
  infrastructure, never an actor's domain). A name whose TLD is not in the public suffix list
  is "non-public-tld": it can only be an internal name.
- The public suffix list is tldextract's bundled snapshot, never fetched. Private suffixes
  (github.io, blogspot.com, duckdns.org) count as suffixes, so `evil.github.io` is its own
  registrable domain: the actor controls that name, not github.io.
- Lexical name features (bigram score, lookalike of a popular name) come from `names`.
- Entropy and length are computed on the longest label outside the public suffix, decoded to
  its Unicode form when it is an IDN A-label.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import ipaddress
import json
import logging
import math
import re
import socket
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import tldextract
from confusable_homoglyphs import confusables

from cti_assets.intake.observable import HASH_TYPES_BY_LENGTH
from cti_assets.providers import names
from cti_assets.providers.base import (
    ERR_MALFORMED,
    ERROR,
    NETWORK_CONTEXT,
    OK,
    SKIP_OUT_OF_SCOPE,
    SKIP_REJECTED,
    SKIPPED,
)
from cti_assets.providers.fields import PROVIDER_FIELDS, PROVIDER_SCOPE
from cti_assets.tables import LOOKUP_COLUMNS, OBSERVABLE_OK, OBSERVABLE_SKIPPED

log = logging.getLogger(__name__)

FIELD_NAMES: tuple[str, ...] = tuple(PROVIDER_FIELDS[NETWORK_CONTEXT])
SCOPE = frozenset(PROVIDER_SCOPE[NETWORK_CONTEXT])
IP_TYPES = frozenset({"IPv4-Addr", "IPv6-Addr"})
NAME_TYPES = frozenset({"Domain-Name", "Hostname"})
NON_PUBLIC_TLD = "non-public-tld"
_CACHE_SIZE = 1 << 17

# (network, range name); None marks space that is globally reachable. Longest prefix wins.
_IPV4_RANGES: tuple[tuple[str, str | None], ...] = (
    ("0.0.0.0/0", None),
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private-use"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private-use"),
    ("192.0.0.0/24", "ietf-protocol-assignments"),
    ("192.0.0.9/32", None),  # PCP anycast, globally reachable
    ("192.0.0.10/32", None),  # TURN anycast, globally reachable
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay-anycast"),
    ("192.168.0.0/16", "private-use"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("233.252.0.0/24", "documentation"),  # MCAST-TEST-NET
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited-broadcast"),
)
_IPV6_RANGES: tuple[tuple[str, str | None], ...] = (
    ("::/0", "reserved"),  # outside 2000::/3 and the blocks below: unallocated (bogon)
    ("2000::/3", None),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "ipv4-mapped"),
    ("64:ff9b::/96", None),  # NAT64 well-known prefix: judged by the embedded IPv4
    ("64:ff9b:1::/48", "local-nat64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy-prefix"),
    ("2001::/23", "ietf-protocol-assignments"),
    ("2001::/32", "teredo"),
    ("2001:1::1/128", None),  # PCP anycast
    ("2001:1::2/128", None),  # TURN anycast
    ("2001:1::3/128", None),  # DNS-SD SRP anycast
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", None),  # AMT
    ("2001:4:112::/48", None),  # AS112-v6
    ("2001:10::/28", "orchid-deprecated"),
    ("2001:20::/28", None),  # ORCHIDv2
    ("2001:30::/28", None),  # drone remote ID
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "srv6-sid"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local-deprecated"),
    ("ff00::/8", "multicast"),
)
_NAT64 = int(ipaddress.IPv6Address("64:ff9b::")) >> 32

SPECIAL_USE_DOMAINS: frozenset[str] = frozenset(
    {
        "localhost", "test", "example", "invalid", "example.com", "example.net", "example.org",
        "local", "onion", "alt", "internal", "intranet", "private", "corp", "home", "lan",
        "localdomain", "arpa", "home.arpa", "in-addr.arpa", "ip6.arpa", "ipv4only.arpa",
        "resolver.arpa", "service.arpa", "6tisch.arpa",
    }
)  # fmt: skip

_SPECIAL_MAX_LABELS = max(name.count(".") + 1 for name in SPECIAL_USE_DOMAINS)

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ws": 80, "wss": 443}
_LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")
_HEX = re.compile(r"[0-9a-f]+")
_IP_CHARS = frozenset("0123456789abcdefx.:/")
_MAX_LABEL = 63


def _compile(table: tuple[tuple[str, str | None], ...]) -> tuple[tuple[int, int, int, Any], ...]:
    networks = [(ipaddress.ip_network(cidr), name) for cidr, name in table]
    networks.sort(key=lambda item: item[0].prefixlen, reverse=True)
    return tuple(
        (int(net.network_address), int(net.netmask), net.prefixlen, name) for net, name in networks
    )


_COMPILED = {4: _compile(_IPV4_RANGES), 6: _compile(_IPV6_RANGES)}


def _range_of(version: int, address: int, prefixlen: int) -> str | None:
    """Name of the special range wholly containing the network; NAT64 judged by its IPv4."""
    for net, mask, range_prefixlen, name in _COMPILED[version]:
        if range_prefixlen <= prefixlen and address & mask == net:
            if name is None and version == 6 and prefixlen == 128 and address >> 32 == _NAT64:
                return _range_of(4, address & 0xFFFFFFFF, 32)
            return name
    return None


def parse_ip(text: str) -> tuple[int, int, int] | None:
    """(version, address as int, prefix length) of an address or CIDR, else None.

    Also reads the legacy IPv4 forms browsers accept ("0x7f.1", "2130706433").
    """
    text = text.partition("%")[0]  # an IPv6 zone id names a local interface, not the address
    if not _IP_CHARS.issuperset(text):
        return None
    try:
        if "/" not in text:  # ip_address is several times cheaper than ip_network
            address = ipaddress.ip_address(text)
            return address.version, int(address), address.max_prefixlen
        network = ipaddress.ip_network(text, strict=False)
        return network.version, int(network.network_address), network.prefixlen
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(text):
        try:  # inet_aton only parses text; it opens no socket
            return 4, int.from_bytes(socket.inet_aton(text), "big"), 32
        except OSError:
            return None
    return None


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    # No URLs and no cache dir: tldextract falls back to the PSL snapshot inside its package.
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
    )


def special_domain(host: str) -> str | None:
    """The most specific special-use name `host` falls under, with a leading dot."""
    labels = host.rsplit(".", _SPECIAL_MAX_LABELS)[-_SPECIAL_MAX_LABELS:]
    for start in range(len(labels)):
        suffix = ".".join(labels[start:])
        if suffix in SPECIAL_USE_DOMAINS:
            return "." + suffix
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _judge_host(host: str) -> tuple[bool, str | None, str | None]:
    """(host is an IP, range name, special-use reason) of an address or DNS name."""
    parsed = parse_ip(host)
    if parsed is not None:
        name = _range_of(*parsed)
        return True, name, name
    special = special_domain(host)
    if special is not None:
        return False, special, f"special-use-domain:{special}"
    if not _extractor()(_to_ascii_host(host)).suffix:
        return False, NON_PUBLIC_TLD, NON_PUBLIC_TLD
    return False, None, None


def _clean_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _url_host(url: str) -> str | None:
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return _clean_host(host) if host else None


def special_use_reason(entity_type: str, normalized_value: str) -> str | None:
    """Why the value must not be sent to external providers; None when it may be.

    Judges addresses, names and a Url's host; e.g. "private-use", "loopback",
    "special-use-domain:.local", "non-public-tld". Never raises.
    """
    try:
        if not isinstance(normalized_value, str) or entity_type not in SCOPE:
            return None
        if entity_type == "Url":
            host = _url_host(normalized_value)
        elif entity_type in IP_TYPES or entity_type in NAME_TYPES:
            host = _clean_host(normalized_value)
        else:
            return None
        return _judge_host(host)[2] if host else None
    except Exception:  # the gate must answer for any hostile value
        log.warning("special_use_reason failed for a %s value", entity_type, exc_info=True)
        return None


def _to_unicode(label: str) -> str:
    if label.startswith("xn--") and len(label) <= _MAX_LABEL:
        try:
            return codecs.decode(label[4:].encode("ascii"), "punycode")
        except (UnicodeError, ValueError):
            return label
    return label


def _to_ascii_label(label: str) -> str:
    if label.isascii():
        return label
    try:
        return "xn--" + label.encode("punycode").decode("ascii")
    except UnicodeError:
        return label


def _to_ascii_host(host: str) -> str:
    return host if host.isascii() else ".".join(_to_ascii_label(lab) for lab in host.split("."))


def shannon_entropy(text: str) -> float:
    """Shannon entropy of the characters of `text`, in bits per character."""
    if not text:
        return 0.0
    total = len(text)
    return 0.0 - sum(n / total * math.log2(n / total) for n in Counter(text).values())


@functools.lru_cache(maxsize=_CACHE_SIZE)
def label_has_confusables(label: str) -> bool:
    """A Unicode label mixing Latin with look-alikes, or made only of Latin look-alikes."""
    if label.isascii():
        return False
    found = confusables.is_confusable(label, greedy=True, preferred_aliases=["latin"]) or []
    lookalikes = {item["character"] for item in found}
    if not lookalikes:
        return False
    letters = {char for char in label if char not in "-0123456789"}
    has_latin = any("a" <= char <= "z" for char in label)
    return has_latin or letters <= lookalikes


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _name_fields(host: str) -> tuple[tuple[str, Any], ...]:
    """Suffix, IDN and lexical fields of a DNS name, as items (cached, so immutable)."""
    ascii_host = _to_ascii_host(host)
    extracted = _extractor()(ascii_host)
    labels = [label for label in ascii_host.split(".") if label]
    suffix_labels = len(extracted.suffix.split(".")) if extracted.suffix else 0
    own_labels = [_to_unicode(label) for label in labels[: len(labels) - suffix_labels]]
    is_idn = any(label.startswith("xn--") for label in labels)
    longest = max(reversed(own_labels), key=len, default="")  # ties: nearest the suffix
    return (
        ("registrable_domain", extracted.top_domain_under_public_suffix or None),
        ("public_suffix", extracted.suffix or None),
        ("is_idn", is_idn),
        ("punycode", ascii_host if is_idn else None),
        ("has_confusables", any(label_has_confusables(label) for label in own_labels)),
        ("label_entropy", round(shannon_entropy(longest), 6) if longest else None),
        ("label_length", len(longest) if longest else None),
        ("label_bigram_score", names.bigram_score(longest) if longest else None),
        ("lookalike_of", names.lookalike_of(extracted.domain,
                                            extracted.top_domain_under_public_suffix)),
    )


def _host_fields(host: str) -> dict[str, Any]:
    is_ip, range_name, reason = _judge_host(host)
    fields: dict[str, Any] = {"is_special_use": reason is not None, "range_name": range_name}
    if not is_ip:
        fields.update(_name_fields(host))
    return fields


def _url_fields(url: str) -> tuple[dict[str, Any], str | None]:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return {}, "not a parsable URL"
    try:
        port = parts.port
    except ValueError:
        port = -1  # present but not a valid port: certainly not the scheme default
    fields: dict[str, Any] = {
        "url_path_depth": sum(1 for segment in parts.path.split("/") if segment),
        "url_has_credentials": "@" in parts.netloc,
        "url_nonstandard_port": port is not None and port != DEFAULT_PORTS.get(parts.scheme),
    }
    host = _clean_host(host) if host else ""
    if not host:
        return fields, None
    fields.update(_host_fields(host))
    fields["url_host_is_ip"] = _judge_host(host)[0]
    return fields, None


def hash_type_of(value: str, declared: str | None = None) -> str | None:
    """MD5, SHA-1 or SHA-256 from a hex digest's length (intake's table); else the declared
    type."""
    if _HEX.fullmatch(value) and len(value) in HASH_TYPES_BY_LENGTH:
        return HASH_TYPES_BY_LENGTH[len(value)]
    return declared or None


def _analyse(
    entity_type: str, value: str | None, hash_type: str | None
) -> tuple[dict[str, Any], str | None]:
    """The fields and, when the value cannot be read as its type, why."""
    fields: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    if not isinstance(value, str) or not value.strip():
        return fields, "no normalised value"
    if entity_type in IP_TYPES:
        host = _clean_host(value)
        if not _judge_host(host)[0]:
            return fields, f"not an IP address ({entity_type})"
        fields.update(_host_fields(host))
    elif entity_type in NAME_TYPES:
        fields.update(_host_fields(_clean_host(value)))
    elif entity_type == "Url":
        url_fields, problem = _url_fields(value)
        fields.update(url_fields)
        return fields, problem
    elif entity_type == "StixFile":
        fields["hash_type"] = hash_type_of(value.strip().lower(), hash_type)
    else:
        return fields, f"entity type {entity_type!r} is outside network_context's scope"
    return fields, None


def analyse(entity_type: str, normalized_value: str | None, hash_type: str | None = None) -> dict:
    """The network_context fields (PROVIDER_FIELDS["network_context"]) of one observable.

    Every key is present; a field that does not apply to the type is None. Never raises.
    """
    try:
        return _analyse(entity_type, normalized_value, hash_type)[0]
    except Exception:  # hostile input must never break a partition
        log.warning("network_context analysis failed for a %s value", entity_type, exc_info=True)
        return dict.fromkeys(FIELD_NAMES)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _canonical(entity_type: str, value: str, hash_type: str | None) -> tuple[str, str | None]:
    """(canonical fields JSON, problem) for a value, cached across rows."""
    try:
        fields, problem = _analyse(entity_type, value, hash_type)
    except Exception:
        log.warning("network_context analysis failed for a %s value", entity_type, exc_info=True)
        fields, problem = dict.fromkeys(FIELD_NAMES), "analysis failed"
    return json.dumps(fields, sort_keys=True), problem


def _text(value: Any) -> str | None:
    """A cell as str, or None for any flavour of missing (None, pd.NA, NaN)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


_REQUIRED_COLUMNS = ("stix_id", "entity_type", "normalized_value", "hash_type", "status", "reason")


def network_context_frame(observables: pd.DataFrame) -> pd.DataFrame:
    """One `network_context_lookups` row (frames.LOOKUP_COLUMNS) per observable, same order."""
    missing = [name for name in _REQUIRED_COLUMNS if name not in observables.columns]
    if missing:
        raise ValueError(f"observables frame lacks columns {missing}")
    rows = []
    columns = [observables[name].tolist() for name in _REQUIRED_COLUMNS]
    for stix_id, raw_type, raw_value, hash_type, obs_status, obs_reason in zip(
        *columns, strict=True
    ):
        entity_type, value = _text(raw_type), _text(raw_value)
        row: dict[str, Any] = dict.fromkeys(LOOKUP_COLUMNS)
        row.update(
            stix_id=_text(stix_id),
            entity_type=entity_type,
            normalized_value=value,
            provider=NETWORK_CONTEXT,
            from_cache=False,
        )
        if _text(obs_status) == OBSERVABLE_SKIPPED:
            detail = _text(obs_reason) or "type not looked up"
            row.update(status=SKIPPED, reason=SKIP_OUT_OF_SCOPE,
                       message=f"observable skipped: {detail}")
        elif _text(obs_status) != OBSERVABLE_OK or value is None:
            detail = _text(obs_reason) or "no normalised value"
            row.update(status=SKIPPED, reason=SKIP_REJECTED, message=f"rejected: {detail}")
        elif entity_type not in SCOPE:
            row.update(status=SKIPPED, reason=SKIP_OUT_OF_SCOPE)
        else:
            fields_json, problem = _canonical(entity_type, value, _text(hash_type))
            if problem is None:
                digest = hashlib.sha256(fields_json.encode("utf-8")).hexdigest()
                row.update(status=OK, fields=fields_json, raw_digest=digest)
            else:
                row.update(status=ERROR, reason=ERR_MALFORMED, message=problem)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(LOOKUP_COLUMNS)).astype(LOOKUP_COLUMNS)
