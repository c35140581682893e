"""The evidence rules of URLhaus, ThreatFox, MalwareBazaar, OTX and CrowdSec (issue 19): each
alone, abuse.ch's three lists as one witness, corroboration across sources, the caps, and the
names they carry into the explanation."""

from __future__ import annotations

import pytest

from cti_assets.scoring.components import parse_components
from cti_assets.scoring.model import score_frame
from cti_assets.scoring.weights import ABUSE_CH, ScoringWeights
from tests.scoring.scoring_factories import FETCHED_AT, Lookup, digest_of, merged_one

W = ScoringWeights()
RECENT = FETCHED_AT.strftime("%Y-%m-%dT%H:%M:%S+00:00")
WITNESS = {"urlhaus": ABUSE_CH, "threatfox": ABUSE_CH, "malwarebazaar": ABUSE_CH}

# (rule, provider, fields, entity type, probability the rule alone implies, phrase part)
MALICIOUS_CASES = [
    ("urlhaus_listed", "urlhaus", {"url_status": "online", "url_count": 1,
                                   "online_url_count": 1, "signatures": ["Mozi"]},
     "Url", W.urlhaus_url_online_weight, "URLhaus: malware URL online (Mozi)"),
    ("urlhaus_listed", "urlhaus", {"url_status": "offline", "url_count": 1,
                                   "online_url_count": 0},
     "Url", W.urlhaus_url_offline_weight, "URLhaus: malware URL offline"),
    ("urlhaus_listed", "urlhaus", {"url_count": 7, "online_url_count": 2},
     "Domain-Name", W.urlhaus_host_online_weight, "7 malware URLs on this host (2 online)"),
    ("urlhaus_listed", "urlhaus", {"url_count": 1, "online_url_count": 0},
     "IPv4-Addr", W.urlhaus_host_offline_weight, "1 malware URL on this host (0 online)"),
    ("urlhaus_listed", "urlhaus", {"url_count": 3, "signatures": ["Heodo"]},
     "StixFile", W.urlhaus_payload_weight, "URLhaus: payload served by malware URLs (Heodo)"),
    ("threatfox_ioc", "threatfox", {"ioc_count": 1, "max_confidence": 75,
                                    "threat_types": ["botnet_cc"], "malware": ["Cobalt Strike"],
                                    "last_seen": RECENT},
     "IPv4-Addr", W.threatfox_weight * 0.75,
     "ThreatFox: botnet_cc of Cobalt Strike (confidence 75)"),
    ("malwarebazaar_sample", "malwarebazaar", {"signature": "AgentTesla"},
     "StixFile", W.malwarebazaar_signature_weight, "MalwareBazaar: sample of AgentTesla"),
    ("malwarebazaar_sample", "malwarebazaar", {"file_type": "exe"},
     "StixFile", W.malwarebazaar_weight, "MalwareBazaar: known malware sample"),
    ("otx_pulses", "otx", {"pulse_count": 10, "latest_pulse": RECENT},
     "Domain-Name", W.otx_pulse_weight, "OTX: 10 pulses"),
    ("otx_pulses", "otx", {"pulse_count": 1, "adversaries": ["APT28"], "latest_pulse": RECENT},
     "Domain-Name", W.otx_named_weight, "OTX: 1 pulse naming APT28"),
    ("crowdsec_reputation", "crowdsec", {"reputation": "malicious",
                                         "behaviors": ["ssh:bruteforce"]},
     "IPv4-Addr", W.crowdsec_malicious_weight, "CrowdSec reputation malicious (ssh:bruteforce)"),
    ("crowdsec_reputation", "crowdsec", {"reputation": "suspicious"},
     "IPv6-Addr", W.crowdsec_suspicious_weight, "CrowdSec reputation suspicious"),
]
IP_PUSH = ("abuseipdb", {"abuse_confidence_score": 60, "num_distinct_users": 10})  # 51 points
# (rule, provider, fields, entity type, cap)
CAP_CASES = [
    ("otx_whitelisted", "otx", {"pulse_count": 40, "whitelisted": True,
                                "validation": ["Whitelisted indicator"]},
     "IPv4-Addr", W.otx_whitelisted_cap),
    ("crowdsec_safe", "crowdsec", {"reputation": "safe"}, "IPv4-Addr", W.crowdsec_safe_cap),
    ("crowdsec_false_positive", "crowdsec", {"reputation": "known",
                                             "false_positives": ["cdn:cloudflare"]},
     "IPv4-Addr", W.shared_infra_cap),
]
RULES_COVERED = {case[0] for case in MALICIOUS_CASES} | {case[0] for case in CAP_CASES}


@pytest.mark.parametrize(("rule", "provider", "fields", "entity_type", "probability", "phrase"),
                         MALICIOUS_CASES)
def test_malicious_rule_alone(rule, provider, fields, entity_type, probability, phrase):
    merged = merged_one({provider: Lookup(fields=fields)}, entity_type)
    row = score_frame(merged).iloc[0]
    items = [i for i in parse_components(row["components"]) if i["rule"] != "label"]
    assert [i["rule"] for i in items] == [rule]
    assert items[0]["provider"] == provider
    assert items[0]["raw_digest"] == digest_of(provider, merged["stix_id"].iloc[0], fields)
    probability = min(probability, W.witness_max[WITNESS.get(provider, provider)])
    assert row["score"] == int(100 * probability + 0.5)
    assert phrase in row["explanation"]


@pytest.mark.parametrize(("rule", "provider", "fields", "entity_type", "cap"), CAP_CASES)
def test_cap_rule_caps_a_mid_score(rule, provider, fields, entity_type, cap):
    push_provider, push_fields = IP_PUSH
    alone = score_frame(merged_one({push_provider: Lookup(fields=push_fields)}, entity_type))
    row = score_frame(merged_one({push_provider: Lookup(fields=push_fields),
                                  provider: Lookup(fields=fields)}, entity_type)).iloc[0]
    assert alone["score"].iloc[0] > cap and row["score"] == cap
    assert rule in {i["rule"] for i in parse_components(row["components"])}
    assert f"capped at {int(cap)}" in row["explanation"]


def test_whitelisted_otx_pulses_never_count_as_malice():
    row = score_frame(merged_one({"otx": Lookup(fields={
        "pulse_count": 200, "malware_families": ["Emotet"], "whitelisted": True,
        "latest_pulse": RECENT})}, "IPv4-Addr")).iloc[0]
    assert "otx_pulses" not in {i["rule"] for i in parse_components(row["components"])}
    assert row["score"] == 0


def test_abuse_ch_lists_are_one_witness_and_do_not_lift_a_cap_together():
    """URLhaus, ThreatFox and MalwareBazaar agreeing is one curator speaking: their noisy-OR is
    capped at one witness_max and, alone, never lifts a benign cap."""
    lists = {
        "urlhaus": Lookup(fields={"url_count": 3, "signatures": ["Heodo"]}),
        "threatfox": Lookup(fields={"ioc_count": 1, "max_confidence": 100,
                                    "last_seen": RECENT}),
        "malwarebazaar": Lookup(fields={"signature": "Heodo"}),
    }
    row = score_frame(merged_one(lists, "StixFile")).iloc[0]
    assert row["score"] == int(100 * W.witness_max[ABUSE_CH] + 0.5)
    ip_lists = {"urlhaus": Lookup(fields={"url_count": 4, "online_url_count": 4}),
                "threatfox": Lookup(fields={"ioc_count": 1, "max_confidence": 100,
                                            "last_seen": RECENT})}
    safe = score_frame(merged_one({**ip_lists, "crowdsec": Lookup(fields={"reputation": "safe"})},
                                  "IPv4-Addr")).iloc[0]
    assert safe["score"] == W.crowdsec_safe_cap  # one witness: the cap stands


def test_independent_sources_corroborate_and_lift_a_cap():
    fields = {"threatfox": Lookup(fields={"ioc_count": 1, "max_confidence": 100,
                                          "malware": ["QakBot"], "last_seen": RECENT}),
              "crowdsec": Lookup(fields={"reputation": "malicious",
                                         "false_positives": ["cdn:cloudflare"]})}
    row = score_frame(merged_one(fields, "IPv4-Addr")).iloc[0]
    assert row["score"] > W.shared_infra_cap  # two witnesses >= lift_min_p: lifted
    assert "QakBot" in row["explanation"]


def test_a_stale_threatfox_entry_fades():
    old = {"ioc_count": 1, "max_confidence": 100, "last_seen": "2025-01-01T00:00:00+00:00"}
    row = score_frame(merged_one({"threatfox": Lookup(fields=old)}, "Domain-Name")).iloc[0]
    assert row["score"] < 100 * W.threatfox_weight / 4
