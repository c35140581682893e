"""The fields each provider contributes to scoring and context, with their types.

This is the contract between clients (which fill `LookupResult.fields`), `merged_enrichment`
(which flattens them into `<provider>__<field>` columns) and the scoring model (which reads
those columns). A field a provider did not report is null, never a default that could pass
for evidence.
"""

from __future__ import annotations

# dtype names are pandas extension dtypes, or "list[int]" / "list[str]" for JSON lists.
PROVIDER_FIELDS: dict[str, dict[str, str]] = {
    "network_context": {
        "is_special_use": "boolean",  # private, reserved, bogon, special-use IP or name
        "range_name": "string",  # e.g. "private-use", "loopback", "documentation", ".local"
        "registrable_domain": "string",
        "public_suffix": "string",
        "is_idn": "boolean",
        "punycode": "string",
        "has_confusables": "boolean",
        "label_entropy": "Float64",  # Shannon entropy of the longest label
        "label_length": "Int64",  # length of the longest label
        "label_bigram_score": "Float64",  # mean log10 bigram probability (names.bigram_score)
        "lookalike_of": "string",  # the popular name the label imitates (names.lookalike_of)
        "url_host_is_ip": "boolean",
        "url_path_depth": "Int64",
        "url_has_credentials": "boolean",
        "url_nonstandard_port": "boolean",
        "hash_type": "string",  # MD5, SHA-1, SHA-256
    },
    "shodan_internetdb": {
        "ports": "list[int]",
        "vulns": "list[str]",
        "tags": "list[str]",
        "cpes": "list[str]",
        "hostnames": "list[str]",
    },
    "greynoise": {
        "noise": "boolean",
        "riot": "boolean",
        "classification": "string",  # malicious, suspicious, benign, unknown
        "name": "string",  # the actor / organisation name GreyNoise reports
        "trust_level": "string",  # RIOT trust level "1", "2", "3"
        "tags": "list[str]",
        "last_seen": "string",
    },
    "abuseipdb": {
        "abuse_confidence_score": "Int64",
        "total_reports": "Int64",
        "num_distinct_users": "Int64",
        "is_whitelisted": "boolean",
        "is_tor": "boolean",
        "usage_type": "string",
        "country_code": "string",
        "isp": "string",
        "categories": "list[int]",  # report category ids, most frequent first
        "last_reported_at": "string",
    },
    "virustotal": {
        "malicious": "Int64",
        "suspicious": "Int64",
        "harmless": "Int64",
        "undetected": "Int64",
        "reputation": "Int64",
        "votes_malicious": "Int64",
        "votes_harmless": "Int64",
        "tags": "list[str]",
        "threat_names": "list[str]",  # popular_threat_classification names, URL threat_names
        "categories": "list[str]",  # vendor category strings (domains, URLs)
        "last_analysis_date": "Int64",  # epoch seconds
        "creation_date": "Int64",  # epoch seconds: domain registration (WHOIS/RDAP)
        "popularity_rank": "Int64",  # best rank over popularity_ranks' rankers (domains)
        "first_submission_date": "Int64",  # epoch seconds (URLs, files)
    },
    "securitytrails": {
        "apex_domain": "string",
        "alexa_rank": "Int64",
        "a_records": "list[str]",
        "ns_records": "list[str]",
        "mx_records": "list[str]",
        "subdomain_count": "Int64",
        "first_seen": "string",
    },
    "shodan": {
        "ports": "list[int]",
        "vulns": "list[str]",
        "tags": "list[str]",
        "org": "string",
        "asn": "string",
        "country_code": "string",
        "hostnames": "list[str]",
    },
    "urlhaus": {
        "url_status": "string",  # url lookups: online, offline, unknown
        "threat": "string",  # e.g. malware_download
        "tags": "list[str]",  # URLhaus tags (elf, mozi, Emotet, ...)
        "signatures": "list[str]",  # malware families of the payloads (Mozi, Heodo, ...)
        "url_count": "Int64",  # malware URLs on the host / serving the payload (1 for a URL)
        "online_url_count": "Int64",  # of which online now
        "file_type": "string",  # payload lookups: exe, elf, dll, ...
        "first_seen": "string",  # ISO-8601: date_added (url), firstseen (host, payload)
        "blacklisted": "boolean",  # listed in Spamhaus DBL or SURBL (per URLhaus)
        "reference": "string",  # the URLhaus page of the entry
    },
    "threatfox": {
        "ioc_count": "Int64",  # matching IOCs (an IP may appear with several ports)
        "threat_types": "list[str]",  # botnet_cc, payload_delivery, payload
        "malware": "list[str]",  # malware_printable names (Cobalt Strike, QakBot, ...)
        "malware_aliases": "list[str]",
        "max_confidence": "Int64",  # highest confidence_level (0-100)
        "tags": "list[str]",
        "first_seen": "string",  # ISO-8601, earliest first_seen
        "last_seen": "string",  # ISO-8601, latest last_seen (first_seen when never seen again)
    },
    "malwarebazaar": {
        "signature": "string",  # malware family (Heodo, QakBot, AgentTesla, ...)
        "file_type": "string",
        "tags": "list[str]",
        "first_seen": "string",  # ISO-8601
        "last_seen": "string",
        "delivery_method": "string",
    },
    "otx": {
        "pulse_count": "Int64",  # pulses containing the indicator
        "malware_families": "list[str]",  # display names over the pulses
        "adversaries": "list[str]",  # adversary names over the pulses
        "attack_ids": "list[str]",  # MITRE ATT&CK ids
        "tags": "list[str]",  # the most common pulse tags (at most 20)
        "whitelisted": "boolean",  # OTX validation names it (whitelist, popular domain, ...)
        "validation": "list[str]",  # the validation sources' names
        "latest_pulse": "string",  # ISO-8601, latest pulse modification
    },
    "crowdsec": {
        "reputation": "string",  # malicious, suspicious, known, safe, unknown
        "confidence": "string",  # low, medium, high
        "behaviors": "list[str]",  # ssh:bruteforce, http:exploit, ...
        "classifications": "list[str]",  # proxy:tor, scanner:..., community-blocklist, ...
        "false_positives": "list[str]",  # cdn:cloudflare, seo:crawler, ...
        "score_threat": "Int64",  # scores.overall.threat (0-5)
        "score_total": "Int64",  # scores.overall.total (0-5)
        "background_noise_score": "Int64",  # 0-10
        "last_seen": "string",  # ISO-8601, history.last_seen
        "as_name": "string",
    },
}

# Which normalised observable types each provider accepts (OpenCTI entity types).
PROVIDER_SCOPE: dict[str, tuple[str, ...]] = {
    "network_context": ("IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname", "Url", "StixFile"),
    "shodan_internetdb": ("IPv4-Addr", "IPv6-Addr"),
    "greynoise": ("IPv4-Addr",),
    "abuseipdb": ("IPv4-Addr", "IPv6-Addr"),
    "virustotal": ("IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname", "Url", "StixFile"),
    "securitytrails": ("Domain-Name", "Hostname"),
    "shodan": ("IPv4-Addr", "IPv6-Addr"),
    "urlhaus": ("Url", "Domain-Name", "Hostname", "IPv4-Addr", "StixFile"),
    "threatfox": ("IPv4-Addr", "Domain-Name", "Hostname", "Url", "StixFile"),
    "malwarebazaar": ("StixFile",),
    "otx": ("IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname", "Url", "StixFile"),
    "crowdsec": ("IPv4-Addr", "IPv6-Addr"),
}


def column(provider: str, field_name: str) -> str:
    """Column name of a provider field in merged_enrichment."""
    return f"{provider}__{field_name}"


def is_list(dtype: str) -> bool:
    """Whether a PROVIDER_FIELDS dtype is a JSON list ("list[int]" or "list[str]")."""
    return dtype.startswith("list[")
