"""Every weight and threshold of the scoring model, in one dataclass: what an analyst tunes.

Rules and the combination read them; nothing else defines a number that changes a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from cti_assets.providers.base import (
    ABUSEIPDB,
    GREYNOISE,
    INTERNETDB,
    NETWORK_CONTEXT,
    SECURITYTRAILS,
    SHODAN,
    VIRUSTOTAL,
)


@dataclass
class ScoringWeights:
    """Every weight and threshold of the model. `p` weights are the probability of malice one
    item alone implies (0-1); caps and thresholds are on the 0-100 score scale."""

    # VirusTotal
    vt_malicious_weight: float = 0.95  # p of full engine evidence
    vt_min_engines: int = 3  # fewer malicious engines than this is weak evidence
    vt_weak_per_engine: float = 0.05  # p per engine below vt_min_engines (1/70 -> 5 points)
    vt_engines_full: int = 10  # engines at which engine evidence is full...
    vt_ratio_full: float = 0.15  # ...or this share of the engines that answered
    vt_suspicious_weight: float = 0.25
    vt_suspicious_full: int = 5
    vt_reputation_weight: float = 0.10  # community reputation below 0
    vt_reputation_full: int = 20
    vt_votes_weight: float = 0.10  # more malicious than harmless community votes
    vt_votes_full: int = 5
    vt_category_weight: float = 0.50  # a vendor category naming malice
    vt_category_keywords: tuple[str, ...] = (
        "malicious", "malware", "phishing", "command and control", "botnet", "spyware",
        "ransomware", "exploit", "compromised", "c2",
    )
    vt_harmless_min: int = 10  # 0 malicious and at least this many harmless engines...
    vt_harmless_cap: float = 35  # ...caps the score here
    vt_stale_days: int = 365  # older analyses count less towards confidence
    # AbuseIPDB
    abuse_confidence_weight: float = 0.80  # p at abuseConfidenceScore 100
    abuse_reporters_weight: float = 0.25
    abuse_reporters_full: int = 20  # distinct reporters at which that evidence is full
    abuse_category_weight: float = 0.30
    abuse_strong_categories: tuple[int, ...] = (4, 7, 20, 21)  # DDoS, phishing, exploited, web
    abuse_tor_weight: float = 0.10  # an anonymiser, not malicious per se
    abuse_whitelisted_cap: float = 15
    abuse_benign_usage_types: tuple[str, ...] = ("Search Engine Spider", "Content Delivery Network")
    abuse_benign_usage_cap: float = 30
    # GreyNoise
    gn_malicious_weight: float = 0.75
    gn_suspicious_weight: float = 0.40
    gn_noise_unknown_weight: float = 0.15  # opportunistic scanning, classification unknown
    gn_riot_trust1_cap: float = 10
    gn_riot_trust2_cap: float = 25
    gn_benign_cap: float = 25  # known research scanner: not targeted, not "good"
    # Shodan host API and InternetDB (one item per row; the host API wins when both report)
    shodan_tag_weight: float = 0.60
    shodan_malicious_tags: tuple[str, ...] = ("c2", "malware", "compromised", "doublepulsar")
    shodan_vulns_weight: float = 0.10  # exposure, not malice
    shodan_vulns_full: int = 10
    # network_context (offline features)
    special_use_cap: float = 0
    nc_confusables_weight: float = 0.25
    nc_entropy_weight: float = 0.15
    nc_entropy_min: float = 3.5
    nc_entropy_min_length: int = 12
    nc_url_ip_host_weight: float = 0.15
    nc_url_credentials_weight: float = 0.25
    nc_url_port_weight: float = 0.05
    # SecurityTrails
    st_new_domain_weight: float = 0.20
    st_new_domain_days: int = 30  # first seen at most this many days before the lookup
    st_top_rank_max: int = 10_000
    st_top_rank_cap: float = 30
    # Threat links (points added to the score, bounded)
    link_known_points: float = 10  # per entity linked directly or through an indicator
    link_provider_name_points: float = 5  # per entity only named by a provider
    link_max_points: float = 15
    # Combination and verdicts (0-100)
    benign_override_score: float = 70  # malicious evidence at least this ignores benign caps
    malicious_threshold: float = 70
    suspicious_threshold: float = 40
    benign_max_score: float = 20  # benign needs benign evidence and a score at most this
    min_confidence: float = 20  # a suspicious score below this confidence is "unknown"
    # Confidence: reliability of each provider and credit per lookup outcome
    provider_reliability: dict[str, float] = field(
        default_factory=lambda: {
            VIRUSTOTAL: 30, ABUSEIPDB: 25, GREYNOISE: 20, SHODAN: 10, INTERNETDB: 8,
            SECURITYTRAILS: 5, NETWORK_CONTEXT: 5,
        }
    )
    not_found_credit: float = 0.5  # "never seen" is an answer, a weaker one
    stale_credit: float = 0.6  # VirusTotal analysis older than vt_stale_days
    # Triage of expensive lookups
    triage_uncertain_weight: float = 1.0  # priority for a score near the middle band
    triage_urgency_weight: float = 1.0  # priority for a high preliminary score
    triage_link_weight: float = 0.5  # priority for a link to a known threat entity
    triage_low_confidence_weight: float = 0.5
    triage_skip_benign_confidence: float = 50  # benign at least this sure: not worth a call

    @classmethod
    def from_dict(cls, values: dict | None) -> ScoringWeights:
        """Weights from run config: unknown names are an error, lists become tuples."""
        values = dict(values or {})
        defaults = cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown scoring weight(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            default = getattr(defaults, name)
            try:
                if isinstance(default, tuple):
                    kwargs[name] = tuple(type(default[0])(v) for v in value) if default else ()
                elif isinstance(default, dict):
                    kwargs[name] = {**default, **{str(k): float(v) for k, v in value.items()}}
                else:
                    kwargs[name] = type(default)(value)
            except (TypeError, ValueError, AttributeError):
                raise ValueError(
                    f"scoring weight {name!r}: {value!r} is not a {type(default).__name__}"
                ) from None
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Plain JSON-able values (tuples as lists), the inverse of from_dict."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else (
                dict(value) if isinstance(value, dict) else value
            )
        return out
