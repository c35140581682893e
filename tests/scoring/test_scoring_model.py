"""Properties of the scoring model: monotone in malicious evidence, capped by benign
evidence, blind to missing answers, bounded link bonus, deterministic, vectorised."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti_assets.scoring.components import COMPONENT_TYPE, parse_components
from cti_assets.scoring.context import build_threat_context
from cti_assets.scoring.model import BENIGN, MALICIOUS, SUSPICIOUS, UNKNOWN, score_frame
from cti_assets.scoring.weights import ScoringWeights
from cti_assets.sources.base import ThreatEntity, ThreatLink
from tests.scoring.scoring_factories import Lookup, merged_one, merged_rows, observable

W = ScoringWeights()
HYPOTHESIS = settings(max_examples=25, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])

vt_fields = st.fixed_dictionaries({
    "malicious": st.integers(0, 80),
    "suspicious": st.integers(0, 10),
    "harmless": st.integers(0, 80),
    "undetected": st.integers(0, 80),
    "reputation": st.integers(-100, 100),
})
abuse_fields = st.fixed_dictionaries({
    "abuse_confidence_score": st.integers(0, 100),
    "num_distinct_users": st.integers(0, 60),
    "is_whitelisted": st.booleans(),
})
greynoise_fields = st.fixed_dictionaries({
    "classification": st.sampled_from(["malicious", "suspicious", "benign", "unknown"]),
    "noise": st.booleans(),
    "riot": st.booleans(),
    "trust_level": st.sampled_from(["1", "2", "3"]),
})


def score_of(answers: dict, entity_type: str = "IPv4-Addr", context=None, **kw) -> pd.Series:
    return score_frame(merged_one(answers, entity_type), context, **kw).iloc[0]


@HYPOTHESIS
@given(vt=vt_fields, abuse=abuse_fields, gn=greynoise_fields, extra=st.integers(1, 40))
def test_more_vt_engines_never_lower_the_score(vt, abuse, gn, extra):
    before = dict(vt)
    after = dict(vt, malicious=vt["malicious"] + extra)
    common = {"abuseipdb": Lookup(fields=abuse), "greynoise": Lookup(fields=gn)}
    low = score_of({**common, "virustotal": Lookup(fields=before)})["score"]
    high = score_of({**common, "virustotal": Lookup(fields=after)})["score"]
    assert high >= low


@HYPOTHESIS
@given(vt=vt_fields, abuse=abuse_fields, gn=greynoise_fields, more=st.integers(1, 100))
def test_more_abuse_confidence_or_an_added_malicious_signal_never_lowers(vt, abuse, gn, more):
    base_answers = {"virustotal": Lookup(fields=vt), "abuseipdb": Lookup(fields=abuse)}
    base = score_of(base_answers)["score"]
    raised = dict(abuse, abuse_confidence_score=min(100, abuse["abuse_confidence_score"] + more))
    assert score_of({**base_answers, "abuseipdb": Lookup(fields=raised)})["score"] >= base
    malicious_gn = dict(gn, classification="malicious", riot=False)
    assert score_of({**base_answers, "greynoise": Lookup(fields=malicious_gn)})["score"] >= base


@HYPOTHESIS
@given(vt=vt_fields, gn=greynoise_fields,
       status=st.sampled_from(["not_found", "skipped", "error", "deferred"]))
def test_missing_answers_never_lower_the_score_but_lower_confidence(vt, gn, status):
    answered = {"virustotal": Lookup(fields=vt), "greynoise": Lookup(fields=gn)}
    full = score_of({**answered, "abuseipdb": Lookup(fields={"abuse_confidence_score": 0})})
    reasons = {"skipped": "tlp", "error": "rate_limited", "deferred": "budget"}
    gap = score_of({**answered, "abuseipdb": Lookup(status=status, reason=reasons.get(status))})
    assert gap["score"] == full["score"]
    assert gap["confidence"] < full["confidence"]


@HYPOTHESIS
@given(vt=vt_fields, gn=greynoise_fields)
def test_dropping_a_provider_without_evidence_keeps_the_score(vt, gn):
    silent = {"shodan_internetdb": Lookup(fields={"ports": [443], "tags": ["self-signed"]})}
    answers = {"virustotal": Lookup(fields=vt), "greynoise": Lookup(fields=gn)}
    assert score_of({**answers, **silent})["score"] == score_of(answers)["score"]


@HYPOTHESIS
@given(vt=vt_fields, abuse=abuse_fields, n_links=st.integers(1, 4))
def test_a_threat_link_raises_the_score_by_a_bounded_amount(vt, abuse, n_links):
    merged = merged_one({"virustotal": Lookup(fields=vt), "abuseipdb": Lookup(fields=abuse)})
    actors = [ThreatEntity(f"intrusion-set--{i}", "intrusion-set", f"Lynx {i}")
              for i in range(n_links)]
    links = [ThreatLink(merged["stix_id"].iloc[0], a, "direct", "related-to") for a in actors]
    context = build_threat_context(merged, links, actors, merged)
    plain = score_frame(merged).iloc[0]
    linked = score_frame(merged, context).iloc[0]
    assert plain["score"] <= linked["score"] <= plain["score"] + W.link_max_points
    # a benign cap may bind only once the link's points are added: then the score stays capped
    capped = "capped" in plain["explanation"] or "capped" in linked["explanation"]
    if plain["score"] < 100 - W.link_max_points and not capped:
        assert linked["score"] > plain["score"]
        assert "linked to intrusion set Lynx 0" in linked["explanation"]
        items = parse_components(linked["components"])
        assert any(i["rule"] == "threat_link" for i in items)


@HYPOTHESIS
@given(strength=st.integers(0, 100))
def test_benign_evidence_caps_unless_malicious_evidence_is_strong(strength):
    malicious = {"abuseipdb": Lookup(fields={"abuse_confidence_score": strength})}
    riot = {"greynoise": Lookup(fields={"riot": True, "trust_level": "1"})}
    alone = score_of(malicious)["score"]
    with_riot = score_of({**malicious, **riot})["score"]
    if alone >= W.benign_override_score:
        assert with_riot == alone
    else:
        assert with_riot == min(alone, W.gn_riot_trust1_cap)


def test_one_engine_of_seventy_is_not_malicious():
    row = score_of({"virustotal": Lookup(fields={"malicious": 1, "undetected": 69})})
    assert row["verdict"] != MALICIOUS and row["score"] < W.suspicious_threshold
    assert "below the 3-engine minimum" in row["explanation"]


def test_a_low_vt_score_does_not_replace_a_strong_abuseipdb_score():
    abuse = {"abuseipdb": Lookup(fields={"abuse_confidence_score": 100, "total_reports": 312,
                                         "num_distinct_users": 40})}
    vt = {"virustotal": Lookup(fields={"malicious": 4, "harmless": 60, "undetected": 7})}
    alone = score_of(abuse)
    both = score_of({**abuse, **vt})
    assert both["score"] >= alone["score"]
    assert both["verdict"] == MALICIOUS
    assert "AbuseIPDB confidence 100 from 312 reports" in both["explanation"]


def test_the_explanation_is_one_sentence_naming_the_evidence():
    merged = merged_one({
        "virustotal": Lookup(fields={"malicious": 23, "harmless": 40, "undetected": 8}),
        "abuseipdb": Lookup(fields={"abuse_confidence_score": 100, "total_reports": 312,
                                    "num_distinct_users": 1}),
        "greynoise": Lookup(status="deferred", reason="budget"),
    })
    lynx = ThreatEntity("intrusion-set--1", "intrusion-set", "Crimson Lynx")
    links = [ThreatLink(merged["stix_id"].iloc[0], lynx, "direct", "related-to")]
    row = score_frame(merged, build_threat_context(merged, links, [lynx], None)).iloc[0]
    assert row["explanation"] == (
        f"malicious ({row['score']}/100, confidence {row['confidence']}): "
        "VirusTotal 23/71 engines malicious (32.4%); "
        "AbuseIPDB confidence 100 from 312 reports by 1 user; "
        "linked to intrusion set Crimson Lynx; not answered: GreyNoise deferred:budget"
    )


def test_verdicts_follow_the_thresholds():
    assert score_of({"greynoise": Lookup(fields={"classification": "malicious"}),
                     "abuseipdb": Lookup(fields={"abuse_confidence_score": 80,
                                                 "num_distinct_users": 10})})[
        "verdict"] == MALICIOUS
    assert score_of({"greynoise": Lookup(fields={"classification": "suspicious"})})[
        "verdict"] == SUSPICIOUS
    assert score_of({"greynoise": Lookup(fields={"riot": True, "trust_level": "1"})})[
        "verdict"] == BENIGN
    nothing = score_of({"greynoise": Lookup(status="not_found")})
    assert nothing["verdict"] == UNKNOWN and nothing["score"] == 0
    assert "no malicious or benign evidence" in nothing["explanation"]


def test_a_suspicious_score_with_too_little_coverage_is_unknown():
    weights = ScoringWeights(min_confidence=60)
    answers = {"greynoise": Lookup(fields={"classification": "suspicious"}),
               "virustotal": Lookup(status="error", reason="rate_limited"),
               "abuseipdb": Lookup(status="deferred", reason="budget")}
    row = score_of(answers, weights=weights)
    assert row["score"] >= weights.suspicious_threshold
    assert row["confidence"] < 60 and row["verdict"] == UNKNOWN
    assert "VirusTotal error:rate_limited" in row["explanation"]
    silent = score_of({"virustotal": Lookup(status="error", reason="rate_limited")})
    assert silent["explanation"] == (
        f"unknown (0/100, confidence {silent['confidence']}): no malicious or benign evidence; "
        "not answered: VirusTotal error:rate_limited"
    )


def test_rejected_observables_get_a_row_without_score():
    merged = merged_rows([
        (observable(0, status="rejected", reason="not an IP address"),
         {"virustotal": Lookup(status="skipped", reason="rejected")}),
        (observable(1), {"virustotal": Lookup(fields={"malicious": 30, "undetected": 40})}),
    ])
    scores = score_frame(merged)
    assert len(scores) == 2
    rejected = scores.iloc[0]
    assert pd.isna(rejected["score"]) and rejected["verdict"] == UNKNOWN
    assert rejected["confidence"] == 0
    assert rejected["explanation"] == (
        "unknown (no score): observable rejected: not an IP address"
    )
    assert scores.iloc[1]["verdict"] == MALICIOUS


def test_out_of_scope_observables_say_skipped_not_rejected():
    merged = merged_rows([
        (observable(0, status="skipped", reason="out_of_scope"),
         {"virustotal": Lookup(status="skipped", reason="out_of_scope")}),
    ])
    explanation = score_frame(merged).iloc[0]["explanation"]
    assert explanation == "unknown (no score): observable skipped: out_of_scope"


def test_special_use_addresses_are_benign_with_full_confidence():
    answers = {
        "network_context": Lookup(fields={"is_special_use": True, "range_name": "private-use"}),
        "virustotal": Lookup(status="skipped", reason="special_use"),
        "abuseipdb": Lookup(status="skipped", reason="special_use"),
    }
    row = score_of(answers)
    assert (row["score"], row["verdict"], row["confidence"]) == (0, BENIGN, 100)
    assert bool(row["special_use"]) is True


def test_out_of_scope_providers_do_not_lower_confidence():
    domain = {"virustotal": Lookup(fields={"malicious": 0, "harmless": 70})}
    row = score_of({**domain, "abuseipdb": Lookup(status="skipped", reason="out_of_scope")},
                   "Domain-Name")
    gap = score_of({**domain, "securitytrails": Lookup(status="skipped", reason="no_key")},
                   "Domain-Name")
    assert row["confidence"] == score_of(domain, "Domain-Name")["confidence"]
    assert gap["confidence"] < row["confidence"]


def test_scores_are_deterministic_and_vectorised_over_many_rows():
    rng = np.random.default_rng(7)
    specs = []
    for i in range(300):
        specs.append((observable(i), {
            "virustotal": Lookup(fields={"malicious": int(rng.integers(0, 20)),
                                         "undetected": 60}),
            "abuseipdb": Lookup(fields={"abuse_confidence_score": int(rng.integers(0, 100))}),
            "greynoise": Lookup(status=str(rng.choice(["ok", "not_found", "error"])),
                                fields={"classification": "unknown", "noise": True}),
        }))
    merged = merged_rows(specs)
    first, second = score_frame(merged), score_frame(merged.copy())
    pd.testing.assert_frame_equal(first, second)
    single = pd.concat([score_frame(merged.iloc[[i]]) for i in (0, 150, 299)], ignore_index=True)
    pd.testing.assert_frame_equal(first.iloc[[0, 150, 299]].reset_index(drop=True), single)


def test_weights_round_trip_and_reject_unknown_names():
    weights = ScoringWeights.from_dict({"vt_min_engines": 5, "shodan_malicious_tags": ["c2"],
                                        "provider_reliability": {"virustotal": 50}})
    assert weights.vt_min_engines == 5 and weights.shodan_malicious_tags == ("c2",)
    assert weights.provider_reliability["virustotal"] == 50
    assert weights.provider_reliability["abuseipdb"] == W.provider_reliability["abuseipdb"]
    assert ScoringWeights.from_dict(weights.to_dict()) == weights
    json.dumps(weights.to_dict())
    with pytest.raises(ValueError, match="unknown scoring weight"):
        ScoringWeights.from_dict({"vt_min_engine": 5})
    with pytest.raises(ValueError, match="vt_min_engines"):
        ScoringWeights.from_dict({"vt_min_engines": "many"})


def test_components_are_typed_items_with_the_documented_keys():
    merged = merged_one({
        "virustotal": Lookup(fields={"malicious": 12, "undetected": 58,
                                     "categories": ['say "phishing"']}),
        "abuseipdb": Lookup(fields={"abuse_confidence_score": 90, "num_distinct_users": 12}),
    })
    column = score_frame(merged)["components"]
    assert column.dtype == pd.ArrowDtype(COMPONENT_TYPE)
    stored = column.iloc[0]
    assert all(set(item) == {"rule", "provider", "field", "value_json", "contribution",
                             "raw_digest"} for item in stored)
    items = parse_components(stored)
    # what earlier versions stored, the items' JSON text, reads back the same
    assert parse_components(json.dumps(items)) == items
    assert all(item["raw_digest"] for item in items)


def test_components_hold_the_documented_keys_and_add_up_to_the_score():
    row = score_of({
        "virustotal": Lookup(fields={"malicious": 12, "undetected": 58,
                                     "categories": ['say "phishing"']}),
        "abuseipdb": Lookup(fields={"abuse_confidence_score": 90, "num_distinct_users": 12}),
    })
    items = parse_components(row["components"])
    assert {tuple(sorted(i)) for i in items} == {
        ("contribution", "field", "provider", "raw_digest", "rule", "value")
    }
    assert any(i["value"] == 'say "phishing"' for i in items)
    positive = sum(i["contribution"] for i in items if i["contribution"] > 0)
    assert positive == pytest.approx(row["score"], abs=1)
    assert [i["contribution"] for i in items] == sorted(
        (i["contribution"] for i in items), reverse=True)


def test_a_binding_cap_carries_the_points_it_removed():
    row = score_of({
        "virustotal": Lookup(fields={"malicious": 12, "undetected": 58}),
        "abuseipdb": Lookup(fields={"abuse_confidence_score": 90, "num_distinct_users": 12,
                                    "is_whitelisted": True}),
    })
    items = parse_components(row["components"])
    assert row["score"] == ScoringWeights().abuse_whitelisted_cap
    assert [i["rule"] for i in items] == ["vt_malicious", "abuse_whitelisted"]
    assert sum(i["contribution"] for i in items) == pytest.approx(row["score"], abs=1)
