"""The evidence rules of the scoring model, each a set of column operations over the frame.

A rule reads `<provider>__<field>` columns of merged_enrichment (only where that provider's
status is ok and the observable is ok) and returns a `Hit`: the rows where it fired, the
amount per row (probability of malice for malicious rules, a score cap for benign ones), the
value that made it fire (JSON text) and a short human phrase with the provider's numbers.
Malicious rules give a probability; benign rules a cap that also vouches for the observable;
shared-infrastructure rules a cap that vouches for nothing; labels only show a fact. `RULES`
lists them for the docs, the lineage and the tests. Nothing here loops over rows in Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cti_assets.providers import names
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
from cti_assets.providers.fields import column
from cti_assets.scoring.text import (
    cat,
    const,
    decimal1,
    ints,
    json_text,
    where,
)
from cti_assets.scoring.view import PROVIDER_LABELS, View
from cti_assets.scoring.weights import ABUSE_CH, REGISTRATION, ScoringWeights

MALICIOUS_KIND, BENIGN_KIND = "malicious", "benign"
SHARED_KIND = "shared"  # caps the score like a benign rule, but vouches for nothing
LABEL_KIND = "label"  # a fact worth showing (Tor exit, scanner, CDN); never changes the score
CAP_KINDS = (BENIGN_KIND, SHARED_KIND)


ABUSE_CATEGORY_NAMES = {
    1: "DNS Compromise", 2: "DNS Poisoning", 3: "Fraud Orders", 4: "DDoS Attack",
    5: "FTP Brute-Force", 6: "Ping of Death", 7: "Phishing", 8: "Fraud VoIP", 9: "Open Proxy",
    10: "Web Spam", 11: "Email Spam", 12: "Blog Spam", 13: "VPN IP", 14: "Port Scan",
    15: "Hacking", 16: "SQL Injection", 17: "Spoofing", 18: "Brute-Force", 19: "Bad Web Bot",
    20: "Exploited Host", 21: "Web App Attack", 22: "SSH", 23: "IoT Targeted",
}
# Tags providers attach that are facts about the address, shown as labels.
LABEL_TAGS = {"tor": "Tor exit", "vpn": "anonymiser (VPN)", "proxy": "anonymiser (proxy)",
              "scanner": "scanner", "cloud": "cloud", "cdn": "CDN"}
NAME_TYPES = ("Domain-Name", "Hostname")


@dataclass(frozen=True)
class RuleSpec:
    """One evidence rule, as documented: which provider fields it reads and its weights."""

    name: str
    kind: str  # MALICIOUS_KIND, BENIGN_KIND, SHARED_KIND or LABEL_KIND
    providers: tuple[str, ...]
    fields: tuple[str, ...]
    weights: tuple[str, ...]  # ScoringWeights attributes
    description: str
    witness: str = ""  # whose testimony it is, when not the provider's (see model)


RULES: tuple[RuleSpec, ...] = (
    RuleSpec("vt_malicious", MALICIOUS_KIND, (VIRUSTOTAL,),
             ("malicious", "suspicious", "harmless", "undetected"),
             ("vt_malicious_weight", "vt_min_engines", "vt_weak_per_engine", "vt_engines_full",
              "vt_ratio_full"),
             "engines flagging malicious; full at vt_engines_full engines and vt_ratio_full of "
             "them (the smaller share counts); below vt_min_engines only vt_weak_per_engine "
             "per engine"),
    RuleSpec("vt_suspicious", MALICIOUS_KIND, (VIRUSTOTAL,), ("suspicious",),
             ("vt_suspicious_weight", "vt_suspicious_full"), "engines flagging suspicious"),
    RuleSpec("vt_reputation", MALICIOUS_KIND, (VIRUSTOTAL,), ("reputation",),
             ("vt_reputation_weight", "vt_reputation_full"), "negative community reputation"),
    RuleSpec("vt_votes", MALICIOUS_KIND, (VIRUSTOTAL,), ("votes_malicious", "votes_harmless"),
             ("vt_votes_weight", "vt_votes_full"), "more malicious than harmless votes"),
    RuleSpec("vt_category", MALICIOUS_KIND, (VIRUSTOTAL,), ("categories",),
             ("vt_category_weight", "vt_category_keywords", "vt_category_excluded"),
             "vendor categories containing a malice keyword (adware/PUA categories excluded)"),
    RuleSpec("young_name", MALICIOUS_KIND, (VIRUSTOTAL,), ("creation_date",),
             ("young_days", "young_weight", "very_young_days", "very_young_weight"),
             "domain registered shortly before the lookup (VirusTotal creation_date)",
             witness=REGISTRATION),
    RuleSpec("abuse_confidence", MALICIOUS_KIND, (ABUSEIPDB,),
             ("abuse_confidence_score", "num_distinct_users", "last_reported_at", "categories",
              "is_whitelisted"),
             ("abuse_confidence_weight", "abuse_reporters_full", "abuse_half_life_days",
              "abuse_weak_categories", "abuse_weak_only_factor"),
             "abuseConfidenceScore / 100, scaled by distinct reporters (log) and halved every "
             "abuse_half_life_days since the last report; never for whitelisted addresses"),
    RuleSpec("abuse_category", MALICIOUS_KIND, (ABUSEIPDB,), ("categories",),
             ("abuse_category_weight", "abuse_strong_categories"),
             "a strong report category (DDoS, phishing, exploited host, web app attack), "
             "not for whitelisted addresses"),
    RuleSpec("gn_classification", MALICIOUS_KIND, (GREYNOISE,), ("classification",),
             ("gn_malicious_weight", "gn_suspicious_weight"),
             "GreyNoise classification malicious or suspicious"),
    RuleSpec("gn_noise_unknown", MALICIOUS_KIND, (GREYNOISE,), ("noise", "classification"),
             ("gn_noise_unknown_weight",), "internet noise with classification unknown"),
    RuleSpec("shodan_tag", MALICIOUS_KIND, (SHODAN, INTERNETDB), ("tags",),
             ("shodan_tag_weight", "shodan_malicious_tags"), "a malicious Shodan tag"),
    RuleSpec("shodan_vulns", MALICIOUS_KIND, (SHODAN, INTERNETDB), ("vulns",),
             ("shodan_vulns_weight", "shodan_vulns_full"), "known vulnerabilities (exposure)"),
    RuleSpec("nc_confusables", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("has_confusables",),
             ("nc_confusables_weight",), "look-alike (confusable) characters in the name"),
    RuleSpec("nc_lookalike", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("lookalike_of",),
             ("nc_lookalike_weight",),
             "a popular name one or two edits away, or embedded as a word"),
    RuleSpec("nc_random_label", MALICIOUS_KIND, (NETWORK_CONTEXT,),
             ("label_bigram_score", "label_length"),
             ("nc_random_weight", "nc_random_max_score", "nc_random_min_length"),
             "long label unlike ordinary words (character-bigram model; DGA-like)"),
    RuleSpec("nc_url_ip_host", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("url_host_is_ip",),
             ("nc_url_ip_host_weight",), "URL whose host is a bare IP address"),
    RuleSpec("nc_url_credentials", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("url_has_credentials",),
             ("nc_url_credentials_weight",), "URL carrying user:password@"),
    RuleSpec("nc_url_port", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("url_nonstandard_port",),
             ("nc_url_port_weight",), "URL on a non-standard port"),
    RuleSpec("nc_url_payload", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("normalized_value",),
             ("nc_url_payload_weight", "nc_url_payload_pattern"),
             "URL path of a bot payload drop (/bins/, .mips, .arm7, .sh ...)"),
    RuleSpec("st_new_domain", MALICIOUS_KIND, (SECURITYTRAILS,), ("first_seen",),
             ("st_new_domain_weight", "st_new_domain_days"),
             "current DNS records first seen shortly before the lookup (only without a "
             "registration date)"),
    RuleSpec("vt_harmless", BENIGN_KIND, (VIRUSTOTAL,),
             ("malicious", "harmless", "reputation", "creation_date", "popularity_rank"),
             ("vt_harmless_min", "vt_harmless_cap", "vt_harmless_min_age_days"),
             "0 malicious engines, many harmless, and the object is known: a positive "
             "reputation, or a name registered long ago or popular; never for URLs"),
    RuleSpec("abuse_whitelisted", BENIGN_KIND, (ABUSEIPDB,), ("is_whitelisted",),
             ("abuse_whitelisted_cap",), "AbuseIPDB whitelist"),
    RuleSpec("abuse_benign_usage", BENIGN_KIND, (ABUSEIPDB,), ("usage_type",),
             ("abuse_benign_usage_types", "abuse_benign_usage_cap"), "search engine spider"),
    RuleSpec("gn_riot", BENIGN_KIND, (GREYNOISE,), ("riot", "trust_level", "name"),
             ("gn_riot_trust1_cap", "gn_riot_trust2_cap", "gn_riot_community_cap"),
             "GreyNoise RIOT (known business service): trust level 1 or 2, or Community's "
             "riot without a trust level; 3 is a label only"),
    RuleSpec("gn_benign", BENIGN_KIND, (GREYNOISE,), ("classification",), ("gn_benign_cap",),
             "GreyNoise classification benign (known research scanner)"),
    RuleSpec("special_use", BENIGN_KIND, (NETWORK_CONTEXT,), ("is_special_use", "range_name"),
             ("special_use_cap",), "private, reserved or special-use address or name"),
    RuleSpec("known_resolver", BENIGN_KIND, (NETWORK_CONTEXT,), ("normalized_value",),
             ("resolver_cap",), "a well-known public DNS resolver (shipped list)"),
    RuleSpec("popular_name", BENIGN_KIND, (NETWORK_CONTEXT, VIRUSTOTAL),
             ("registrable_domain", "popularity_rank"), ("popular_rank_max", "popular_cap"),
             "a popular name: shipped list or VirusTotal popularity rank"),
    RuleSpec("st_top_rank", BENIGN_KIND, (SECURITYTRAILS,), ("alexa_rank",),
             ("st_top_rank_max", "st_top_rank_cap"), "popular domain (weak, rankings stale)"),
    RuleSpec("shared_infra", SHARED_KIND, (NETWORK_CONTEXT, ABUSEIPDB, SHODAN, INTERNETDB),
             ("public_suffix", "usage_type", "tags"),
             ("shared_infra_cap", "abuse_shared_usage_types"),
             "CDN or cloud (shipped names, AbuseIPDB usage type, Shodan tags): at most "
             "suspicious unless another provider corroborates"),
    RuleSpec("label", LABEL_KIND, (ABUSEIPDB, GREYNOISE, VIRUSTOTAL, SHODAN, INTERNETDB),
             ("is_tor", "noise", "tags"), (),
             "Tor exit, anonymiser, scanner, cloud, CDN: shown, never scored"),
    # The community and abuse.ch sources (issue 19); abuse.ch's three lists are one witness.
    RuleSpec("urlhaus_listed", MALICIOUS_KIND, (URLHAUS,),
             ("url_status", "online_url_count", "url_count", "signatures"),
             ("urlhaus_url_online_weight", "urlhaus_url_offline_weight",
              "urlhaus_host_online_weight", "urlhaus_host_offline_weight",
              "urlhaus_payload_weight"),
             "URLhaus lists the URL (online or taken down), malware URLs on the host, or the "
             "file as a payload it downloaded", witness=ABUSE_CH),
    RuleSpec("threatfox_ioc", MALICIOUS_KIND, (THREATFOX,),
             ("max_confidence", "threat_types", "malware", "last_seen"),
             ("threatfox_weight", "threatfox_half_life_days"),
             "a ThreatFox IOC (botnet C2, payload delivery, payload): confidence_level / 100, "
             "halved every threatfox_half_life_days since last seen", witness=ABUSE_CH),
    RuleSpec("malwarebazaar_sample", MALICIOUS_KIND, (MALWAREBAZAAR,), ("signature",),
             ("malwarebazaar_signature_weight", "malwarebazaar_weight"),
             "a MalwareBazaar sample (with its family when it has one)", witness=ABUSE_CH),
    RuleSpec("otx_pulses", MALICIOUS_KIND, (OTX,),
             ("pulse_count", "malware_families", "adversaries", "latest_pulse", "whitelisted"),
             ("otx_pulse_weight", "otx_pulses_full", "otx_named_weight", "otx_stale_days"),
             "OTX pulses listing it (log scale), or naming a family or adversary; half when "
             "the latest pulse is stale; never when OTX's validation vouches for it"),
    RuleSpec("crowdsec_reputation", MALICIOUS_KIND, (CROWDSEC,), ("reputation", "behaviors"),
             ("crowdsec_malicious_weight", "crowdsec_suspicious_weight"),
             "CrowdSec reputation malicious or suspicious (its behaviours shown)"),
    RuleSpec("otx_whitelisted", BENIGN_KIND, (OTX,), ("whitelisted", "validation"),
             ("otx_whitelisted_cap",), "OTX validation: whitelisted or a popular name"),
    RuleSpec("crowdsec_safe", BENIGN_KIND, (CROWDSEC,), ("reputation",), ("crowdsec_safe_cap",),
             "CrowdSec reputation safe (a known benign service)"),
    RuleSpec("crowdsec_false_positive", SHARED_KIND, (CROWDSEC,), ("false_positives",),
             ("shared_infra_cap",),
             "CrowdSec false-positive category (CDN, crawler, ...): at most suspicious unless "
             "another provider corroborates"),
)
RULE_NAMES = tuple(spec.name for spec in RULES)
_SPECS = {spec.name: spec for spec in RULES}


@dataclass
class Hit:
    """Where one rule fired: row positions and, per row, amount, value JSON and phrase."""

    rule: str
    kind: str
    provider: str
    field: str
    rows: np.ndarray
    amount: np.ndarray
    value: pa.Array  # JSON text per row
    phrase: pa.Array
    witness: str = ""


def evaluate(view: View, weights: ScoringWeights) -> list[Hit]:
    """Every rule's hits, in RULES order (malicious first, then caps, then labels)."""
    hits: list[Hit] = []
    for rule in _RULE_FUNCTIONS:
        hits.extend(hit for hit in rule(view, weights) if hit.rows.size)
    order = {name: i for i, name in enumerate(RULE_NAMES)}
    return sorted(hits, key=lambda hit: (order[hit.rule], hit.provider))


# Text per fired row: one string for all, an Arrow array, or a function of the fired rows
# (`...`: the rules bind loop variables as lambda defaults, `lambda r, first=first: ...`).
HitText: TypeAlias = str | pa.Array | Callable[..., Any]


def _hit(spec_name: str, provider: str, field: str, mask: npt.ArrayLike, amount: npt.ArrayLike,
         value: HitText, phrase: HitText) -> Hit:
    """`value` and `phrase` are text or functions of the fired rows (built only for those)."""
    rows = np.flatnonzero(mask)
    spec = _SPECS[spec_name]
    amount = np.asarray(amount, dtype=float)
    amount = np.full(rows.size, float(amount)) if amount.ndim == 0 else amount[rows]

    def text(source: HitText) -> pa.Array:
        made = source(rows) if callable(source) else source
        return const(made, rows.size) if isinstance(made, str) else made

    witness = spec.witness or (SHODAN if provider == INTERNETDB else provider)
    return Hit(spec_name, spec.kind, provider, field, rows, amount, text(value), text(phrase),
               witness)


def _plural(counts: np.ndarray, singular: str, plural: str) -> pa.Array:
    return where(counts == 1, singular, plural)


def _virustotal(v: View, w: ScoringWeights) -> list[Hit]:
    p = VIRUSTOTAL
    if not v.has(p, "malicious"):
        return []
    malicious, suspicious = v.num(p, "malicious"), v.num(p, "suspicious")
    harmless, undetected = v.num(p, "harmless"), v.num(p, "undetected")
    total = (np.nan_to_num(malicious) + np.nan_to_num(suspicious) + np.nan_to_num(harmless)
             + np.nan_to_num(undetected))
    engines = np.nan_to_num(malicious)
    ratio = engines / np.maximum(total, 1)
    strong = engines >= w.vt_min_engines
    full = np.clip(np.minimum(engines / w.vt_engines_full, ratio / w.vt_ratio_full), 0, 1)
    p_malicious = np.where(strong, np.maximum(w.vt_malicious_weight * full,
                                              engines * w.vt_weak_per_engine),
                           np.minimum(engines * w.vt_weak_per_engine, w.vt_malicious_weight))
    weak_note = f" (below the {w.vt_min_engines}-engine minimum)"
    hits = [_hit("vt_malicious", p, "malicious", engines > 0, p_malicious,
                 lambda r: ints(engines[r]),
                 lambda r: cat("VirusTotal ", ints(engines[r]), "/", ints(total[r]),
                               _plural(engines[r], " engine", " engines"), " malicious (",
                               decimal1(100 * ratio[r]), "%)", where(strong[r], "", weak_note)))]
    count = np.nan_to_num(suspicious)
    hits.append(_hit("vt_suspicious", p, "suspicious", count > 0,
                     w.vt_suspicious_weight * np.minimum(1, count / w.vt_suspicious_full),
                     lambda r: ints(count[r]),
                     lambda r: cat("VirusTotal ", ints(count[r]),
                                   _plural(count[r], " engine", " engines"), " suspicious")))
    reputation = v.num(p, "reputation")
    negative = np.nan_to_num(-reputation)
    hits.append(_hit("vt_reputation", p, "reputation", negative > 0,
                     w.vt_reputation_weight * np.minimum(1, negative / w.vt_reputation_full),
                     lambda r: ints(reputation[r]),
                     lambda r: cat("VirusTotal community reputation ", ints(reputation[r]))))
    votes_bad, votes_good = v.num(p, "votes_malicious"), v.num(p, "votes_harmless")
    margin = np.nan_to_num(votes_bad) - np.nan_to_num(votes_good)
    hits.append(_hit("vt_votes", p, "votes_malicious", margin > 0,
                     w.vt_votes_weight * np.minimum(1, margin / w.vt_votes_full),
                     lambda r: ints(votes_bad[r]),
                     lambda r: cat("VirusTotal community votes ", ints(votes_bad[r]),
                                   " malicious / ", ints(np.nan_to_num(votes_good[r])),
                                   " harmless")))
    keywords = re.compile("|".join(rf"\b{re.escape(k)}\b" for k in w.vt_category_keywords), re.I)
    excluded = re.compile("|".join(rf"\b{re.escape(k)}\b" for k in w.vt_category_excluded)
                          or r"(?!)", re.I)

    def malice(s: pd.Series) -> pd.Series:
        text_values = s.astype(str)
        return (text_values.str.contains(keywords, regex=True)
                & ~text_values.str.contains(excluded, regex=True))

    matched, code, categories = _first_codes(v, p, "categories", malice)
    category_json = json_text(categories)
    hits.append(_hit("vt_category", p, "categories", matched, w.vt_category_weight,
                     _by_code(category_json, code),
                     _by_code(cat("VirusTotal category ", category_json), code)))
    age = _age_days(v, p, "creation_date")
    very_young = age <= w.very_young_days
    hits.append(_hit("young_name", p, "creation_date", age <= w.young_days,
                     np.where(very_young, w.very_young_weight, w.young_weight),
                     lambda r: ints(v.num(p, "creation_date")[r]),
                     lambda r: cat("registered ", ints(np.maximum(age[r], 0)),
                                   _plural(np.maximum(age[r], 0), " day", " days"),
                                   " before the lookup (VirusTotal creation_date)")))
    rank = v.num(p, "popularity_rank")
    is_name = v.isin("entity_type", NAME_TYPES)
    known = ((reputation > 0) & ~is_name) | (is_name & (age >= w.vt_harmless_min_age_days)) | (
        rank <= w.popular_rank_max)
    clean = (v.ok(p) & (malicious == 0) & (np.nan_to_num(harmless) >= w.vt_harmless_min)
             & ~(reputation < 0) & known & ~v.equals("entity_type", "Url"))
    hits.append(_hit("vt_harmless", p, "harmless", clean, w.vt_harmless_cap,
                     lambda r: ints(harmless[r]),
                     lambda r: cat("VirusTotal 0/", ints(total[r]), " engines malicious, ",
                                   ints(harmless[r]), " harmless")))
    hits.append(_label_tags(v, p))
    return hits


def _abuseipdb(v: View, w: ScoringWeights) -> list[Hit]:
    p = ABUSEIPDB
    if not v.has(p):
        return []
    whitelisted = v.flag(p, "is_whitelisted")
    confidence = np.where(whitelisted, 0, np.nan_to_num(v.num(p, "abuse_confidence_score")))
    reports = np.nan_to_num(v.num(p, "total_reports"))
    users = np.nan_to_num(v.num(p, "num_distinct_users"))
    reporters = np.minimum(1, np.log1p(users) / np.log1p(w.abuse_reporters_full))
    last = _age_days(v, p, "last_reported_at", rows=confidence > 0)
    decay = np.where(np.isnan(last), 1.0, 0.5 ** (np.maximum(last, 0) / w.abuse_half_life_days))
    weak = {int(c) for c in w.abuse_weak_categories}
    with_strong, _ = _first_item(v, p, "categories",
                                 lambda s: ~pd.to_numeric(s, errors="coerce").isin(weak))
    any_category, _ = _first_item(v, p, "categories", lambda s: s.notna())
    factor = np.where(any_category & ~with_strong, w.abuse_weak_only_factor, 1.0)
    amount = (w.abuse_confidence_weight * np.clip(confidence / 100, 0, 1) * reporters * decay
              * factor)
    last_text = np.where(np.isnan(last), 0, np.maximum(last, 0))

    def confidence_phrase(r: np.ndarray) -> pa.Array:
        return cat("AbuseIPDB confidence ", ints(confidence[r]), " from ", ints(reports[r]),
                   _plural(reports[r], " report", " reports"), " by ", ints(users[r]),
                   _plural(users[r], " user", " users"),
                   where(np.isnan(last[r]), "", cat(", last report ", ints(last_text[r]),
                                                    _plural(last_text[r], " day", " days"),
                                                    " before the lookup")),
                   where(factor[r] < 1, " (port scans and web bots only)", ""))

    hits = [_hit("abuse_confidence", p, "abuse_confidence_score", (confidence > 0) & (amount > 0),
                 amount, lambda r: ints(confidence[r]), confidence_phrase)]
    strong = {int(c) for c in w.abuse_strong_categories}
    matched, code, categories = _first_codes(
        v, p, "categories", lambda s: pd.to_numeric(s, errors="coerce").isin(strong))
    ids = pd.to_numeric(pd.Series(categories, dtype=object), errors="coerce")
    titles = ids.map(ABUSE_CATEGORY_NAMES).fillna("?").to_numpy(dtype=object)
    category_phrase = cat("AbuseIPDB category ", ints(ids.to_numpy(float)), " (", titles, ")")
    hits.append(_hit("abuse_category", p, "categories", matched & ~whitelisted,
                     w.abuse_category_weight * decay, _by_code(json_text(categories), code),
                     _by_code(category_phrase, code)))
    hits.append(_hit("abuse_whitelisted", p, "is_whitelisted", whitelisted,
                     w.abuse_whitelisted_cap, "true", "AbuseIPDB whitelisted"))
    usage_codes, usages = v.codes(column(p, "usage_type"))  # fired rows have a usage type
    usage_json = json_text(usages)
    for rule, kinds, cap in (("abuse_benign_usage", w.abuse_benign_usage_types,
                              w.abuse_benign_usage_cap),
                             ("shared_infra", w.abuse_shared_usage_types, w.shared_infra_cap)):
        hits.append(_hit(rule, p, "usage_type", v.isin(column(p, "usage_type"), kinds) & v.ok(p),
                         cap, _by_code(usage_json, usage_codes),
                         _by_code(cat("AbuseIPDB usage type ", usage_json), usage_codes)))
    hits.append(_hit("label", p, "is_tor", v.flag(p, "is_tor"), 0.0, "true",
                     "Tor exit (AbuseIPDB)"))
    return hits


def _greynoise(v: View, w: ScoringWeights) -> list[Hit]:
    p = GREYNOISE
    if not v.has(p):
        return []
    classification = v.text(p, "classification")
    ok = v.ok(p)

    def classified(value: str) -> np.ndarray:  # compared once per distinct value
        return v.equals(column(p, "classification"), value) & ok

    unknown = ~ok | (v.codes(column(p, "classification"))[0] < 0) | classified("unknown")
    weight = np.select([classified("malicious"), classified("suspicious")],
                       [w.gn_malicious_weight, w.gn_suspicious_weight], 0.0)
    name = v.text(p, "name")

    def name_note(rows: np.ndarray) -> pa.Array:
        names = name[rows]
        named = ~pd.isna(names) & (names != "unknown") & (names != "")
        return where(named, cat(" (", np.where(named, names, ""), ")"), "")

    trust = v.text(p, "trust_level")
    # The trust level's cap and note per distinct level ("" for none), taken by row.
    trust_codes, levels = v.codes(column(p, "trust_level"))
    level = np.where(ok & (trust_codes >= 0), trust_codes, len(levels))
    trust_text = np.append(np.where(pd.isna(levels), "", levels).astype(str), "").astype(object)
    cap = np.select([trust_text == "1", trust_text == "2", trust_text == ""],
                    [w.gn_riot_trust1_cap, w.gn_riot_trust2_cap, w.gn_riot_community_cap],
                    np.inf)[level]
    trust_note = where(trust_text == "", " (Community: no trust level)",
                       cat(" trust level ", trust_text))
    return [
        _hit("gn_classification", p, "classification", weight > 0, weight,
             lambda r: json_text(classification[r]),
             lambda r: cat("GreyNoise classifies it ", classification[r], name_note(r))),
        _hit("gn_noise_unknown", p, "noise", v.flag(p, "noise") & unknown,
             w.gn_noise_unknown_weight, "true",
             "GreyNoise sees it scanning the internet (classification unknown)"),
        _hit("gn_riot", p, "trust_level", v.flag(p, "riot") & ~np.isinf(cap), cap,
             lambda r: json_text(trust[r]),
             lambda r: cat("GreyNoise RIOT", trust_note.take(pa.array(level[r])), name_note(r))),
        _hit("gn_benign", p, "classification", classified("benign"), w.gn_benign_cap,
             '"benign"', lambda r: cat("GreyNoise classifies it benign", name_note(r))),
        _hit("label", p, "noise", v.flag(p, "noise"), 0.0, "true",
             "scanner (GreyNoise sees it scanning the internet)"),
    ]


def _shodan(v: View, w: ScoringWeights) -> list[Hit]:
    hits: list[Hit] = []
    tags = {t.casefold() for t in w.shodan_malicious_tags}
    taken_tag = np.zeros(v.size, dtype=bool)
    taken_vulns = np.zeros(v.size, dtype=bool)
    taken_shared = np.zeros(v.size, dtype=bool)
    for p in (SHODAN, INTERNETDB):  # the host API first: it wins when both report
        if not v.has(p):
            continue
        label = PROVIDER_LABELS[p]
        matched, code, values = _first_codes(v, p, "tags",
                                             lambda s: s.astype(str).str.casefold().isin(tags))
        matched &= ~taken_tag
        taken_tag |= matched
        value_json = json_text(values)
        hits.append(_hit("shodan_tag", p, "tags", matched, w.shodan_tag_weight,
                         _by_code(value_json, code),
                         _by_code(cat(label, " tag ", value_json), code)))
        count = _item_count(v, p, "vulns")
        exposed = (count > 0) & ~taken_vulns
        taken_vulns |= exposed
        hits.append(_hit("shodan_vulns", p, "vulns", exposed,
                         w.shodan_vulns_weight * np.minimum(1, count / w.shodan_vulns_full),
                         lambda r, count=count: ints(count[r]),
                         lambda r, count=count, label=label: cat(
                             ints(count[r]), _plural(count[r], " known vulnerability",
                                                     " known vulnerabilities"),
                             " exposed (", label, ")")))
        shared, code, values = _first_codes(
            v, p, "tags", lambda s: s.astype(str).str.casefold().isin({"cdn", "cloud"}))
        shared &= ~taken_shared
        taken_shared |= shared
        value_json = json_text(values)
        hits.append(_hit("shared_infra", p, "tags", shared, w.shared_infra_cap,
                         _by_code(value_json, code),
                         _by_code(cat(label, " tag ", value_json), code)))
        hits.append(_label_tags(v, p))
    return hits


def _label_tags(v: View, p: str) -> Hit:
    """The first provider tag that is a labelled fact (Tor, VPN, proxy, scanner, cloud, CDN)."""
    matched, code, tags = _first_codes(
        v, p, "tags", lambda s: s.astype(str).str.casefold().isin(set(LABEL_TAGS)))
    labels = pd.Series(tags, dtype=object).astype(str).str.casefold().map(LABEL_TAGS).fillna(
        "").to_numpy(dtype=object)
    return _hit("label", p, "tags", matched, 0.0, _by_code(json_text(tags), code),
                _by_code(cat(labels, " (", PROVIDER_LABELS[p], " tag)"), code))


def _network_context(v: View, w: ScoringWeights) -> list[Hit]:
    p = NETWORK_CONTEXT
    if not v.has(p):
        return []
    bigram, length = v.num(p, "label_bigram_score"), v.num(p, "label_length")
    random_label = (bigram <= w.nc_random_max_score) & (length >= w.nc_random_min_length)
    range_name = v.text(p, "range_name")

    def range_text(rows: np.ndarray) -> np.ndarray:  # only for the special-use rows
        return np.where(pd.isna(range_name[rows]), "special-use", range_name[rows]).astype(object)

    # A look-alike's texts made once per distinct popular name, taken by row.
    lookalike_codes, lookalikes = v.codes(column(p, "lookalike_of"))
    imitates = v.ok(p) & (lookalike_codes >= 0)
    is_url = v.equals("entity_type", "Url") & v.ok(p)
    payload = np.zeros(v.size, dtype=bool)
    if is_url.any():
        urls = v.arrow("normalized_value").take(pa.array(np.flatnonzero(is_url)))
        paths = pc.replace_substring_regex(urls, r"[?#].*$", "")
        found = pc.match_substring_regex(paths, w.nc_url_payload_pattern, ignore_case=True)
        payload[np.flatnonzero(is_url)] = found.fill_null(False).to_numpy(zero_copy_only=False)
    return [
        _hit("nc_confusables", p, "has_confusables", v.flag(p, "has_confusables"),
             w.nc_confusables_weight, "true", "name uses look-alike (confusable) characters"),
        _hit("nc_lookalike", p, "lookalike_of", imitates, w.nc_lookalike_weight,
             _by_code(json_text(lookalikes), lookalike_codes),
             _by_code(cat("name imitates the popular name ", lookalikes), lookalike_codes)),
        _hit("nc_random_label", p, "label_bigram_score", random_label, w.nc_random_weight,
             lambda r: decimal1(bigram[r]),
             lambda r: cat("random-looking label (", ints(length[r]),
                           " characters unlike ordinary words)")),
        _hit("nc_url_ip_host", p, "url_host_is_ip", v.flag(p, "url_host_is_ip"),
             w.nc_url_ip_host_weight, "true", "URL host is a bare IP address"),
        _hit("nc_url_credentials", p, "url_has_credentials", v.flag(p, "url_has_credentials"),
             w.nc_url_credentials_weight, "true", "URL carries credentials"),
        _hit("nc_url_port", p, "url_nonstandard_port", v.flag(p, "url_nonstandard_port"),
             w.nc_url_port_weight, "true", "URL uses a non-standard port"),
        _hit("nc_url_payload", p, "normalized_value", payload, w.nc_url_payload_weight, "true",
             "URL path of a bot payload drop"),
        _hit("special_use", p, "is_special_use", v.special_use(), w.special_use_cap,
             lambda r: json_text(range_text(r)),
             lambda r: cat("special-use address or name (", range_text(r), ")")),
        *_infrastructure(v, w),
    ]


def _infrastructure(v: View, w: ScoringWeights) -> list[Hit]:
    """Well-known resolvers, popular names and shared (CDN, cloud) names, from the shipped
    lists; each list is compared once per distinct value."""
    p = NETWORK_CONTEXT
    known = names.infrastructure()
    ok = v.ok(p)
    value = v.arrow("normalized_value")
    resolver = ok & pc.is_in(value, value_set=pa.array(known["resolvers"], value.type)).fill_null(
        False).to_numpy(zero_copy_only=False)
    domain = v.text(p, "registrable_domain")
    popular = ok & v.isin(column(p, "registrable_domain"), known["popular_names"])
    rank = v.num(VIRUSTOTAL, "popularity_rank")
    ranked = ~popular & (rank <= w.popular_rank_max)
    suffix_codes, suffixes = v.codes(column(p, "public_suffix"))
    domain_codes, domains = v.codes(column(p, "registrable_domain"))
    shared_of = {name: kind for kind, listed in known["shared"].items() for name in listed}

    def kind_of(values: np.ndarray) -> np.ndarray:
        return np.array([next((k for n, k in shared_of.items()
                               if isinstance(x, str) and (x == n or x.endswith("." + n))), "")
                         for x in values] + [""], dtype=object)

    kind = kind_of(suffixes)[suffix_codes]
    kind = np.where(kind == "", kind_of(domains)[domain_codes], kind)
    shared = ok & (kind != "")
    return [
        _hit("known_resolver", p, "normalized_value", resolver, w.resolver_cap, "true",
             "a well-known public DNS resolver"),
        _hit("popular_name", p, "registrable_domain", popular, w.popular_cap,
             lambda r: json_text(domain[r]),
             lambda r: cat("popular name ", domain[r])),
        _hit("popular_name", VIRUSTOTAL, "popularity_rank", ranked, w.popular_cap,
             lambda r: ints(rank[r]),
             lambda r: cat("VirusTotal popularity rank ", ints(rank[r]))),
        _hit("shared_infra", p, "public_suffix", shared, w.shared_infra_cap,
             lambda r: json_text(kind[r]),
             lambda r: cat("shared ", kind[r], " name (", domain[r], ")")),
    ]


def _securitytrails(v: View, w: ScoringWeights) -> list[Hit]:
    p = SECURITYTRAILS
    if not v.has(p):
        return []
    first_seen = v.text(p, "first_seen")
    age = _age_days(v, p, "first_seen")
    registered = ~np.isnan(v.num(VIRUSTOTAL, "creation_date"))
    rank = v.num(p, "alexa_rank")
    popular = (rank > 0) & (rank <= w.st_top_rank_max)
    return [
        _hit("st_new_domain", p, "first_seen",
             v.ok(p) & (age <= w.st_new_domain_days) & ~registered,
             w.st_new_domain_weight, lambda r: json_text(first_seen[r]),
             lambda r: cat("DNS records first seen ", first_seen[r], ", ",
                           ints(np.maximum(age[r], 0)), " days before the lookup")),
        _hit("st_top_rank", p, "alexa_rank", popular, w.st_top_rank_cap,
             lambda r: ints(rank[r]),
             lambda r: cat("SecurityTrails popularity rank ", ints(rank[r]))),
    ]


def _urlhaus(v: View, w: ScoringWeights) -> list[Hit]:
    p = URLHAUS
    if not v.has(p, "url_status"):
        return []
    ok = v.ok(p)
    is_url, is_file = v.equals("entity_type", "Url") & ok, v.equals("entity_type", "StixFile") & ok
    is_host = ok & ~is_url & ~is_file
    status = v.text(p, "url_status")
    online = np.nan_to_num(v.num(p, "online_url_count"))
    count = np.nan_to_num(v.num(p, "url_count"))
    _, family = _first_item(v, p, "signatures", lambda s: s.notna())
    url_online = is_url & (status == "online")
    host_listed = is_host & (count > 0)
    amount = np.select(
        [url_online, is_url, host_listed & (online > 0), host_listed, is_file],
        [w.urlhaus_url_online_weight, w.urlhaus_url_offline_weight, w.urlhaus_host_online_weight,
         w.urlhaus_host_offline_weight, w.urlhaus_payload_weight], 0.0)

    def phrase(r: np.ndarray) -> pa.Array:
        named = pd.notna(family[r])
        what = np.select([is_url[r], is_file[r]], ["URLhaus: malware URL ", "URLhaus: payload "],
                         "URLhaus: ").astype(object)
        state = where(is_url[r], cat(np.where(pd.isna(status[r]), "listed", status[r]).astype(
            object)), where(is_file[r], "served by malware URLs", cat(
                ints(count[r]), _plural(count[r], " malware URL", " malware URLs"),
                " on this host (", ints(online[r]), " online)")))
        return cat(what, state, where(named, cat(" (", np.where(named, family[r], ""
                                                                ).astype(object), ")"), ""))

    return [_hit("urlhaus_listed", p, "url_status", amount > 0, amount,
                 lambda r: json_text(np.where(is_url[r], status[r], count[r])), phrase)]


def _threatfox(v: View, w: ScoringWeights) -> list[Hit]:
    p = THREATFOX
    if not v.has(p, "max_confidence"):
        return []
    confidence = v.num(p, "max_confidence")
    listed = v.ok(p) & (np.nan_to_num(v.num(p, "ioc_count")) > 0)
    age = _age_days(v, p, "last_seen", rows=listed)
    decay = np.where(np.isnan(age), 1.0, 0.5 ** (np.maximum(age, 0) / w.threatfox_half_life_days))
    level = np.where(np.isnan(confidence), 50, confidence)
    amount = np.where(listed, w.threatfox_weight * np.clip(level / 100, 0, 1) * decay, 0.0)
    _, threat = _first_item(v, p, "threat_types", lambda s: s.notna())
    _, malware = _first_item(v, p, "malware", lambda s: s.notna())

    def phrase(r: np.ndarray) -> pa.Array:
        named = pd.notna(malware[r])
        return cat("ThreatFox: ", np.where(pd.isna(threat[r]), "IOC", threat[r]).astype(object),
                   where(named, cat(" of ", np.where(named, malware[r], "").astype(object)), ""),
                   " (confidence ", ints(level[r]), ")")

    return [_hit("threatfox_ioc", p, "max_confidence", amount > 0, amount,
                 lambda r: ints(level[r]), phrase)]


def _malwarebazaar(v: View, w: ScoringWeights) -> list[Hit]:
    p = MALWAREBAZAAR
    if not v.has(p, "signature"):
        return []
    ok = v.ok(p)
    signature = v.text(p, "signature")
    named = ok & ~pd.isna(signature)
    amount = np.where(named, w.malwarebazaar_signature_weight,
                      np.where(ok, w.malwarebazaar_weight, 0.0))
    return [_hit("malwarebazaar_sample", p, "signature", amount > 0, amount,
                 lambda r: json_text(signature[r]),
                 lambda r: where(named[r], cat("MalwareBazaar: sample of ", np.where(
                     named[r], signature[r], "").astype(object)),
                     "MalwareBazaar: known malware sample"))]


def _otx(v: View, w: ScoringWeights) -> list[Hit]:
    p = OTX
    if not v.has(p, "pulse_count"):
        return []
    count = np.nan_to_num(v.num(p, "pulse_count"))
    whitelisted = v.flag(p, "whitelisted")
    family_named, family = _first_item(v, p, "malware_families", lambda s: s.notna())
    actor_named, actor = _first_item(v, p, "adversaries", lambda s: s.notna())
    listed = (count > 0) & ~whitelisted
    age = _age_days(v, p, "latest_pulse", rows=listed)
    stale = np.where(np.isnan(age), 1.0, np.where(age > w.otx_stale_days, 0.5, 1.0))
    by_count = w.otx_pulse_weight * np.minimum(1, np.log1p(count) / np.log1p(w.otx_pulses_full))
    named = family_named | actor_named
    amount = np.where(listed, np.maximum(by_count, np.where(named, w.otx_named_weight, 0)) * stale,
                      0.0)
    name = np.where(actor_named, actor, family)

    def phrase(r: np.ndarray) -> pa.Array:
        return cat("OTX: ", ints(count[r]), _plural(count[r], " pulse", " pulses"),
                   where(named[r], cat(" naming ", np.where(named[r], name[r], "").astype(object)),
                         ""))

    validation_named, check = _first_item(v, p, "validation", lambda s: s.notna())
    return [
        _hit("otx_pulses", p, "pulse_count", amount > 0, amount, lambda r: ints(count[r]), phrase),
        _hit("otx_whitelisted", p, "whitelisted", whitelisted, w.otx_whitelisted_cap, "true",
             lambda r: cat("OTX validation: ", np.where(validation_named[r], check[r],
                                                        "whitelisted").astype(object))),
    ]


def _crowdsec(v: View, w: ScoringWeights) -> list[Hit]:
    p = CROWDSEC
    if not v.has(p, "reputation"):
        return []
    reputation = v.text(p, "reputation")
    weight = np.select([reputation == "malicious", reputation == "suspicious"],
                       [w.crowdsec_malicious_weight, w.crowdsec_suspicious_weight], 0.0)
    behaved, behavior = _first_item(v, p, "behaviors", lambda s: s.notna())
    flagged, category = _first_item(v, p, "false_positives", lambda s: s.notna())
    return [
        _hit("crowdsec_reputation", p, "reputation", weight > 0, weight,
             lambda r: json_text(reputation[r]),
             lambda r: cat("CrowdSec reputation ", reputation[r],
                           where(behaved[r], cat(" (", np.where(behaved[r], behavior[r], ""
                                                               ).astype(object), ")"), ""))),
        _hit("crowdsec_safe", p, "reputation", reputation == "safe", w.crowdsec_safe_cap,
             '"safe"', "CrowdSec reputation safe"),
        _hit("crowdsec_false_positive", p, "false_positives", flagged, w.shared_infra_cap,
             lambda r: json_text(category[r]),
             lambda r: cat("CrowdSec false positive ", json_text(category[r]))),
    ]


_RULE_FUNCTIONS = (_virustotal, _abuseipdb, _greynoise, _shodan, _network_context,
                   _securitytrails, _urlhaus, _threatfox, _malwarebazaar, _otx, _crowdsec)


def _fetched_seconds(v: View, provider: str) -> np.ndarray:
    """Epoch seconds of each row's lookup (NaN without one)."""
    def load() -> np.ndarray:
        if not v.has(provider, "fetched_at"):
            return np.full(v.size, np.nan)
        stamps = v.frame[column(provider, "fetched_at")]
        if not isinstance(stamps.dtype, pd.DatetimeTZDtype):  # stored times need no parsing
            stamps = pd.to_datetime(stamps, utc=True, errors="coerce")
        # The array, not `stamps.dt`: the accessor is cached on the frame's own column, a
        # reference cycle that would hold the slice's buffers until the garbage collector runs.
        fetched = np.asarray(stamps.array.tz_convert(None), dtype="datetime64[ns]")
        seconds = fetched.astype(np.int64) / 1e9
        return np.where(np.isnat(fetched), np.nan, seconds)
    return v._memo(("fetched_seconds", provider), load)


def _age_days(v: View, provider: str, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Days from a field (epoch seconds, or an ISO date/time text) to the lookup; NaN where
    either is missing. `rows` limits the text parsing to the rows that need it."""
    age = np.full(v.size, np.nan)
    if not v.has(provider, name):
        return age
    fetched = _fetched_seconds(v, provider)
    values = v.frame[column(provider, name)]
    if pd.api.types.is_numeric_dtype(values.dtype):
        return (fetched - v.num(provider, name)) / 86400
    text_values = v.text(provider, name)
    wanted = ~pd.isna(text_values) if rows is None else rows & ~pd.isna(text_values)
    picked = np.flatnonzero(wanted)
    if picked.size:
        stamps = pd.to_datetime(pd.Series(text_values[picked], dtype=object), utc=True,
                                errors="coerce", format="ISO8601")
        parsed = stamps.dt.tz_convert(None).to_numpy("datetime64[ns]")
        seconds = np.where(np.isnat(parsed), np.nan, parsed.astype(np.int64) / 1e9)
        age[picked] = (fetched[picked] - seconds) / 86400
    return age


def vt_stale(v: View, w: ScoringWeights) -> np.ndarray:
    """Rows whose VirusTotal analysis is older than vt_stale_days at lookup time."""
    return _age_days(v, VIRUSTOTAL, "last_analysis_date") > w.vt_stale_days


def _first_item(v: View, provider: str, name: str, predicate: Callable[[pd.Series], pd.Series],
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a list item satisfying `predicate`, and that first item per row. The
    predicate sees each distinct item once."""
    matched, code, values = _first_codes(v, provider, name, predicate)
    first = np.full(v.size, None, dtype=object)
    first[matched] = values[code[matched]]
    return matched, first


def _first_codes(v: View, provider: str, name: str, predicate: Callable[[pd.Series], pd.Series],
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_first_item` as codes: the rows matched, per row its first item's index into the
    distinct items (-1 for none), and the distinct items; texts of an item are then made once
    per distinct item and taken by code, not made again for every row."""
    items = v.items(provider, name)
    code = np.full(v.size, -1, dtype=np.int64)
    if not items.rows.size:
        return code >= 0, code, items.values
    accepted = predicate(pd.Series(items.values, dtype=object)).fillna(False).to_numpy(bool)
    hit = accepted[items.codes]
    rows, codes = items.rows[hit], items.codes[hit]
    leading = np.ones(rows.size, dtype=bool)
    leading[1:] = rows[1:] != rows[:-1]
    code[rows[leading]] = codes[leading]
    return code >= 0, code, items.values


def _by_code(texts: pa.Array, code: np.ndarray) -> Callable[[np.ndarray], pa.Array]:
    """The text of each fired row's item, from one text per distinct item."""
    return lambda rows: texts.take(pa.array(code[rows]))


def _item_count(v: View, provider: str, name: str) -> np.ndarray:
    return np.bincount(v.items(provider, name).rows, minlength=v.size).astype(float)


