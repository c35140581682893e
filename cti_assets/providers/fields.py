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
        "is_special_use": "boolean",
        "range_name": "string",
        "registrable_domain": "string",
        "public_suffix": "string",
        "is_idn": "boolean",
        "punycode": "string",
        "has_confusables": "boolean",
        "label_entropy": "Float64",
        "label_length": "Int64",
        "label_bigram_score": "Float64",
        "lookalike_of": "string",
        "url_host_is_ip": "boolean",
        "url_path_depth": "Int64",
        "url_has_credentials": "boolean",
        "url_nonstandard_port": "boolean",
        "hash_type": "string",
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
        "classification": "string",
        "name": "string",
        "trust_level": "string",
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
        "categories": "list[int]",
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
        "threat_names": "list[str]",
        "categories": "list[str]",
        "last_analysis_date": "Int64",
        "creation_date": "Int64",
        "popularity_rank": "Int64",
        "first_submission_date": "Int64",
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
        "url_status": "string",
        "threat": "string",
        "tags": "list[str]",
        "signatures": "list[str]",
        "url_count": "Int64",
        "online_url_count": "Int64",
        "file_type": "string",
        "first_seen": "string",
        "blacklisted": "boolean",
        "reference": "string",
    },
    "threatfox": {
        "ioc_count": "Int64",
        "threat_types": "list[str]",
        "malware": "list[str]",
        "malware_aliases": "list[str]",
        "max_confidence": "Int64",
        "tags": "list[str]",
        "first_seen": "string",
        "last_seen": "string",
    },
    "malwarebazaar": {
        "signature": "string",
        "file_type": "string",
        "tags": "list[str]",
        "first_seen": "string",
        "last_seen": "string",
        "delivery_method": "string",
    },
    "otx": {
        "pulse_count": "Int64",
        "malware_families": "list[str]",
        "adversaries": "list[str]",
        "attack_ids": "list[str]",
        "tags": "list[str]",
        "whitelisted": "boolean",
        "validation": "list[str]",
        "latest_pulse": "string",
    },
    "crowdsec": {
        "reputation": "string",
        "confidence": "string",
        "behaviors": "list[str]",
        "classifications": "list[str]",
        "false_positives": "list[str]",
        "score_threat": "Int64",
        "score_total": "Int64",
        "background_noise_score": "Int64",
        "last_seen": "string",
        "as_name": "string",
    },
}


# What a field holds, where its name does not say it all; schemas.field_description words
# every field column's description from these (or from the name alone).
FIELD_NOTES: dict[str, dict[str, str]] = {
    "network_context": {
        "is_special_use": "private, reserved, bogon, special-use IP or name",
        "range_name": "e.g. \"private-use\", \"loopback\", \"documentation\", \".local\"",
        "label_entropy": "Shannon entropy of the longest label",
        "label_length": "length of the longest label",
        "label_bigram_score": "mean log10 bigram probability (names.bigram_score)",
        "lookalike_of": "the popular name the label imitates (names.lookalike_of)",
        "hash_type": "MD5, SHA-1, SHA-256",
    },
    "greynoise": {
        "classification": "malicious, suspicious, benign, unknown",
        "name": "the actor / organisation name GreyNoise reports",
        "trust_level": "RIOT trust level \"1\", \"2\", \"3\"",
    },
    "abuseipdb": {
        "categories": "report category ids, most frequent first",
    },
    "virustotal": {
        "threat_names": "popular_threat_classification names, URL threat_names",
        "categories": "vendor category strings (domains, URLs)",
        "last_analysis_date": "epoch seconds",
        "creation_date": "epoch seconds: domain registration (WHOIS/RDAP)",
        "popularity_rank": "best rank over popularity_ranks' rankers (domains)",
        "first_submission_date": "epoch seconds (URLs, files)",
    },
    "urlhaus": {
        "url_status": "url lookups: online, offline, unknown",
        "threat": "e.g. malware_download",
        "tags": "URLhaus tags (elf, mozi, Emotet, ...)",
        "signatures": "malware families of the payloads (Mozi, Heodo, ...)",
        "url_count": "malware URLs on the host / serving the payload (1 for a URL)",
        "online_url_count": "of which online now",
        "file_type": "payload lookups: exe, elf, dll, ...",
        "first_seen": "ISO-8601: date_added (url), firstseen (host, payload)",
        "blacklisted": "listed in Spamhaus DBL or SURBL (per URLhaus)",
        "reference": "the URLhaus page of the entry",
    },
    "threatfox": {
        "ioc_count": "matching IOCs (an IP may appear with several ports)",
        "threat_types": "botnet_cc, payload_delivery, payload",
        "malware": "malware_printable names (Cobalt Strike, QakBot, ...)",
        "max_confidence": "highest confidence_level (0-100)",
        "first_seen": "ISO-8601, earliest first_seen",
        "last_seen": "ISO-8601, latest last_seen (first_seen when never seen again)",
    },
    "malwarebazaar": {
        "signature": "malware family (Heodo, QakBot, AgentTesla, ...)",
        "first_seen": "ISO-8601",
    },
    "otx": {
        "pulse_count": "pulses containing the indicator",
        "malware_families": "display names over the pulses",
        "adversaries": "adversary names over the pulses",
        "attack_ids": "MITRE ATT&CK ids",
        "tags": "the most common pulse tags (at most 20)",
        "whitelisted": "OTX validation names it (whitelist, popular domain, ...)",
        "validation": "the validation sources' names",
        "latest_pulse": "ISO-8601, latest pulse modification",
    },
    "crowdsec": {
        "reputation": "malicious, suspicious, known, safe, unknown",
        "confidence": "low, medium, high",
        "behaviors": "ssh:bruteforce, http:exploit, ...",
        "classifications": "proxy:tor, scanner:..., community-blocklist, ...",
        "false_positives": "cdn:cloudflare, seo:crawler, ...",
        "score_threat": "scores.overall.threat (0-5)",
        "score_total": "scores.overall.total (0-5)",
        "background_noise_score": "0-10",
        "last_seen": "ISO-8601, history.last_seen",
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
