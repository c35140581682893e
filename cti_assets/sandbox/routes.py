"""Per-provider request handling: which path means which lookup, where the key travels, what
counts as bad input, and which body answers it (providers.md §1-5 and the §7 table).

The server owns the state (keys, limits, faults); these functions only read a request and a
`Facts` and say what the real API would answer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cti_assets.sandbox import community, data
from cti_assets.sandbox.faults import (
    ABUSEIPDB,
    CROWDSEC,
    GREYNOISE,
    INTERNETDB,
    MALWAREBAZAAR,
    OTX,
    SECURITYTRAILS,
    SHODAN,
    THREATFOX,
    URLHAUS,
    VIRUSTOTAL,
    Reply,
    bad_input,
    json_reply,
    not_found,
)

# URL prefix of each provider in the sandbox -> provider name.
PREFIXES = {
    "virustotal": VIRUSTOTAL,
    "shodan": SHODAN,
    "internetdb": INTERNETDB,
    "abuseipdb": ABUSEIPDB,
    "greynoise": GREYNOISE,
    "securitytrails": SECURITYTRAILS,
    "urlhaus": URLHAUS,
    "threatfox": THREATFOX,
    "malwarebazaar": MALWAREBAZAAR,
    "otx": OTX,
    "crowdsec": CROWDSEC,
}
_OTX_TYPES = ("IPv4", "IPv6", "domain", "hostname", "url", "file")
_URLHAUS_ENDPOINTS = {"url": ("uh_url", "url"), "host": ("uh_host", "host")}
_VT_COLLECTIONS = {
    "ip_addresses": ("vt_ip", "IP address"),
    "domains": ("vt_domain", "Domain"),
    "urls": ("vt_url", "URL"),
    "files": ("vt_file", "File"),
}
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}$"
)
_HASH = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Call:
    """One parsed provider request."""

    provider: str
    kind: str
    observable: str | None
    key: str | None  # the key the client presented, if any
    key_required: bool = True
    options: dict[str, object] = field(default_factory=dict)

    @property
    def community(self) -> bool:
        return self.kind == "gn_community"


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def parse(
    provider: str, segments: list[str], query: dict[str, list[str]], headers: dict[str, str]
) -> Call | Reply:
    """Map decoded path segments (after the provider prefix) to a Call, or a 404 Reply."""
    if provider == VIRUSTOTAL:
        if len(segments) == 4 and segments[:2] == ["api", "v3"] and segments[2] in _VT_COLLECTIONS:
            kind, _ = _VT_COLLECTIONS[segments[2]]
            return Call(provider, kind, segments[3], headers.get("x-apikey"))
    elif provider == SHODAN:
        if len(segments) == 3 and segments[:2] == ["shodan", "host"]:
            minify = (_first(query, "minify") or "").lower() == "true"
            return Call(provider, "shodan_host", segments[2], _first(query, "key"),
                        options={"minify": minify})  # fmt: skip
    elif provider == INTERNETDB:
        if len(segments) == 1 and segments[0]:
            return Call(provider, "internetdb", segments[0], None, key_required=False)
    elif provider == ABUSEIPDB:
        if segments == ["api", "v2", "check"]:
            key = headers.get("key") or _first(query, "key")
            verbose = "verbose" in query and (_first(query, "verbose") or "true") != "false"
            return Call(provider, "abuse_check", _first(query, "ipAddress"), key,
                        options={"verbose": verbose,
                                 "max_age": _first(query, "maxAgeInDays")})  # fmt: skip
    elif provider == GREYNOISE:
        if len(segments) == 3 and segments[:2] == ["v3", "community"]:
            return Call(provider, "gn_community", segments[2], headers.get("key"),
                        key_required=False)  # fmt: skip
        if len(segments) == 3 and segments[:2] == ["v3", "ip"]:
            quick = (_first(query, "quick") or "").lower() == "true"
            return Call(provider, "gn_v3_ip", segments[2], headers.get("key"),
                        options={"quick": quick})  # fmt: skip
    elif provider == SECURITYTRAILS:
        key = headers.get("apikey") or _first(query, "apikey")
        if len(segments) == 3 and segments[:2] == ["v1", "domain"]:
            return Call(provider, "st_domain", segments[2], key)
        if segments in (["v1", "ping"], ["v1", "account", "usage"]):
            return Call(provider, f"st_{segments[-1]}", None, key)
    else:
        return _parse_community(provider, segments, query, headers)
    return not_found(provider)


def _parse_community(provider: str, segments: list[str], query: dict[str, list[str]],
                     headers: dict[str, str]) -> Call | Reply:
    """URLhaus, ThreatFox, MalwareBazaar (POST: the body's fields arrive in `query`), OTX and
    CrowdSec."""
    path = [s for s in segments if s]  # "/v1/url/" ends with an empty segment
    if provider == URLHAUS and len(path) == 2 and path[0] == "v1":
        key = headers.get("auth-key")
        if path[1] in _URLHAUS_ENDPOINTS:
            kind, name = _URLHAUS_ENDPOINTS[path[1]]
            return Call(provider, kind, _first(query, name) or "", key)
        if path[1] == "payload":
            value = _first(query, "sha256_hash") or _first(query, "md5_hash") or ""
            return Call(provider, "uh_payload", value, key,
                        options={"md5": "md5_hash" in query})
    if provider in (THREATFOX, MALWAREBAZAAR) and path == ["api", "v1"]:
        key = headers.get("auth-key")
        selector = _first(query, "query") or ""
        if provider == THREATFOX:
            return Call(provider, "tf_search", _first(query, "search_term") or "", key,
                        options={"query": selector,
                                 "exact": (_first(query, "exact_match") or "").lower() == "true"})
        return Call(provider, "mb_info", _first(query, "hash") or "", key,
                    options={"query": selector})
    if provider == OTX and len(path) == 6 and path[:3] == ["api", "v1", "indicators"]:
        if path[3] in _OTX_TYPES and path[5] == "general":
            return Call(provider, "otx_general", path[4], headers.get("x-otx-api-key"),
                        options={"section_type": path[3]})
    if provider == CROWDSEC and len(path) == 3 and path[:2] == ["v2", "smoke"]:
        return Call(provider, "cs_smoke", path[2], headers.get("x-api-key"))
    return not_found(provider)


def validate(call: Call) -> Reply | None:
    """The provider's bad-input answer, or None when the observable is acceptable."""
    value = call.observable or ""
    kind = call.kind
    if kind == "vt_ip" and not data.is_ip(value):
        return bad_input(VIRUSTOTAL, f'"{value}" is not a valid IP address')
    if kind == "vt_domain" and not _HOSTNAME.match(value.lower()):
        return bad_input(VIRUSTOTAL, f'"{value}" is not a valid domain pattern')
    if kind == "vt_file" and not _HASH.match(value.lower()):
        return bad_input(VIRUSTOTAL, f'"{value}" is not a valid resource id')
    if kind in ("shodan_host", "internetdb") and not data.is_ip(value):
        return bad_input(call.provider)
    if kind == "abuse_check":
        return _validate_abuse(call)
    if kind == "gn_community" and not data.is_public_ipv4(value):
        return bad_input(GREYNOISE, "Request is not a valid routable IPv4 address")
    if kind == "gn_v3_ip" and not data.is_ip(value):
        return bad_input(GREYNOISE, "Invalid parameter")
    if kind == "st_domain" and not _HOSTNAME.match(value.lower()):
        return bad_input(SECURITYTRAILS, "Invalid hostname")
    return _validate_community(call)


def _validate_community(call: Call) -> Reply | None:
    value, kind = call.observable or "", call.kind
    if kind == "uh_url" and "://" not in value:
        return bad_input(URLHAUS, "invalid_url" if value else "no_url_provided")
    if kind == "uh_host" and not (data.is_ip(value) or _HOSTNAME.match(value.lower())):
        return bad_input(URLHAUS, "invalid_host")
    if kind == "uh_payload" and len(value) not in (32, 64) or (
            kind == "uh_payload" and not _HASH.match(value.lower())):
        return bad_input(URLHAUS, "invalid_md5" if call.options.get("md5") else "invalid_sha256")
    if kind == "tf_search":
        if call.options.get("query") != "search_ioc":
            return bad_input(THREATFOX, "unknown_query")
        if not value.strip() or len(value) > 2048:
            return bad_input(THREATFOX, "illegal_search_term")
    if kind == "mb_info":
        if call.options.get("query") != "get_info":
            return bad_input(MALWAREBAZAAR, "illegal_query")
        if not value:
            return bad_input(MALWAREBAZAAR, "no_hash_provided")
        if not _HASH.match(value.lower()):
            return bad_input(MALWAREBAZAAR, "illegal_hash")
    if kind == "otx_general" and not _otx_valid(str(call.options["section_type"]), value):
        return bad_input(OTX, f"Invalid {call.options['section_type']} indicator")
    if kind == "cs_smoke" and not data.is_ip(value):
        return bad_input(CROWDSEC, "Invalid IP address")
    return None


def _otx_valid(section_type: str, value: str) -> bool:
    if section_type in ("IPv4", "IPv6"):
        return data.is_ip(value) and (":" in value) == (section_type == "IPv6")
    if section_type in ("domain", "hostname"):
        return bool(_HOSTNAME.match(value.lower()))
    if section_type == "file":
        return bool(_HASH.match(value.lower()))
    return "://" in value


def _validate_abuse(call: Call) -> Reply | None:
    if not call.observable:
        return bad_input(ABUSEIPDB, "The ip address field is required.", "ipAddress")
    if not data.is_ip(call.observable):
        return bad_input(
            ABUSEIPDB,
            "The ip address must be a valid IPv4 or IPv6 address (e.g. 8.8.8.8 or "
            "2001:4860:4860::8888).",
            "ipAddress",
        )
    max_age = call.options.get("max_age")
    if max_age is not None and not (str(max_age).isdigit() and 1 <= int(str(max_age)) <= 365):
        return bad_input(ABUSEIPDB, "The max age in days must be between 1 and 365.",
                         "maxAgeInDays")  # fmt: skip
    return None


def answer(call: Call, facts: data.Facts | None, usage: tuple[int, int] = (0, 0)) -> Reply:
    """The success or not-found answer. `facts` is None only for calls without an observable;
    `usage` is (used, allowed) for SecurityTrails' account/usage endpoint."""
    value = call.observable or ""
    kind = call.kind
    if kind == "st_ping":
        return json_reply(200, {"success": True})
    if kind == "st_usage":
        return json_reply(200, {"current_monthly_usage": usage[0],
                                "allowed_monthly_usage": usage[1]})  # fmt: skip
    assert facts is not None
    missing = facts.profile == data.NOT_FOUND
    if kind.startswith("vt_"):
        return _answer_virustotal(call, facts)
    if kind == "shodan_host":
        if missing or not _is_global(value):
            return not_found(SHODAN, "host")
        return json_reply(200, data.shodan_host(value, facts, bool(call.options.get("minify"))))
    if kind == "internetdb":
        if missing or not _is_global(value):
            return not_found(INTERNETDB, "host")
        return json_reply(200, data.internetdb(value, facts))
    if kind == "abuse_check":
        return json_reply(200, data.abuseipdb_check(value, facts, bool(call.options["verbose"])))
    if kind == "gn_community":
        if missing:
            return json_reply(404, data.greynoise_not_observed(value))
        return json_reply(200, data.greynoise_community(value, facts))
    if kind == "gn_v3_ip":
        if missing or not _is_global(value):
            return not_found(GREYNOISE, "ip")
        return json_reply(200, data.greynoise_v3_ip(value, facts, bool(call.options["quick"])))
    if kind == "st_domain":
        return json_reply(200, data.securitytrails_domain(value.lower(), facts))
    return _answer_community(call, facts)


def _answer_community(call: Call, f: data.Facts) -> Reply:
    value, kind = call.observable or "", call.kind
    if kind == "uh_url":
        return json_reply(200, community.urlhaus_url(value, f))
    if kind == "uh_host":
        return json_reply(200, community.urlhaus_host(value.lower(), f))
    if kind == "uh_payload":
        return json_reply(200, community.urlhaus_payload(value, f))
    if kind == "tf_search":
        return json_reply(200, community.threatfox_search(value, _term_kind(value), f))
    if kind == "mb_info":
        return json_reply(200, community.malwarebazaar_info(value, f))
    if kind == "otx_general":
        if f.profile == data.NOT_FOUND:
            return not_found(OTX, "indicator")
        return json_reply(200, community.otx_general(value, str(call.options["section_type"]),
                                                     f))
    if not community.crowdsec_found(f) or not _is_global(value):
        return not_found(CROWDSEC, "ip")
    return json_reply(200, community.crowdsec_smoke(value, f))


def _term_kind(term: str) -> str:
    if data.is_ip(term):
        return "ip"
    if "://" in term:
        return "url"
    if _HASH.match(term.lower()):
        return "hash"
    return "domain"


def _answer_virustotal(call: Call, facts: data.Facts) -> Reply:
    kind = call.kind
    value = call.observable or ""
    if facts.profile == data.NOT_FOUND:
        what = {k: label for k, label in _VT_COLLECTIONS.values()}[kind]
        return not_found(VIRUSTOTAL, what, str(call.options.get("raw_id", value)))
    if kind == "vt_ip":
        return json_reply(200, data.vt_ip(value, facts))
    if kind == "vt_domain":
        return json_reply(200, data.vt_domain(value.lower(), facts))
    if kind == "vt_file":
        return json_reply(200, data.vt_file(value, facts))
    return json_reply(200, data.vt_url(value, facts))


def resolve_vt_url(call: Call, known_urls: dict[str, str]) -> Reply | None:
    """Turn a VT URL id (unpadded URL-safe base64 or SHA-256) into the URL it names.

    Sets call.observable to the URL (or, for an unknown SHA-256, to the hash itself) and
    returns a 404 Reply when the id names nothing.
    """
    url_id = call.observable or ""
    call.options["raw_id"] = url_id
    if _SHA256.match(url_id):
        call.observable = known_urls.get(url_id, url_id)
        return None
    url = data.vt_decode_url_id(url_id)
    if url is None:
        return not_found(VIRUSTOTAL, "URL", url_id)
    call.observable = url
    return None


def _is_global(value: str) -> bool:
    return ipaddress.ip_address(value).is_global
