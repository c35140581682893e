"""The evidence rules of the scoring model, each a set of column operations over the frame.

A rule reads `<provider>__<field>` columns of merged_enrichment (only where that provider's
status is ok and the observable is ok) and returns a `Hit`: the rows where it fired, the
amount per row (probability of malice for malicious rules, a score cap for benign ones), the
value that made it fire (JSON text) and a short human phrase. `RULES` lists them for the docs,
the lineage and the tests. Nothing here loops over rows in Python.
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

from cti_assets.providers.base import (
    ABUSEIPDB,
    GREYNOISE,
    INTERNETDB,
    NETWORK_CONTEXT,
    SECURITYTRAILS,
    SHODAN,
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
from cti_assets.scoring.weights import ScoringWeights

MALICIOUS_KIND, BENIGN_KIND = "malicious", "benign"


ABUSE_CATEGORY_NAMES = {
    1: "DNS Compromise", 2: "DNS Poisoning", 3: "Fraud Orders", 4: "DDoS Attack",
    5: "FTP Brute-Force", 6: "Ping of Death", 7: "Phishing", 8: "Fraud VoIP", 9: "Open Proxy",
    10: "Web Spam", 11: "Email Spam", 12: "Blog Spam", 13: "VPN IP", 14: "Port Scan",
    15: "Hacking", 16: "SQL Injection", 17: "Spoofing", 18: "Brute-Force", 19: "Bad Web Bot",
    20: "Exploited Host", 21: "Web App Attack", 22: "SSH", 23: "IoT Targeted",
}


@dataclass(frozen=True)
class RuleSpec:
    """One evidence rule, as documented: which provider fields it reads and its weights."""

    name: str
    kind: str  # MALICIOUS_KIND or BENIGN_KIND
    providers: tuple[str, ...]
    fields: tuple[str, ...]
    weights: tuple[str, ...]  # ScoringWeights attributes
    description: str


RULES: tuple[RuleSpec, ...] = (
    RuleSpec("vt_malicious", MALICIOUS_KIND, (VIRUSTOTAL,),
             ("malicious", "suspicious", "harmless", "undetected"),
             ("vt_malicious_weight", "vt_min_engines", "vt_weak_per_engine", "vt_engines_full",
              "vt_ratio_full"),
             "engines flagging malicious; full at vt_engines_full engines or vt_ratio_full of "
             "them; below vt_min_engines only vt_weak_per_engine per engine"),
    RuleSpec("vt_suspicious", MALICIOUS_KIND, (VIRUSTOTAL,), ("suspicious",),
             ("vt_suspicious_weight", "vt_suspicious_full"), "engines flagging suspicious"),
    RuleSpec("vt_reputation", MALICIOUS_KIND, (VIRUSTOTAL,), ("reputation",),
             ("vt_reputation_weight", "vt_reputation_full"), "negative community reputation"),
    RuleSpec("vt_votes", MALICIOUS_KIND, (VIRUSTOTAL,), ("votes_malicious", "votes_harmless"),
             ("vt_votes_weight", "vt_votes_full"), "more malicious than harmless votes"),
    RuleSpec("vt_category", MALICIOUS_KIND, (VIRUSTOTAL,), ("categories",),
             ("vt_category_weight", "vt_category_keywords"),
             "a vendor category containing a malice keyword"),
    RuleSpec("abuse_confidence", MALICIOUS_KIND, (ABUSEIPDB,),
             ("abuse_confidence_score", "total_reports"), ("abuse_confidence_weight",),
             "abuseConfidenceScore / 100"),
    RuleSpec("abuse_reporters", MALICIOUS_KIND, (ABUSEIPDB,), ("num_distinct_users",),
             ("abuse_reporters_weight", "abuse_reporters_full"), "distinct reporters"),
    RuleSpec("abuse_category", MALICIOUS_KIND, (ABUSEIPDB,), ("categories",),
             ("abuse_category_weight", "abuse_strong_categories"),
             "a strong report category (DDoS, phishing, exploited host, web app attack)"),
    RuleSpec("abuse_tor", MALICIOUS_KIND, (ABUSEIPDB,), ("is_tor",), ("abuse_tor_weight",),
             "Tor exit node (anonymiser)"),
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
    RuleSpec("nc_high_entropy", MALICIOUS_KIND, (NETWORK_CONTEXT,),
             ("label_entropy", "label_length"),
             ("nc_entropy_weight", "nc_entropy_min", "nc_entropy_min_length"),
             "long random-looking label (DGA-like)"),
    RuleSpec("nc_url_ip_host", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("url_host_is_ip",),
             ("nc_url_ip_host_weight",), "URL whose host is a bare IP address"),
    RuleSpec("nc_url_credentials", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("url_has_credentials",),
             ("nc_url_credentials_weight",), "URL carrying user:password@"),
    RuleSpec("nc_url_port", MALICIOUS_KIND, (NETWORK_CONTEXT,), ("url_nonstandard_port",),
             ("nc_url_port_weight",), "URL on a non-standard port"),
    RuleSpec("st_new_domain", MALICIOUS_KIND, (SECURITYTRAILS,), ("first_seen",),
             ("st_new_domain_weight", "st_new_domain_days"),
             "domain first seen shortly before the lookup"),
    RuleSpec("vt_harmless", BENIGN_KIND, (VIRUSTOTAL,), ("malicious", "harmless", "reputation"),
             ("vt_harmless_min", "vt_harmless_cap"),
             "0 malicious engines, many harmless, reputation not negative"),
    RuleSpec("abuse_whitelisted", BENIGN_KIND, (ABUSEIPDB,), ("is_whitelisted",),
             ("abuse_whitelisted_cap",), "AbuseIPDB whitelist"),
    RuleSpec("abuse_benign_usage", BENIGN_KIND, (ABUSEIPDB,), ("usage_type",),
             ("abuse_benign_usage_types", "abuse_benign_usage_cap"),
             "search engine spider or CDN"),
    RuleSpec("gn_riot", BENIGN_KIND, (GREYNOISE,), ("riot", "trust_level", "name"),
             ("gn_riot_trust1_cap", "gn_riot_trust2_cap"),
             "GreyNoise RIOT (known business service) with trust level 1 or 2"),
    RuleSpec("gn_benign", BENIGN_KIND, (GREYNOISE,), ("classification",), ("gn_benign_cap",),
             "GreyNoise classification benign (known research scanner)"),
    RuleSpec("special_use", BENIGN_KIND, (NETWORK_CONTEXT,), ("is_special_use", "range_name"),
             ("special_use_cap",), "private, reserved or special-use address or name"),
    RuleSpec("st_top_rank", BENIGN_KIND, (SECURITYTRAILS,), ("alexa_rank",),
             ("st_top_rank_max", "st_top_rank_cap"), "popular domain (weak, rankings stale)"),
)
RULE_NAMES = tuple(spec.name for spec in RULES)


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


def evaluate(view: View, weights: ScoringWeights) -> list[Hit]:
    """Every rule's hits, in RULES order (malicious first, then benign)."""
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
    kind = next(spec.kind for spec in RULES if spec.name == spec_name)
    amount = np.asarray(amount, dtype=float)
    amount = np.full(rows.size, float(amount)) if amount.ndim == 0 else amount[rows]

    def text(source: HitText) -> pa.Array:
        made = source(rows) if callable(source) else source
        return const(made, rows.size) if isinstance(made, str) else made

    return Hit(spec_name, kind, provider, field, rows, amount, text(value), text(phrase))


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
    full = np.clip(np.maximum(engines / w.vt_engines_full, ratio / w.vt_ratio_full), 0, 1)
    p_malicious = np.where(strong, w.vt_malicious_weight * full,
                           np.minimum(engines * w.vt_weak_per_engine, w.vt_malicious_weight))
    weak_note = f" (below the {w.vt_min_engines}-engine minimum)"
    hits = [_hit("vt_malicious", p, "malicious", engines > 0, p_malicious,
                 lambda r: ints(engines[r]),
                 lambda r: cat("VirusTotal ", ints(engines[r]), "/", ints(total[r]),
                               " engines malicious", where(strong[r], "", weak_note)))]
    count = np.nan_to_num(suspicious)
    hits.append(_hit("vt_suspicious", p, "suspicious", count > 0,
                     w.vt_suspicious_weight * np.minimum(1, count / w.vt_suspicious_full),
                     lambda r: ints(count[r]),
                     lambda r: cat("VirusTotal ", ints(count[r]), " engines suspicious")))
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
    matched, first = _first_item(v, p, "categories",
                                 lambda s: s.astype(str).str.contains(keywords, regex=True))
    hits.append(_hit("vt_category", p, "categories", matched, w.vt_category_weight,
                     lambda r: json_text(first[r]),
                     lambda r: cat("VirusTotal category ", json_text(first[r]))))
    clean = (v.ok(p) & (malicious == 0) & (np.nan_to_num(harmless) >= w.vt_harmless_min)
             & ~(reputation < 0))
    hits.append(_hit("vt_harmless", p, "harmless", clean, w.vt_harmless_cap,
                     lambda r: ints(harmless[r]),
                     lambda r: cat("VirusTotal 0/", ints(total[r]), " engines malicious, ",
                                   ints(harmless[r]), " harmless")))
    return hits


def _abuseipdb(v: View, w: ScoringWeights) -> list[Hit]:
    p = ABUSEIPDB
    if not v.has(p):
        return []
    confidence = np.nan_to_num(v.num(p, "abuse_confidence_score"))
    reports = v.num(p, "total_reports")
    users = np.nan_to_num(v.num(p, "num_distinct_users"))
    hits = [
        _hit("abuse_confidence", p, "abuse_confidence_score", confidence > 0,
             w.abuse_confidence_weight * np.clip(confidence / 100, 0, 1),
             lambda r: ints(confidence[r]),
             lambda r: cat("AbuseIPDB confidence ", ints(confidence[r]), " from ",
                           ints(reports[r]), " reports")),
        _hit("abuse_reporters", p, "num_distinct_users", users > 0,
             w.abuse_reporters_weight * np.minimum(1, users / w.abuse_reporters_full),
             lambda r: ints(users[r]),
             lambda r: cat("AbuseIPDB reports from ", ints(users[r]), " distinct reporters")),
    ]
    strong = {int(c) for c in w.abuse_strong_categories}
    matched, first = _first_item(v, p, "categories",
                                 lambda s: pd.to_numeric(s, errors="coerce").isin(strong))

    def category_phrase(rows: np.ndarray) -> pa.Array:
        ids = pd.to_numeric(pd.Series(first[rows], dtype=object), errors="coerce")
        names = ids.map(ABUSE_CATEGORY_NAMES).fillna("?").to_numpy(dtype=object)
        return cat("AbuseIPDB category ", ints(ids.to_numpy(float)), " (", names, ")")

    hits.append(_hit("abuse_category", p, "categories", matched, w.abuse_category_weight,
                     lambda r: json_text(first[r]), category_phrase))
    hits.append(_hit("abuse_tor", p, "is_tor", v.flag(p, "is_tor"), w.abuse_tor_weight, "true",
                     "Tor exit node (AbuseIPDB)"))
    hits.append(_hit("abuse_whitelisted", p, "is_whitelisted", v.flag(p, "is_whitelisted"),
                     w.abuse_whitelisted_cap, "true", "AbuseIPDB whitelisted"))
    usage = v.text(p, "usage_type")
    hits.append(_hit("abuse_benign_usage", p, "usage_type",
                     np.isin(usage, list(w.abuse_benign_usage_types)), w.abuse_benign_usage_cap,
                     lambda r: json_text(usage[r]),
                     lambda r: cat("AbuseIPDB usage type ", json_text(usage[r]))))
    return hits


def _greynoise(v: View, w: ScoringWeights) -> list[Hit]:
    p = GREYNOISE
    if not v.has(p):
        return []
    classification = v.text(p, "classification")
    unknown = pd.isna(classification) | (classification == "unknown")
    weight = np.select([classification == "malicious", classification == "suspicious"],
                       [w.gn_malicious_weight, w.gn_suspicious_weight], 0.0)
    name = v.text(p, "name")

    def name_note(rows: np.ndarray) -> pa.Array:
        names = name[rows]
        named = ~pd.isna(names) & (names != "unknown") & (names != "")
        return where(named, cat(" (", np.where(named, names, ""), ")"), "")

    trust = v.text(p, "trust_level")
    trust_text = np.where(pd.isna(trust), "", trust).astype(str).astype(object)
    cap = np.select([trust_text == "1", trust_text == "2"],
                    [w.gn_riot_trust1_cap, w.gn_riot_trust2_cap], np.inf)
    return [
        _hit("gn_classification", p, "classification", weight > 0, weight,
             lambda r: json_text(classification[r]),
             lambda r: cat("GreyNoise classifies it ", classification[r], name_note(r))),
        _hit("gn_noise_unknown", p, "noise", v.flag(p, "noise") & unknown,
             w.gn_noise_unknown_weight, "true",
             "GreyNoise sees it scanning the internet (classification unknown)"),
        _hit("gn_riot", p, "trust_level", v.flag(p, "riot") & ~np.isinf(cap), cap,
             lambda r: json_text(trust[r]),
             lambda r: cat("GreyNoise RIOT trust level ", trust_text[r], name_note(r))),
        _hit("gn_benign", p, "classification", classification == "benign", w.gn_benign_cap,
             '"benign"', lambda r: cat("GreyNoise classifies it benign", name_note(r))),
    ]


def _shodan(v: View, w: ScoringWeights) -> list[Hit]:
    hits: list[Hit] = []
    tags = {t.casefold() for t in w.shodan_malicious_tags}
    taken_tag = np.zeros(v.size, dtype=bool)
    taken_vulns = np.zeros(v.size, dtype=bool)
    for p in (SHODAN, INTERNETDB):  # the host API first: it wins when both report
        if not v.has(p):
            continue
        label = PROVIDER_LABELS[p]
        matched, first = _first_item(v, p, "tags",
                                     lambda s: s.astype(str).str.casefold().isin(tags))
        matched &= ~taken_tag
        taken_tag |= matched
        hits.append(_hit("shodan_tag", p, "tags", matched, w.shodan_tag_weight,
                         lambda r, first=first: json_text(first[r]),
                         lambda r, first=first, label=label: cat(label, " tag ",
                                                                 json_text(first[r]))))
        count = _item_count(v, p, "vulns")
        exposed = (count > 0) & ~taken_vulns
        taken_vulns |= exposed
        hits.append(_hit("shodan_vulns", p, "vulns", exposed,
                         w.shodan_vulns_weight * np.minimum(1, count / w.shodan_vulns_full),
                         lambda r, count=count: ints(count[r]),
                         lambda r, count=count, label=label: cat(
                             ints(count[r]), " known vulnerabilities exposed (", label, ")")))
    return hits


def _network_context(v: View, w: ScoringWeights) -> list[Hit]:
    p = NETWORK_CONTEXT
    if not v.has(p):
        return []
    entropy, length = v.num(p, "label_entropy"), v.num(p, "label_length")
    random_label = (entropy >= w.nc_entropy_min) & (length >= w.nc_entropy_min_length)
    range_name = v.text(p, "range_name")
    range_text = np.where(pd.isna(range_name), "special-use", range_name).astype(object)
    return [
        _hit("nc_confusables", p, "has_confusables", v.flag(p, "has_confusables"),
             w.nc_confusables_weight, "true", "name uses look-alike (confusable) characters"),
        _hit("nc_high_entropy", p, "label_entropy", random_label, w.nc_entropy_weight,
             lambda r: decimal1(entropy[r]),
             lambda r: cat("random-looking label (entropy ", decimal1(entropy[r]), ", ",
                           ints(length[r]), " characters)")),
        _hit("nc_url_ip_host", p, "url_host_is_ip", v.flag(p, "url_host_is_ip"),
             w.nc_url_ip_host_weight, "true", "URL host is a bare IP address"),
        _hit("nc_url_credentials", p, "url_has_credentials", v.flag(p, "url_has_credentials"),
             w.nc_url_credentials_weight, "true", "URL carries credentials"),
        _hit("nc_url_port", p, "url_nonstandard_port", v.flag(p, "url_nonstandard_port"),
             w.nc_url_port_weight, "true", "URL uses a non-standard port"),
        _hit("special_use", p, "is_special_use", v.special_use(), w.special_use_cap,
             lambda r: json_text(range_text[r]),
             lambda r: cat("special-use address or name (", range_text[r], ")")),
    ]


def _securitytrails(v: View, w: ScoringWeights) -> list[Hit]:
    p = SECURITYTRAILS
    if not v.has(p):
        return []
    first_seen = v.text(p, "first_seen")
    candidates = np.flatnonzero(~pd.isna(first_seen))
    age = np.full(v.size, np.nan)
    if candidates.size and column(p, "fetched_at") in v.frame.columns:
        seen = pd.to_datetime(pd.Series(first_seen[candidates], dtype=object), utc=True,
                              errors="coerce", format="mixed")
        fetched = pd.to_datetime(v.frame[column(p, "fetched_at")].iloc[candidates],
                                 utc=True, errors="coerce").reset_index(drop=True)
        age[candidates] = ((fetched - seen).dt.total_seconds() / 86400).to_numpy(
            dtype=float, na_value=np.nan)
    rank = v.num(p, "alexa_rank")
    popular = (rank > 0) & (rank <= w.st_top_rank_max)
    return [
        _hit("st_new_domain", p, "first_seen", v.ok(p) & (age <= w.st_new_domain_days),
             w.st_new_domain_weight, lambda r: json_text(first_seen[r]),
             lambda r: cat("domain first seen ", first_seen[r], ", ",
                           ints(np.maximum(age[r], 0)), " days before the lookup")),
        _hit("st_top_rank", p, "alexa_rank", popular, w.st_top_rank_cap,
             lambda r: ints(rank[r]),
             lambda r: cat("SecurityTrails popularity rank ", ints(rank[r]))),
    ]


_RULE_FUNCTIONS = (_virustotal, _abuseipdb, _greynoise, _shodan, _network_context,
                   _securitytrails)


def vt_stale(v: View, w: ScoringWeights) -> np.ndarray:
    """Rows whose VirusTotal analysis is older than vt_stale_days at lookup time."""
    if not v.has(VIRUSTOTAL, "last_analysis_date", "fetched_at"):
        return np.zeros(v.size, dtype=bool)
    analysed = v.num(VIRUSTOTAL, "last_analysis_date")
    fetched = pd.to_datetime(v.frame[column(VIRUSTOTAL, "fetched_at")], utc=True, errors="coerce")
    fetched_s = (fetched - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(
        dtype=float, na_value=np.nan)
    return (fetched_s - analysed) > w.vt_stale_days * 86400


def _first_item(v: View, provider: str, name: str, predicate: Callable[[pd.Series], pd.Series],
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a list item satisfying `predicate`, and that first item per row. The
    predicate sees each distinct item once."""
    items = v.items(provider, name)
    matched = np.zeros(v.size, dtype=bool)
    first = np.full(v.size, None, dtype=object)
    if not items.rows.size:
        return matched, first
    accepted = predicate(pd.Series(items.values, dtype=object)).fillna(False).to_numpy(bool)
    hit = accepted[items.codes]
    rows, codes = items.rows[hit], items.codes[hit]
    leading = np.ones(rows.size, dtype=bool)
    leading[1:] = rows[1:] != rows[:-1]
    matched[rows[leading]] = True
    first[rows[leading]] = items.values[codes[leading]]
    return matched, first


def _item_count(v: View, provider: str, name: str) -> np.ndarray:
    return np.bincount(v.items(provider, name).rows, minlength=v.size).astype(float)


