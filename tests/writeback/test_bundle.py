"""build_bundle: deterministic, valid STIX 2.1, markings inherited, rejected rows silent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from pycti import Indicator, Note, StixCoreRelationship
from stix2validator import ValidationOptions, validate_instance

from cti_assets.intake.observable import TLP_MARKING_IDS
from cti_assets.writeback.bundle import (
    DEFAULT_LIFETIME_HOURS,
    WritebackConfig,
    build_bundle,
    note_id,
    stix_pattern,
)

VALID_FROM = datetime(2025, 3, 1, tzinfo=UTC)
AMBER_STRICT = TLP_MARKING_IDS["TLP:AMBER+STRICT"]
PAP_RED = "marking-definition--2dca4733-ddf5-5b69-9774-dc74dc249d18"
APT_ID = "intrusion-set--b42aa153-a4d3-59de-8f0a-333c878ea279"
MALWARE_ID = "malware--36297121-bf18-56e1-b200-d39c9f9f5cee"

ROWS = {
    # stix_id: (entity_type, value, tlp, markings, labels, existing, final, verdict, hash_type)
    "ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c": (
        "IPv4-Addr", "198.51.100.1", "TLP:AMBER+STRICT", [AMBER_STRICT, PAP_RED], ["feed"], 40,
        90, "malicious", None),
    "domain-name--3500c14b-9bde-5393-b4e5-b260aea7e058": (
        "Domain-Name", "example.org", "TLP:GREEN", [TLP_MARKING_IDS["TLP:GREEN"]], [], None, 5,
        "benign", None),
    "url--0a1b2c3d-0000-5000-8000-000000000001": (
        "Url", "http://evil.example/a'b", "TLP:CLEAR", [], [], None, 75, "malicious", None),
    "file--0a1b2c3d-0000-5000-8000-000000000002": (
        "StixFile", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "TLP:AMBER", [TLP_MARKING_IDS["TLP:AMBER"]], [], None, 95, "malicious", "SHA-256"),
    "ipv4-addr--0a1b2c3d-0000-5000-8000-000000000003": (
        "IPv4-Addr", "not-an-ip", "TLP:CLEAR", [], [], None, None, "unknown", None),
}
REJECTED = "ipv4-addr--0a1b2c3d-0000-5000-8000-000000000003"


def components(provider_tags: list[str]) -> str:
    return json.dumps([
        {"rule": "gn_class", "provider": "greynoise", "field": "classification",
         "value": "malicious", "contribution": 40, "raw_digest": "aa"},
        {"rule": "vt_tags", "provider": "virustotal", "field": "tags", "value": provider_tags,
         "contribution": 10, "raw_digest": "bb"},
        {"rule": "vt_ratio", "provider": "virustotal", "field": "malicious", "value": 12,
         "contribution": 40, "raw_digest": "cc"},
    ])


def frames(**overrides) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    scores, observables = [], []
    for stix_id, (etype, value, tlp, markings, labels, existing, final, verdict,
                  hash_type) in ROWS.items():
        rejected = stix_id == REJECTED
        scores.append({
            "stix_id": stix_id, "internal_id": "internal-" + stix_id[-4:], "entity_type": etype,
            "normalized_value": None if rejected else value,
            "observable_status": "rejected" if rejected else "ok", "tlp": tlp,
            "existing_score": existing, "score": final, "confidence": 0.8, "verdict": verdict,
            "components": components(["botnet", "C2 Server"]), "explanation": "because",
            "final_score": final, "policy_action": "write",
        })
        observables.append({
            "internal_id": "internal-" + stix_id[-4:], "stix_id": stix_id, "entity_type": etype,
            "value": value, "normalized_value": None if rejected else value,
            "hash_type": hash_type, "tlp": tlp, "marking_ids": markings, "labels": labels,
            "existing_score": existing, "created_at": VALID_FROM,
            "status": "rejected" if rejected else "ok",
            "reason": "not an IP" if rejected else None,
        })
    scores_frame = pd.DataFrame(scores).astype({"existing_score": "Int64",
                                                "final_score": "Int64", "score": "Int64"})
    for column, value in overrides.items():
        scores_frame[column] = value
    links = [
        {"entity_id": APT_ID, "entity_type": "intrusion-set", "name": "APT28", "via": "provider",
         "relationship_type": "related-to", "indicator_id": None, "provider": "greynoise",
         "reported_name": "Fancy Bear"},
        {"entity_id": APT_ID, "entity_type": "intrusion-set", "name": "APT28", "via": "direct",
         "relationship_type": "related-to", "indicator_id": None, "provider": None,
         "reported_name": None},
    ]
    domain_links = [
        {"entity_id": MALWARE_ID, "entity_type": "malware", "name": "Emotet",
         "via": "provider", "relationship_type": "related-to", "indicator_id": None,
         "provider": "virustotal", "reported_name": "emotet"},
        {"entity_id": APT_ID, "entity_type": "intrusion-set", "name": "APT28", "via": "direct",
         "relationship_type": "related-to", "indicator_id": None, "provider": None,
         "reported_name": None},
    ]
    context = pd.DataFrame([
        {"stix_id": "ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c",
         "normalized_value": "198.51.100.1", "links": json.dumps(links), "linked": True},
        {"stix_id": "domain-name--3500c14b-9bde-5393-b4e5-b260aea7e058",
         "normalized_value": "example.org", "links": json.dumps(domain_links), "linked": True},
    ])
    return scores_frame, context, pd.DataFrame(observables)


def build(config: WritebackConfig | None = None, **overrides) -> dict:
    scores, context, observables = frames(**overrides)
    return build_bundle(scores, context, observables, config or WritebackConfig(), VALID_FROM)


def by_type(bundle: dict, stix_type: str) -> list[dict]:
    return [o for o in bundle["objects"] if o["type"] == stix_type]


def test_same_input_gives_a_byte_identical_bundle():
    first = json.dumps(build(), sort_keys=True)
    scores, context, observables = frames()
    shuffled = build_bundle(scores.iloc[::-1], context.iloc[::-1], observables.iloc[::-1],
                            WritebackConfig(), VALID_FROM)
    assert json.dumps(shuffled, sort_keys=True) == first
    assert json.dumps(build(), sort_keys=True) == first


def test_bundle_is_valid_stix_21():
    result = validate_instance(build(), ValidationOptions(strict=False))
    assert result.is_valid, [str(error) for error in result.errors]


def test_rejected_observables_write_nothing():
    bundle = build()
    text = json.dumps(bundle)
    assert REJECTED not in text
    assert "not-an-ip" not in text
    assert len(by_type(bundle, "note")) == 4


def test_observable_carries_score_labels_source_markings_and_keeps_its_labels():
    bundle = build()
    ip = next(o for o in bundle["objects"] if o["id"].startswith("ipv4-addr--2b3e"))
    assert ip["value"] == "198.51.100.1"
    assert ip["x_opencti_score"] == 90
    assert {"feed", "cti:malicious", "cti:virustotal:botnet", "cti:virustotal:c2-server",
            "cti:greynoise:malicious"} <= set(ip["x_opencti_labels"])
    assert ip["object_marking_refs"] == sorted([AMBER_STRICT, PAP_RED])


def test_every_derived_object_inherits_the_source_markings_amber_strict_as_a_plain_id():
    bundle = build()
    ip_id = "ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c"
    indicator = next(o for o in by_type(bundle, "indicator") if "198.51.100.1" in o["pattern"])
    derived = [o for o in bundle["objects"]
               if ip_id in (o.get("object_refs") or []) or o.get("source_ref") in
               (ip_id, indicator["id"]) or o["id"] == indicator["id"]]
    assert len(derived) >= 4  # note, indicator, based-on, indicates
    for obj in derived:
        assert obj["object_marking_refs"] == sorted([AMBER_STRICT, PAP_RED]), obj["type"]


def test_unmarked_source_stays_unmarked_nothing_added():
    """The TLP assumed for unmarked data gates providers; it is never written as a marking."""
    bundle = build()
    url_id = "url--0a1b2c3d-0000-5000-8000-000000000001"
    url_note = next(o for o in by_type(bundle, "note") if o["object_refs"] == [url_id])
    url = next(o for o in bundle["objects"] if o["id"] == url_id)
    assert "object_marking_refs" not in url_note or url_note["object_marking_refs"] == []
    assert "object_marking_refs" not in url or url["object_marking_refs"] == []


def test_malicious_above_threshold_gets_an_indicator_with_a_typed_lifetime():
    bundle = build()
    indicators = {o["x_opencti_main_observable_type"]: o for o in by_type(bundle, "indicator")}
    assert set(indicators) == {"IPv4-Addr", "Url", "StixFile"}  # benign domain: none
    for entity_type, indicator in indicators.items():
        until = VALID_FROM + timedelta(hours=DEFAULT_LIFETIME_HOURS[entity_type])
        assert indicator["valid_from"] == "2025-03-01T00:00:00.000Z"
        assert indicator["valid_until"] == until.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert indicator["id"] == Indicator.generate_id(indicator["pattern"])
    assert indicators["Url"]["pattern"] == "[url:value = 'http://evil.example/a\\'b']"
    assert indicators["StixFile"]["pattern"] == (
        "[file:hashes.'SHA-256' = "
        "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']")


def test_threshold_is_respected():
    bundle = build(WritebackConfig(indicator_threshold=91))
    assert [o["x_opencti_main_observable_type"] for o in by_type(bundle, "indicator")] == \
        ["StixFile"]


def test_pattern_escapes_quotes_and_backslashes():
    assert stix_pattern("Url", "http://x/a'b\\c") == "[url:value = 'http://x/a\\'b\\\\c']"
    assert stix_pattern("Hostname", "h.example") == "[hostname:value = 'h.example']"
    with pytest.raises(ValueError, match="hash type"):
        stix_pattern("StixFile", "abc", None)


def test_based_on_and_indicates_relationships_have_deterministic_ids():
    bundle = build()
    ip_id = "ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c"
    indicator = next(o for o in by_type(bundle, "indicator") if "198.51.100.1" in o["pattern"])
    relationships = {(r["relationship_type"], r["source_ref"], r["target_ref"]): r
                     for r in by_type(bundle, "relationship")}
    assert ("based-on", indicator["id"], ip_id) in relationships
    assert ("indicates", indicator["id"], APT_ID) in relationships  # one, despite two links
    for (kind, source, target), relationship in relationships.items():
        assert relationship["id"] == StixCoreRelationship.generate_id(kind, source, target)


def test_without_indicator_new_links_are_related_to_and_known_ones_skipped():
    bundle = build()
    domain_id = "domain-name--3500c14b-9bde-5393-b4e5-b260aea7e058"
    from_domain = [(r["relationship_type"], r["target_ref"]) for r in
                   by_type(bundle, "relationship") if r["source_ref"] == domain_id]
    assert from_domain == [("related-to", MALWARE_ID)]


def test_note_id_is_stable_across_evidence_and_scores():
    first = build()
    second = build(final_score=pd.array([10, 20, 30, 40, None], dtype="Int64"),
                   explanation="different evidence")
    assert sorted(o["id"] for o in by_type(first, "note")) == \
        sorted(o["id"] for o in by_type(second, "note"))
    assert {o["content"] for o in by_type(first, "note")} != \
        {o["content"] for o in by_type(second, "note")}
    expected = Note.generate_id(None, "cti-assets enrichment summary of "
                                      "ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c")
    assert note_id("cti-assets", "ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c") == expected
    assert expected in {o["id"] for o in by_type(first, "note")}


def test_the_score_written_is_final_score_as_scoring_decided_it():
    """Scoring owns the score policy; write-back never applies one of its own."""
    lowered = pd.array([30, 5, 75, 95, None], dtype="Int64")  # the IP had 40
    bundle = build(final_score=lowered)
    ip = next(o for o in bundle["objects"] if o["id"].startswith("ipv4-addr--2b3e"))
    assert ip["x_opencti_score"] == 30


def test_every_derived_object_names_the_author():
    bundle = build()
    [author] = by_type(bundle, "identity")
    for obj in bundle["objects"]:
        if obj["type"] in ("note", "indicator", "relationship"):
            assert obj["created_by_ref"] == author["id"]


def test_nothing_to_write_gives_an_empty_bundle():
    scores, context, observables = frames()
    bundle = build_bundle(scores.iloc[0:0], None, observables, WritebackConfig(), VALID_FROM)
    assert bundle["type"] == "bundle" and bundle["objects"] == []


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="indicator_threshold"):
        WritebackConfig(indicator_threshold=101)


@pytest.mark.parametrize(("given", "expected"), [(0.8, "80"), (1.0, "100"), (75, "75"),
                                                 (75.0, "75"), (250, "100"), (None, "n/a")])
def test_score_confidence_goes_in_the_note_text_on_the_0_to_100_scale(given, expected):
    bundle = build(confidence=given)
    ip_note = next(o for o in by_type(bundle, "note")
                   if o["object_refs"] == ["ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c"])
    assert f"**Score confidence:** {expected}\n" in ip_note["content"]


@pytest.mark.parametrize("score_confidence", [0.2, 0.9, None])
def test_object_confidence_is_the_authors_reliability_whatever_the_score_confidence(
        score_confidence):
    """The platform gates upserts on confidence: a constant one lets every rerun update."""
    bundle = build(WritebackConfig(confidence=65), confidence=score_confidence)
    derived = [o for o in bundle["objects"] if o["type"] in ("note", "indicator", "relationship")]
    assert derived and {o["confidence"] for o in derived} == {65}
    with pytest.raises(ValueError, match="confidence"):
        WritebackConfig(confidence=101)
