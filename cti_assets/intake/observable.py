"""Observable values as hostile input: normalise or reject each one, and rank TLP markings.

Every provider lookup, cache key and correlation uses the *normalised* value, so two spellings of
one indicator ("BÜCHER.example." and "xn--bcher-kva.example") meet. `normalize` never raises: a
value it cannot accept comes back with a short machine-friendly reason ("invalid_ipv4: ...").

Decisions (one place to read them):
- Refanging: "hxxp(s)://", "fxp://", "[:]//", "[://]", "[.]", "(.)", "{.}", "[dot]", "(dot)" are
  undone in IPs, domains, hostnames and in a URL's scheme and host (not its path or query, where
  such text can be genuine). Reports are often defanged; the indicator is the live value.
- Domain-Name: at least two labels, letters/digits/hyphens only (after IDNA); the last label may
  not be numeric (that is an IP). Hostname: one label is enough and underscores are allowed,
  because hostnames from telemetry ("WKS_042", "_ldap._tcp.dc") carry them.
- Internationalised names become A-labels (punycode) through IDNA 2008 with UTS 46 mapping.
- IPv4: strict dotted quad; leading zeros (octal ambiguity), CIDR ranges and ports are rejected.
  IPv6: canonical compressed form; brackets are stripped; zone ids and CIDR are rejected.
- Url: schemes http, https and ftp only, an explicit scheme and a host are required. Scheme and
  host lowercased, host IDNA-encoded, default port dropped, empty path becomes "/", dot segments
  removed, percent-escapes of unreserved characters decoded and other escapes uppercased,
  characters that may not appear raw are percent-encoded, the fragment is dropped.
- StixFile: the value is a hash; MD5, SHA-1 or SHA-256 told apart by length, lowercased. A
  SHA-512 alone is rejected as `unsupported_hash` (no provider looks it up).

TLP policy (`decide_tlp`, the one owner of TLP knowledge): the most restrictive TLP marking
wins; PAP and statement markings are ignored. A marking resolves by its id (STIX 2.1's TLP 1.0
ids, OASIS's TLP 2.0 ids, OpenCTI's AMBER+STRICT) or by its definition object (TLP 1.0 form,
TLP 2.0 extension, OpenCTI's `definition_type: TLP`). A marking that resolves to nothing makes
the observable TLP:RED with reason "tlp_unresolved" (fail closed). An observable with no
marking at all is treated as `UNMARKED_TLP` (TLP:CLEAR, as OpenCTI shows it); set
CTI_UNMARKED_TLP (e.g. "TLP:AMBER") to treat unmarked data more carefully. TLP:WHITE is the old
name of TLP:CLEAR. Unknown TLP values never pass `tlp_allows` (fail closed).
"""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import idna


@dataclass(frozen=True)
class Normalized:
    """The outcome of normalising one value: `value` when accepted, `reason` when rejected."""

    value: str | None
    reason: str | None
    hash_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None and self.reason is None


MAX_LENGTH = 1024
MAX_URL_LENGTH = 8192
URL_SCHEMES = {"http": 80, "https": 443, "ftp": 21}
HASH_TYPES_BY_LENGTH = {32: "MD5", 40: "SHA-1", 64: "SHA-256", 128: "SHA-512"}
LOOKUP_HASH_TYPES = ("MD5", "SHA-1", "SHA-256")  # what the providers can look up

# STIX SCO type -> OpenCTI entity type. OpenCTI exports Hostname as the custom SCO `hostname`;
# older exports used `x-opencti-hostname`.
STIX_TO_ENTITY_TYPE: dict[str, str] = {
    "ipv4-addr": "IPv4-Addr",
    "ipv6-addr": "IPv6-Addr",
    "domain-name": "Domain-Name",
    "hostname": "Hostname",
    "x-opencti-hostname": "Hostname",
    "url": "Url",
    "file": "StixFile",
}
# Every other STIX 2.1 SCO (and OpenCTI's custom ones) -> its OpenCTI entity type. These enter
# the observables table as `skipped` / `out_of_scope`: counted and shown, never looked up.
OUT_OF_SCOPE_STIX_TYPES: dict[str, str] = {
    "artifact": "Artifact",
    "autonomous-system": "Autonomous-System",
    "directory": "Directory",
    "email-addr": "Email-Addr",
    "email-message": "Email-Message",
    "mac-addr": "Mac-Addr",
    "mutex": "Mutex",
    "network-traffic": "Network-Traffic",
    "process": "Process",
    "software": "Software",
    "user-account": "User-Account",
    "windows-registry-key": "Windows-Registry-Key",
    "x509-certificate": "X509-Certificate",
    "cryptocurrency-wallet": "Cryptocurrency-Wallet",
    "cryptographic-key": "Cryptographic-Key",
    "bank-account": "Bank-Account",
    "credential": "Credential",
    "media-content": "Media-Content",
    "payment-card": "Payment-Card",
    "phone-number": "Phone-Number",
    "text": "Text",
    "tracking-number": "Tracking-Number",
    "user-agent": "User-Agent",
    "persona": "Persona",
}
# Accepted spellings of entity types -> the OpenCTI name.
_TYPE_ALIASES = {**STIX_TO_ENTITY_TYPE, "stixfile": "StixFile"}

_DEFANGED_DOTS = ("[.]", "(.)", "{.}", "[dot]", "(dot)", "{dot}")
_DEFANGED_SCHEMES = {"hxxp": "http", "hxxps": "https", "fxp": "ftp", "fxps": "ftps"}
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)(\[:\]//|\[://\]|://)")
_OTHER_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_HOSTNAME_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_HEX = re.compile(r"[0-9a-f]+")
_DOTTED_DIGITS = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = _UNRESERVED | frozenset(_SUB_DELIMS + ":@/")
_QUERY_SAFE = _PATH_SAFE | frozenset("?")
_USERINFO_SAFE = _UNRESERVED | frozenset(_SUB_DELIMS + ":")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


class _Rejected(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """Carries a rejection reason out of nested validation."""


def normalize(entity_type: str, value: object) -> Normalized:
    """Normalise `value` as an observable of `entity_type`; never raises."""
    try:
        return _normalize(entity_type, value)
    except _Rejected as rejection:
        return Normalized(None, str(rejection))
    except Exception as error:  # the contract is "never raises"
        return Normalized(None, f"internal_error: {type(error).__name__}")


def _normalize(entity_type: object, value: object) -> Normalized:
    kind = _TYPE_ALIASES.get(entity_type.lower()) if isinstance(entity_type, str) else None
    if kind is None:
        raise _Rejected(f"unsupported_type: {_show(entity_type)}")
    if value is None:
        raise _Rejected("empty_value")
    if not isinstance(value, str):
        raise _Rejected(f"not_text: {type(value).__name__}")
    limit = MAX_URL_LENGTH if kind == "Url" else MAX_LENGTH
    if len(value) > limit * 4:  # don't even strip a multi-megabyte string
        raise _Rejected(f"too_long: {len(value)} characters (max {limit})")
    text = value.strip()
    if not text:
        raise _Rejected("empty_value")
    if len(text) > limit:
        raise _Rejected(f"too_long: {len(text)} characters (max {limit})")
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs"):
            what = "control character" if category == "Cc" else "lone surrogate"
            raise _Rejected(f"invalid_characters: {what} U+{ord(char):04X}")
    if kind == "StixFile":
        return _hash(text)
    if kind == "Url":
        return Normalized(_url(text), None)
    text = _refang_host(text)
    if kind == "IPv4-Addr":
        return Normalized(_ipv4(text), None)
    if kind == "IPv6-Addr":
        return Normalized(_ipv6(text), None)
    if kind == "Domain-Name":
        return Normalized(_domain(text, allow_underscore=False, min_labels=2), None)
    return Normalized(_domain(text, allow_underscore=True, min_labels=1, code="invalid_hostname"),
                      None)


def _show(thing: object, limit: int = 40) -> str:
    text = repr(thing) if not isinstance(thing, str) else thing
    return text if len(text) <= limit else text[:limit] + "..."


def _refang_host(text: str) -> str:
    previous = None
    while previous != text:  # repeat: "[[.].]" only shows its second layer after one pass
        previous = text
        for dot in _DEFANGED_DOTS:
            text = text.replace(dot, ".")
            text = text.replace(dot.upper(), ".")
    return text


def _hash(text: str) -> Normalized:
    digest = text.lower()
    if not _HEX.fullmatch(digest):
        raise _Rejected("invalid_hash: not hexadecimal")
    hash_type = HASH_TYPES_BY_LENGTH.get(len(digest))
    if hash_type is None:
        raise _Rejected(f"invalid_hash: length {len(digest)} (expected 32, 40, 64 or 128)")
    if hash_type not in LOOKUP_HASH_TYPES:
        raise _Rejected(f"unsupported_hash: {hash_type} (providers look up "
                        f"{', '.join(LOOKUP_HASH_TYPES)})")
    return Normalized(digest, None, hash_type)


_PREFIX_LENGTH = re.compile(r"[^/]+/\d{1,3}")
_ZONE_ID = re.compile(r"[^%/]+%[\w.-]+")


def _ipv4(text: str) -> str:
    if _PREFIX_LENGTH.fullmatch(text):
        raise _Rejected("invalid_ipv4: CIDR ranges are not single addresses")
    if not _DOTTED_DIGITS.fullmatch(text):
        raise _Rejected(f"invalid_ipv4: not a dotted quad: {_show(text)}")
    for octet in text.split("."):
        if len(octet) > 1 and octet.startswith("0"):
            raise _Rejected(f"invalid_ipv4: leading zero in octet {octet!r}")
        if int(octet) > 255:
            raise _Rejected(f"invalid_ipv4: octet {_show(octet, 10)} out of range")
    return str(ipaddress.IPv4Address(text))


def _ipv6(text: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if _PREFIX_LENGTH.fullmatch(text):
        raise _Rejected("invalid_ipv6: CIDR ranges are not single addresses")
    if "%" in text:  # ipaddress accepts any text after it as a scope
        raise _Rejected("invalid_ipv6: zone ids are not supported" if _ZONE_ID.fullmatch(text)
                        else f"invalid_ipv6: not an address: {_show(text)}")
    if not text.isascii():
        raise _Rejected("invalid_ipv6: non-ASCII characters")
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError as error:
        raise _Rejected(f"invalid_ipv6: {_show(str(error), 80)}") from None


def _domain(text: str, *, allow_underscore: bool, min_labels: int,
            code: str = "invalid_domain") -> str:
    if text.isascii():
        name = text.lower()
    else:
        try:
            name = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as error:
            raise _Rejected(f"{code}: {_show(str(error), 80)}") from None
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise _Rejected("empty_value")
    labels = name.split(".")
    label_pattern = _HOSTNAME_LABEL if allow_underscore else _LDH_LABEL
    for label in labels:
        if not label:
            raise _Rejected(f"{code}: empty label")
        if len(label) > 63:
            raise _Rejected(f"{code}: label too long ({len(label)} > 63)")
        if not label_pattern.fullmatch(label):
            raise _Rejected(f"{code}: invalid characters in label {_show(label)!r}")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError) as error:
                raise _Rejected(f"{code}: bad punycode label {label!r}: {error}") from None
    if len(name) > 253:
        raise _Rejected(f"{code}: name too long ({len(name)} > 253)")
    if len(labels) < min_labels:
        raise _Rejected(f"{code}: a single label is not a domain name")
    if labels[-1].isdigit():
        raise _Rejected(f"{code}: numeric top-level label (an IP address?)")
    return name


def _url(text: str) -> str:
    prefix = _SCHEME_PREFIX.match(text)
    if prefix is None:
        other = _OTHER_SCHEME.match(text)
        if other and "." not in other.group(1):
            raise _Rejected(f"invalid_url: unsupported scheme {_show(other.group(1), 20)!r}")
        raise _Rejected("invalid_url: missing scheme (expected http://, https:// or ftp://)")
    scheme = prefix.group(1).lower()
    scheme = _DEFANGED_SCHEMES.get(scheme, scheme)
    if scheme not in URL_SCHEMES:
        raise _Rejected(f"invalid_url: unsupported scheme {_show(scheme, 20)!r}")
    rest = text[prefix.end():]
    rest, _, _fragment = rest.partition("#")
    authority_end = min((i for i in map(rest.find, "/?\\") if i >= 0), default=len(rest))
    authority, tail = _refang_host(rest[:authority_end]), rest[authority_end:]
    path, question, query = tail.partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    host, port = _split_port(hostport)
    host = _url_host(host)
    port_text = ""
    if port:
        if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535):
            raise _Rejected(f"invalid_url: bad port {_show(port, 10)!r}")
        if int(port) != URL_SCHEMES[scheme]:
            port_text = f":{int(port)}"
    user_text = f"{_percent_normalize(userinfo, _USERINFO_SAFE)}@" if userinfo else ""
    path = _remove_dot_segments(_percent_normalize(path.replace("\\", "/"), _PATH_SAFE))
    query = _percent_normalize(query, _QUERY_SAFE)
    return f"{scheme}://{user_text}{host}{port_text}{path or '/'}{'?' + query if query else ''}"


def _split_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _Rejected("invalid_url: unterminated IPv6 literal")
        host, after = hostport[: end + 1], hostport[end + 1:]
        if after and not after.startswith(":"):
            raise _Rejected("invalid_url: text after IPv6 literal")
        return host, after[1:]
    host, _, port = hostport.partition(":")
    return host, port


def _url_host(host: str) -> str:
    if not host:
        raise _Rejected("invalid_url: missing host")
    if host.startswith("["):
        try:
            return f"[{_ipv6(host)}]"
        except _Rejected as rejection:
            raise _Rejected(str(rejection).replace("invalid_ipv6", "invalid_url")) from None
    if "%" in host:
        raise _Rejected("invalid_url: percent-encoded host")
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if last_label.isdigit() or last_label.lower().startswith("0x"):
        try:
            return _ipv4(host)
        except _Rejected as rejection:
            raise _Rejected(str(rejection).replace("invalid_ipv4", "invalid_url")) from None
    return _domain(host, allow_underscore=True, min_labels=1, code="invalid_url")


def _percent_normalize(text: str, safe: frozenset[str]) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        escape = text[index + 1: index + 3]
        if char == "%" and len(escape) == 2 and set(escape) <= _HEXDIGITS:
            decoded = chr(int(escape, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + escape.upper())
            index += 3
            continue
        if char in safe:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        index += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on an absolute path."""
    if not path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for position, segment in enumerate(segments[1:], start=1):
        last = position == len(segments) - 1
        if segment == "..":
            if len(output) > 0:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


# --- TLP -------------------------------------------------------------------------------------

TLP_ORDER: tuple[str, ...] = ("TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED")
TLP_ALIASES = {"TLP:WHITE": "TLP:CLEAR"}
# The ids OpenCTI uses for its TLP markings (STIX 2.1's TLP 1.0 ids, plus OpenCTI's own for
# AMBER+STRICT, which TLP 1.0 lacks). Write-back uses these when it names a TLP.
TLP_MARKING_IDS: dict[str, str] = {
    "TLP:CLEAR": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    "TLP:GREEN": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "TLP:AMBER": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "TLP:AMBER+STRICT": "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37",
    "TLP:RED": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}
# OASIS's TLP 2.0 marking definitions (the stix2.1 TLP 2.0 extension), referenced by id alone.
TLP2_MARKING_IDS: dict[str, str] = {
    "TLP:CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "TLP:GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "TLP:AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "TLP:AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "TLP:RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
TLP_BY_MARKING_ID: dict[str, str] = {
    mid: tlp for ids in (TLP2_MARKING_IDS, TLP_MARKING_IDS) for tlp, mid in ids.items()
}
TLP2_EXTENSION_ID = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
# Marking kinds that carry no TLP: ignored when the TLP is decided, never a reason to fail closed.
NON_TLP_MARKING_TYPES = frozenset({"pap", "statement"})
UNMARKED_TLP = "TLP:CLEAR"
UNMARKED_TLP_ENV = "CTI_UNMARKED_TLP"
TLP_UNRESOLVED = "tlp_unresolved"
TLP_UNMARKED = "unmarked"


@dataclass(frozen=True)
class MarkingRef:
    """One marking reference of an object, with what the source could read of its definition.

    `definition_type` and `definition` are None when the source holds no definition object for
    `id`; `definition` is the readable name ("TLP:AMBER", "PAP:RED", a statement's text)."""

    id: str
    definition_type: str | None = None
    definition: str | None = None


@dataclass(frozen=True)
class TlpDecision:
    """The TLP an observable is handled under, and why: `reason` is None when its markings say
    so, "unmarked" when the unmarked policy applied, "tlp_unresolved: <ids>" when it failed
    closed to TLP:RED."""

    tlp: str
    reason: str | None = None


def marking_ref(definition: dict) -> MarkingRef:
    """A MarkingRef from a STIX marking-definition object in any of its TLP forms: STIX 2.1's
    TLP 1.0 (`definition_type: tlp`, `definition: {tlp: amber}`), the TLP 2.0 extension
    (`tlp_2_0: amber+strict`), OpenCTI's (`definition_type: TLP`, `definition: TLP:AMBER`, or in
    its exports a statement with `x_opencti_definition_type: TLP`)."""
    marking_id = str(definition.get("id") or "")
    extension = (definition.get("extensions") or {}).get(TLP2_EXTENSION_ID)
    if isinstance(extension, dict) and isinstance(extension.get("tlp_2_0"), str):
        return MarkingRef(marking_id, "TLP", f"TLP:{extension['tlp_2_0'].upper()}")
    # OpenCTI exports a non-standard marking as a statement and keeps its own type beside it.
    kind = definition.get("x_opencti_definition_type") or definition.get("definition_type")
    body = definition.get("definition")
    if isinstance(body, dict) and isinstance(body.get("tlp"), str):
        return MarkingRef(marking_id, "TLP", f"TLP:{body['tlp'].upper()}")
    name = next((text for text in (
        definition.get("x_opencti_definition"),
        body if isinstance(body, str) else None,
        definition.get("name"),
        body.get("statement") if isinstance(body, dict) else None,
    ) if isinstance(text, str)), None)
    if isinstance(kind, str):
        return MarkingRef(marking_id, kind, name)
    if isinstance(body, dict) and isinstance(body.get("statement"), str):
        return MarkingRef(marking_id, "statement", name)
    if canonical_tlp(name) is not None:
        return MarkingRef(marking_id, "TLP", name)
    return MarkingRef(marking_id, None, name)


def marking_tlp(marking: MarkingRef) -> str | None:
    """TLP of one marking; None for a marking known to carry no TLP; raises LookupError when
    it cannot be resolved (no definition, or a TLP definition that names no known TLP)."""
    known = TLP_BY_MARKING_ID.get(marking.id.strip().lower())
    if known is not None:
        return known
    kind = (marking.definition_type or "").strip().lower()
    if kind == "tlp":
        tlp = canonical_tlp(marking.definition)
        if tlp is None:
            raise LookupError(marking.id)
        return tlp
    if kind:  # PAP, statement and any other named marking kind: not a TLP
        return None
    if canonical_tlp(marking.definition) is not None:
        return canonical_tlp(marking.definition)
    raise LookupError(marking.id)


def decide_tlp(markings: Iterable[MarkingRef], unmarked: str | None = None) -> TlpDecision:
    """The most restrictive TLP among `markings`; TLP:RED ("tlp_unresolved") when any marking
    cannot be resolved; `unmarked` (default: the CTI_UNMARKED_TLP policy) when none is a TLP."""
    found: list[str] = []
    unresolved: list[str] = []
    for marking in markings:
        try:
            tlp = marking_tlp(marking)
        except LookupError:
            unresolved.append(marking.id)
            continue
        if tlp is not None:
            found.append(tlp)
    if unresolved:
        return TlpDecision("TLP:RED", f"{TLP_UNRESOLVED}: {', '.join(sorted(set(unresolved)))}")
    if found:
        return TlpDecision(max(found, key=TLP_ORDER.index))
    fallback = unmarked_tlp() if unmarked is None else canonical_tlp(unmarked)
    if fallback is None:
        raise ValueError(f"unmarked TLP {unmarked!r} is not a TLP")
    return TlpDecision(fallback, TLP_UNMARKED)


def canonical_tlp(marking: object) -> str | None:
    """"TLP:AMBER" for "tlp:amber" or an AMBER marking id; None for anything that isn't a TLP."""
    if not isinstance(marking, str):
        return None
    text = marking.strip()
    if text.lower() in TLP_BY_MARKING_ID:
        return TLP_BY_MARKING_ID[text.lower()]
    name = text.upper().replace(" ", "")
    name = TLP_ALIASES.get(name, name)
    return name if name in TLP_ORDER else None


def unmarked_tlp() -> str:
    """The TLP assumed for unmarked observables: CTI_UNMARKED_TLP, else UNMARKED_TLP."""
    configured = os.environ.get(UNMARKED_TLP_ENV, "").strip()
    if not configured:
        return UNMARKED_TLP
    tlp = canonical_tlp(configured)
    if tlp is None:
        raise ValueError(
            f"{UNMARKED_TLP_ENV}={configured!r} is not a TLP; use one of {', '.join(TLP_ORDER)}"
        )
    return tlp


def tlp_rank(tlp: str) -> int:
    """Position in TLP_ORDER (CLEAR=0 ... RED=4); ValueError for a value that isn't a TLP."""
    name = canonical_tlp(tlp)
    if name is None:
        raise ValueError(f"not a TLP marking: {_show(tlp)}")
    return TLP_ORDER.index(name)


def tlp_allows(tlp: str, max_tlp: str) -> bool:
    """Whether data marked `tlp` may go where at most `max_tlp` is allowed; unknown -> False."""
    value, ceiling = canonical_tlp(tlp), canonical_tlp(max_tlp)
    if value is None or ceiling is None:
        return False
    return TLP_ORDER.index(value) <= TLP_ORDER.index(ceiling)
