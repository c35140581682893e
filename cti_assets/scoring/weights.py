"""Every weight and threshold of the scoring model, in one dataclass: what an analyst tunes.

Rules and the combination read them; nothing else defines a number that changes a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from cti_assets.providers.base import (
    ABUSEIPDB,
    CROWDSEC,
    GREYNOISE,
    INTERNETDB,
    MALWAREBAZAAR,
    NETWORK_CONTEXT,
    OTX,
    SECURITYTRAILS,
    SHODAN,
    THREATFOX,
    URLHAUS,
    VIRUSTOTAL,
)

REGISTRATION = "registration"  # a name's registration age: a witness apart from VT's engines
# URLhaus, ThreatFox and MalwareBazaar are one curator's lists, fed by the same reporters: they
# testify once together, never as three independent providers.
ABUSE_CH = "abuse.ch"


@dataclass
class ScoringWeights:
    """Every weight and threshold of the model. `p` weights are the probability of malice one
    item alone implies (0-1); caps and thresholds are on the 0-100 score scale."""

    # VirusTotal
    vt_malicious_weight: float = 0.95  # p of full engine evidence
    vt_min_engines: int = 3  # fewer malicious engines than this is weak evidence
    vt_weak_per_engine: float = 0.05  # p per engine below vt_min_engines (1/70 -> 5 points)
    vt_engines_full: int = 8  # engine evidence is full at this many engines...
    vt_ratio_full: float = 0.08  # ...and this share of the engines that answered (both needed)
    vt_suspicious_weight: float = 0.25
    vt_suspicious_full: int = 5
    vt_reputation_weight: float = 0.10  # community reputation below 0
    vt_reputation_full: int = 20
    vt_votes_weight: float = 0.10  # more malicious than harmless community votes
    vt_votes_full: int = 5
    vt_category_weight: float = 0.25  # vendor categories naming malice (one item however many)
    vt_category_keywords: tuple[str, ...] = (
        "malicious", "malware", "phishing", "command and control", "botnet", "ransomware",
        "exploit", "compromised", "c2",
    )
    vt_category_excluded: tuple[str, ...] = ("adware", "potentially unwanted", "pua")
    vt_harmless_min: int = 10  # 0 malicious and at least this many harmless engines...
    vt_harmless_cap: float = 35  # ...caps the score here, if the object is also known:
    vt_harmless_min_age_days: int = 365  # a name registered this long ago (or popular)
    vt_stale_days: int = 365  # older analyses count less towards confidence
    # Registration age (VirusTotal creation_date, from WHOIS/RDAP)
    young_days: int = 30
    young_weight: float = 0.30
    very_young_days: int = 7
    very_young_weight: float = 0.45
    # AbuseIPDB: one witness, abuseConfidenceScore scaled by reporters and recency
    abuse_confidence_weight: float = 0.85  # p at score 100, >= reporters_full users, fresh
    abuse_reporters_full: int = 10  # distinct reporters for full weight (log scale: 1 -> 0.29)
    abuse_half_life_days: float = 30  # the evidence halves every this many days since the last
    abuse_weak_categories: tuple[int, ...] = (14, 19)  # Port Scan, Bad Web Bot
    abuse_weak_only_factor: float = 0.5  # reports only in weak categories count this much
    abuse_category_weight: float = 0.30
    abuse_strong_categories: tuple[int, ...] = (4, 7, 20, 21)  # DDoS, phishing, exploited, web
    abuse_whitelisted_cap: float = 10
    abuse_benign_usage_types: tuple[str, ...] = ("Search Engine Spider",)
    abuse_benign_usage_cap: float = 20
    abuse_shared_usage_types: tuple[str, ...] = ("Content Delivery Network",)
    # GreyNoise
    gn_malicious_weight: float = 0.75
    gn_suspicious_weight: float = 0.40
    gn_noise_unknown_weight: float = 0.15  # opportunistic scanning, classification unknown
    gn_malicious_tag_weight: float = 0.20  # v3 tags whose intention is malicious
    gn_riot_trust1_cap: float = 10
    gn_riot_trust2_cap: float = 20
    gn_riot_community_cap: float = 20  # Community says riot without a trust level
    gn_benign_cap: float = 20  # known research scanner: not targeted, not "good"
    # Shodan host API and InternetDB (one item per row; the host API wins when both report)
    shodan_tag_weight: float = 0.60
    shodan_malicious_tags: tuple[str, ...] = ("c2", "malware", "compromised", "doublepulsar")
    shodan_vulns_weight: float = 0.10  # exposure, not malice
    shodan_vulns_full: int = 10
    # network_context (offline features)
    special_use_cap: float = 0
    nc_confusables_weight: float = 0.35
    nc_lookalike_weight: float = 0.40  # a popular brand's name, edited or embedded
    nc_random_weight: float = 0.25  # a long label unlike ordinary words (bigram model)
    nc_random_max_score: float = -1.55  # mean log10 bigram probability at most this...
    nc_random_min_length: int = 10  # ...over a label at least this long
    nc_url_ip_host_weight: float = 0.15
    nc_url_credentials_weight: float = 0.25
    nc_url_port_weight: float = 0.05
    nc_url_payload_weight: float = 0.35
    nc_url_payload_pattern: str = (
        r"/bins?/|\.(sh|mips|mpsl|arm[567]?|x86(_64)?|m68k|ppc|sh4|spc|i686)$"
    )
    # SecurityTrails
    st_new_domain_weight: float = 0.10  # DNS records first seen recently (not registration)
    st_new_domain_days: int = 30  # first seen at most this many days before the lookup
    st_top_rank_max: int = 10_000
    st_top_rank_cap: float = 30
    # URLhaus (witness abuse.ch)
    urlhaus_url_online_weight: float = 0.85  # the URL serves malware now
    urlhaus_url_offline_weight: float = 0.60  # it did; taken down since
    # a host serving malware URLs: often a hacked site or a shared platform (GitHub, Discord's
    # CDN), so alone it stays below what lifts a benign cap with one other witness
    urlhaus_host_online_weight: float = 0.40
    urlhaus_host_offline_weight: float = 0.20  # a host that served some once
    urlhaus_payload_weight: float = 0.90  # a file URLhaus downloaded from a malware URL
    # ThreatFox (witness abuse.ch): confidence_level / 100, halved every half-life since seen
    threatfox_weight: float = 0.90
    threatfox_half_life_days: float = 90
    # MalwareBazaar (witness abuse.ch)
    malwarebazaar_signature_weight: float = 0.95  # a sample with a family
    malwarebazaar_weight: float = 0.80  # a sample without one
    # AlienVault OTX: pulses are community lists, noisy; OTX validation vouches
    otx_pulse_weight: float = 0.45  # p at otx_pulses_full pulses (log scale: 1 pulse -> 0.13)
    otx_pulses_full: int = 10
    otx_named_weight: float = 0.35  # pulses naming a malware family or an adversary
    otx_stale_days: int = 365  # latest pulse older than this: the evidence counts half
    otx_whitelisted_cap: float = 20  # OTX validation (whitelist, popular name)
    # CrowdSec CTI
    crowdsec_malicious_weight: float = 0.75
    crowdsec_suspicious_weight: float = 0.35
    crowdsec_safe_cap: float = 15  # reputation "safe": a known benign service
    # Popular and shared infrastructure (cti_assets/data/infrastructure.json)
    popular_rank_max: int = 1_000  # best VirusTotal popularity rank at most this...
    popular_cap: float = 15  # ...or a shipped popular name: the score stays at most this
    resolver_cap: float = 10  # a well-known public DNS resolver address
    shared_infra_cap: float = 45  # CDN or cloud: at most suspicious unless corroborated
    # Threat links (points added to the score, bounded)
    link_known_points: float = 10  # per entity linked directly or through an indicator
    link_provider_name_points: float = 5  # per entity only named by a provider
    link_max_points: float = 15
    # Combination and verdicts (0-100)
    witness_max: dict[str, float] = field(
        default_factory=lambda: {
            VIRUSTOTAL: 0.95, ABUSEIPDB: 0.90, GREYNOISE: 0.60, SHODAN: 0.60,
            NETWORK_CONTEXT: 0.50, REGISTRATION: 0.45, SECURITYTRAILS: 0.20,
            ABUSE_CH: 0.95, OTX: 0.60, CROWDSEC: 0.80,
        }
    )  # the most one provider's signals together may claim
    lift_min_witnesses: int = 2  # independent providers needed to lift a benign cap...
    lift_min_p: float = 0.30  # ...each claiming at least this
    benign_override_score: float = 70  # ...and together at least this
    malicious_threshold: float = 70
    suspicious_threshold: float = 40
    benign_max_score: float = 20  # benign needs vouching evidence and a score at most this
    min_confidence: float = 20  # a suspicious score below this confidence is "unknown"
    # Confidence: reliability of each provider and credit per lookup outcome
    provider_reliability: dict[str, float] = field(
        default_factory=lambda: {
            VIRUSTOTAL: 30, ABUSEIPDB: 25, GREYNOISE: 20, SHODAN: 10, INTERNETDB: 8,
            SECURITYTRAILS: 5, NETWORK_CONTEXT: 5,
            URLHAUS: 8, THREATFOX: 8, MALWAREBAZAAR: 8, OTX: 6, CROWDSEC: 12,
        }
    )
    not_found_credit: float = 0.5  # "never seen" is an answer, a weaker one
    stale_credit: float = 0.6  # VirusTotal analysis older than vt_stale_days
    # Share of the coverage that counts, by independent witnesses behind the verdict
    support_by_witnesses: tuple[float, ...] = (0.3, 0.6, 0.85, 1.0)  # 0, 1, 2, 3+
    conflict_factor: float = 0.7  # malicious and benign evidence on the same row
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


WEIGHTS_FILE_ENV = "CTI_SCORE_WEIGHTS"


def configured_weights(run_config: dict | None = None) -> ScoringWeights:
    """The weights a scoring run uses: the defaults, overridden by the JSON object in the file
    CTI_SCORE_WEIGHTS names (so schedules, the sensor and backfills score alike), overridden in
    turn by the run's own `weights`. ValueError, naming the variable, for a file that cannot be
    read or holds an unknown weight or a bad value."""
    import json
    import os
    from pathlib import Path

    from cti_assets.envvars import bad_setting

    values: dict = {}
    path = os.environ.get(WEIGHTS_FILE_ENV, "").strip()
    if path:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise bad_setting(WEIGHTS_FILE_ENV, path,
                              f"a readable JSON file of weights ({type(error).__name__})"
                              ) from None
        if not isinstance(loaded, dict):
            raise bad_setting(WEIGHTS_FILE_ENV, path, "a JSON object of weight names and values")
        try:
            ScoringWeights.from_dict(loaded)
        except ValueError as error:
            raise bad_setting(WEIGHTS_FILE_ENV, path, f"weights the model knows: {error}"
                              ) from None
        values.update(loaded)
    values.update(run_config or {})
    return ScoringWeights.from_dict(values) if values else ScoringWeights()
