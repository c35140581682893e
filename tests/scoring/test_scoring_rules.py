"""One test per evidence rule: a one-row frame with only that signal, its contribution,
and the component that names it with the provider's raw digest."""

from __future__ import annotations

import pytest

from cti_assets.scoring.components import parse_components
from cti_assets.scoring.model import score_frame
from cti_assets.scoring.rules import LABEL_KIND, RULE_NAMES, RULES
from cti_assets.scoring.weights import REGISTRATION, ScoringWeights
from tests.scoring.scoring_factories import FETCHED_AT, Lookup, digest_of, merged_one

W = ScoringWeights()
EPOCH = int(FETCHED_AT.timestamp())

# (rule, provider, fields, entity type, probability the rule alone implies, expected value)
MALICIOUS_CASES = [
    ("vt_malicious", "virustotal", {"malicious": 23, "harmless": 40, "undetected": 8},
     "IPv4-Addr", W.vt_malicious_weight, 23),
    ("vt_malicious", "virustotal", {"malicious": 1, "undetected": 69},
     "IPv4-Addr", W.vt_weak_per_engine, 1),
    ("vt_suspicious", "virustotal", {"malicious": 0, "suspicious": 2, "undetected": 60},
     "Url", W.vt_suspicious_weight * 2 / W.vt_suspicious_full, 2),
    ("vt_reputation", "virustotal", {"reputation": -10},
     "Domain-Name", W.vt_reputation_weight * 10 / W.vt_reputation_full, -10),
    ("vt_votes", "virustotal", {"votes_malicious": 3, "votes_harmless": 1},
     "StixFile", W.vt_votes_weight * 2 / W.vt_votes_full, 3),
    ("vt_category", "virustotal", {"categories": ["news", "Phishing and other frauds"]},
     "Domain-Name", W.vt_category_weight, "Phishing and other frauds"),
    ("abuse_confidence", "abuseipdb",
     {"abuse_confidence_score": 100, "total_reports": 312, "num_distinct_users": 120,
      "last_reported_at": "2026-03-01T00:00:00+00:00", "categories": [18, 22]},
     "IPv4-Addr", W.abuse_confidence_weight, 100),
    ("abuse_category", "abuseipdb", {"categories": [14, 7]},
     "IPv4-Addr", W.abuse_category_weight, 7),
    ("gn_classification", "greynoise", {"classification": "malicious"},
     "IPv4-Addr", W.gn_malicious_weight, "malicious"),
    ("gn_classification", "greynoise", {"classification": "suspicious"},
     "IPv4-Addr", W.gn_suspicious_weight, "suspicious"),
    ("gn_noise_unknown", "greynoise", {"noise": True, "classification": "unknown"},
     "IPv4-Addr", W.gn_noise_unknown_weight, True),
    ("shodan_tag", "shodan_internetdb", {"tags": ["self-signed", "C2"]},
     "IPv4-Addr", W.shodan_tag_weight, "C2"),
    ("shodan_tag", "shodan", {"tags": ["compromised"]},
     "IPv6-Addr", W.shodan_tag_weight, "compromised"),
    ("shodan_vulns", "shodan", {"vulns": ["CVE-2024-1", "CVE-2024-2"]},
     "IPv4-Addr", W.shodan_vulns_weight * 2 / W.shodan_vulns_full, 2),
    ("nc_confusables", "network_context", {"has_confusables": True},
     "Domain-Name", W.nc_confusables_weight, True),
    ("nc_random_label", "network_context", {"label_bigram_score": -1.8, "label_length": 14},
     "Domain-Name", W.nc_random_weight, -1.8),
    ("nc_lookalike", "network_context", {"lookalike_of": "paypal.com"},
     "Domain-Name", W.nc_lookalike_weight, "paypal.com"),
    ("young_name", "virustotal", {"creation_date": EPOCH - 3 * 86400},
     "Domain-Name", W.very_young_weight, EPOCH - 3 * 86400),
    ("young_name", "virustotal", {"creation_date": EPOCH - 20 * 86400},
     "Hostname", W.young_weight, EPOCH - 20 * 86400),
    ("nc_url_ip_host", "network_context", {"url_host_is_ip": True},
     "Url", W.nc_url_ip_host_weight, True),
    ("nc_url_credentials", "network_context", {"url_has_credentials": True},
     "Url", W.nc_url_credentials_weight, True),
    ("nc_url_port", "network_context", {"url_nonstandard_port": True},
     "Url", W.nc_url_port_weight, True),
    ("st_new_domain", "securitytrails", {"first_seen": "2026-02-20"},
     "Domain-Name", W.st_new_domain_weight, "2026-02-20"),
]

# A malicious signal strong enough to sit above every cap, but below the override score.
IP_PUSH = ("abuseipdb", {"abuse_confidence_score": 60, "num_distinct_users": 10})  # 51 points
ALT_IP_PUSH = ("greynoise", {"classification": "suspicious"})  # 40 points
DOMAIN_PUSH = ("virustotal", {"malicious": 5, "undetected": 65})  # 59 points

# (rule, provider, fields, entity type, cap, the pushing signal)
BENIGN_CASES = [
    ("vt_harmless", "virustotal", {"malicious": 0, "harmless": 60, "reputation": 5},
     "IPv4-Addr", W.vt_harmless_cap, IP_PUSH),
    ("abuse_whitelisted", "abuseipdb", {"is_whitelisted": True},
     "IPv4-Addr", W.abuse_whitelisted_cap, ALT_IP_PUSH),
    ("abuse_benign_usage", "abuseipdb", {"usage_type": "Search Engine Spider"},
     "IPv4-Addr", W.abuse_benign_usage_cap, ALT_IP_PUSH),
    ("shared_infra", "abuseipdb", {"usage_type": "Content Delivery Network"},
     "IPv4-Addr", W.shared_infra_cap, ("greynoise", {"classification": "malicious"})),
    ("shared_infra", "shodan_internetdb", {"tags": ["cdn"]},
     "IPv4-Addr", W.shared_infra_cap, IP_PUSH),
    ("gn_riot", "greynoise", {"riot": True, "classification": "benign", "name": "Cloudflare"},
     "IPv4-Addr", W.gn_riot_community_cap, IP_PUSH),
    ("popular_name", "network_context", {"registrable_domain": "google.com"},
     "Domain-Name", W.popular_cap, DOMAIN_PUSH),
    ("shared_infra", "network_context",
     {"registrable_domain": "d3k2.cloudfront.net", "public_suffix": "cloudfront.net"},
     "Hostname", W.shared_infra_cap, DOMAIN_PUSH),
    ("gn_riot", "greynoise", {"riot": True, "trust_level": "1", "name": "Google"},
     "IPv4-Addr", W.gn_riot_trust1_cap, IP_PUSH),
    ("gn_riot", "greynoise", {"riot": True, "trust_level": "2"},
     "IPv4-Addr", W.gn_riot_trust2_cap, IP_PUSH),
    ("gn_benign", "greynoise", {"classification": "benign", "name": "Shodan.io"},
     "IPv4-Addr", W.gn_benign_cap, IP_PUSH),
    ("special_use", "network_context", {"is_special_use": True, "range_name": "private-use"},
     "IPv4-Addr", W.special_use_cap, IP_PUSH),
    ("st_top_rank", "securitytrails", {"alexa_rank": 120},
     "Domain-Name", W.st_top_rank_cap, DOMAIN_PUSH),
]


def _component(row, rule: str) -> dict:
    items = [item for item in parse_components(row["components"]) if item["rule"] == rule]
    assert len(items) >= 1, row["components"]
    return items[0]


@pytest.mark.parametrize(
    ("rule", "provider", "fields", "entity_type", "probability", "value"), MALICIOUS_CASES
)
def test_malicious_rule_alone(rule, provider, fields, entity_type, probability, value):
    merged = merged_one({provider: Lookup(fields=fields)}, entity_type)
    row = score_frame(merged).iloc[0]
    item = _component(row, rule)
    stix_id = merged["stix_id"].iloc[0]
    assert item["provider"] == provider
    assert item["raw_digest"] == digest_of(provider, stix_id, fields)
    assert item["value"] == (pytest.approx(value) if isinstance(value, float) else value)
    witness = {"shodan_internetdb": "shodan"}.get(provider, provider)
    witness = REGISTRATION if rule == "young_name" else witness
    probability = min(probability, W.witness_max[witness])
    assert item["contribution"] == pytest.approx(round(100 * probability, 1), abs=0.051)
    assert row["score"] == int(100 * probability + 0.5)
    assert [i["rule"] for i in parse_components(row["components"]) if i["rule"] != "label"] == [
        rule]


@pytest.mark.parametrize(("rule", "provider", "fields", "entity_type", "cap", "push"),
                         BENIGN_CASES)
def test_benign_rule_caps_a_mid_score(rule, provider, fields, entity_type, cap, push):
    push_provider, push_fields = push
    alone = score_frame(merged_one({push_provider: Lookup(fields=push_fields)}, entity_type))
    merged = merged_one(
        {push_provider: Lookup(fields=push_fields), provider: Lookup(fields=fields)}, entity_type
    )
    row = score_frame(merged).iloc[0]
    assert alone["score"].iloc[0] > cap
    assert row["score"] == cap
    item = _component(row, rule)
    assert item["raw_digest"] == digest_of(provider, merged["stix_id"].iloc[0], fields)
    assert item["contribution"] == pytest.approx(cap - alone["score"].iloc[0], abs=0.51)
    assert f"capped at {int(cap)}" in row["explanation"]


def _with_value(answers: dict, entity_type: str, value: str):
    merged = merged_one(answers, entity_type)
    merged["normalized_value"] = value
    return merged


def test_url_payload_path_and_known_resolver_read_the_value():
    payload = score_frame(_with_value(
        {"network_context": Lookup(fields={"url_host_is_ip": False})}, "Url",
        "http://198.51.100.7/bins/mirai.mips")).iloc[0]
    page = score_frame(_with_value(
        {"network_context": Lookup(fields={"url_host_is_ip": False})}, "Url",
        "http://198.51.100.7/binsearch/index.html?q=/bins/")).iloc[0]
    assert [i["rule"] for i in parse_components(payload["components"])] == ["nc_url_payload"]
    assert payload["score"] == round(100 * W.nc_url_payload_weight)
    assert parse_components(page["components"]) == []
    resolver = score_frame(_with_value(
        {"network_context": Lookup(fields={}), "greynoise": Lookup(fields={
            "classification": "malicious"})}, "IPv4-Addr", "9.9.9.9")).iloc[0]
    assert resolver["score"] == W.resolver_cap
    assert "capped at 10 by a well-known public DNS resolver" in resolver["explanation"]


LABEL_CASES = [
    ("abuseipdb", {"is_tor": True}, "Tor exit (AbuseIPDB)"),
    ("virustotal", {"tags": ["tor"]}, "Tor exit (VirusTotal tag)"),
    ("shodan_internetdb", {"tags": ["vpn"]}, "anonymiser (VPN) (Shodan InternetDB tag)"),
    ("greynoise", {"noise": True, "classification": "benign"}, "scanner"),
]


@pytest.mark.parametrize(("provider", "fields", "phrase"), LABEL_CASES)
def test_labels_are_shown_and_never_scored(provider, fields, phrase):
    row = score_frame(merged_one({provider: Lookup(fields=fields)})).iloc[0]
    labels = [i for i in parse_components(row["components"]) if i["rule"] == "label"]
    assert len(labels) == 1 and labels[0]["contribution"] == 0
    assert f"label: {phrase}" in row["explanation"]
    assert row["score"] == 0


def test_every_rule_has_a_table_case():
    from tests.scoring.test_community_rules import RULES_COVERED  # issue 19's sources

    covered = ({case[0] for case in MALICIOUS_CASES} | {case[0] for case in BENIGN_CASES}
               | {"nc_url_payload", "known_resolver", "label"} | RULES_COVERED)
    assert covered == set(RULE_NAMES)
    assert all(spec.weights for spec in RULES if spec.kind != LABEL_KIND)
    for spec in RULES:
        for weight in spec.weights:
            assert hasattr(W, weight), (spec.name, weight)


def test_shodan_host_api_wins_over_internetdb_for_the_same_tag():
    merged = merged_one({
        "shodan": Lookup(fields={"tags": ["c2"]}),
        "shodan_internetdb": Lookup(fields={"tags": ["c2"]}),
    })
    items = parse_components(score_frame(merged)["components"].iloc[0])
    assert [(i["rule"], i["provider"]) for i in items] == [("shodan_tag", "shodan")]


def test_adware_categories_are_not_malice():
    merged = merged_one({"virustotal": Lookup(fields={
        "categories": ["spyware and adware", "potentially unwanted programs"]})}, "Domain-Name")
    assert parse_components(score_frame(merged)["components"].iloc[0]) == []


def test_category_keywords_match_words_not_substrings():
    merged = merged_one({"virustotal": Lookup(fields={"categories": ["c2c marketplace"]})},
                        "Domain-Name")
    assert parse_components(score_frame(merged)["components"].iloc[0]) == []
