"""Write-back end to end: build_bundle -> OpenCTISource.write_bundle (pycti) -> the double."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from stix2validator import ValidationOptions, validate_instance

from cti_assets.sources.base import SourceError, WriteStats
from cti_assets.sources.opencti import OpenCTISource
from cti_assets.writeback.bundle import DEFAULT_LIFETIME_HOURS, WritebackConfig, build_bundle
from cti_assets.writeback.send import dry_run, send
from tests.opencti_double import OpenCTIDouble

DAY = datetime(2025, 3, 1, tzinfo=UTC)
AMBER_STRICT = "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37"
GREEN = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"


@pytest.fixture
def double():
    with OpenCTIDouble() as server:
        yield server
        assert server.unsupported == [], server.unsupported
        assert server.invalid == [], server.invalid


@pytest.fixture
def source(double):
    return OpenCTISource(double.url, double.token, backoff_s=0, max_attempts=2, timeout_s=5)


@pytest.fixture
def scenario(double, source):
    """A malicious IP (AMBER+STRICT, PAP:RED, linked to an intrusion set) and a benign domain,
    read back through the source as the pipeline would."""
    apt = double.add_threat("Intrusion-Set", "APT28")
    double.add_observable("IPv4-Addr", "198.51.100.7", DAY, markings=("TLP:AMBER+STRICT",
                                                                      "PAP:RED"),
                          labels=("feed",), score=40)
    double.add_observable("Domain-Name", "example.org", DAY + timedelta(hours=1),
                          markings=("TLP:GREEN",))
    records = source.observables_created_between(DAY, DAY + timedelta(days=1))
    ip, domain = records
    observables = pd.DataFrame([{
        "internal_id": r.internal_id, "stix_id": r.stix_id, "entity_type": r.entity_type,
        "value": r.value, "normalized_value": r.value, "hash_type": None,
        "tlp": next(m for m in r.marking_definitions if m.startswith("TLP:")),
        "marking_ids": list(r.marking_ids), "labels": list(r.labels),
        "existing_score": r.score, "created_at": r.created_at, "status": "ok", "reason": None,
    } for r in records])
    evidence = json.dumps([{"rule": "gn", "provider": "greynoise", "field": "classification",
                            "value": "malicious", "contribution": 50, "raw_digest": "d1"}])
    scores = pd.DataFrame([
        {"stix_id": ip.stix_id, "internal_id": ip.internal_id, "entity_type": "IPv4-Addr",
         "normalized_value": ip.value, "observable_status": "ok", "tlp": "TLP:AMBER+STRICT",
         "existing_score": 40, "score": 88, "confidence": 80, "verdict": "malicious",
         "components": evidence, "explanation": "GreyNoise: malicious scanner",
         "final_score": 88, "policy_action": "raise"},
        {"stix_id": domain.stix_id, "internal_id": domain.internal_id,
         "entity_type": "Domain-Name", "normalized_value": domain.value,
         "observable_status": "ok", "tlp": "TLP:GREEN", "existing_score": None, "score": 3,
         "confidence": 60, "verdict": "benign", "components": "[]",
         "explanation": "nothing seen", "final_score": 3, "policy_action": "write"},
    ])
    context = pd.DataFrame([{
        "stix_id": ip.stix_id, "normalized_value": ip.value, "linked": True,
        "links": json.dumps([{"entity_id": apt["standard_id"], "entity_type": "intrusion-set",
                              "name": "APT28", "via": "provider",
                              "relationship_type": "related-to", "indicator_id": None,
                              "provider": "greynoise", "reported_name": "Fancy Bear"}]),
    }])
    bundle = build_bundle(scores, context, observables, WritebackConfig(), DAY)
    return {"bundle": bundle, "ip": ip, "domain": domain, "apt": apt}


def graph_state(double: OpenCTIDouble) -> dict:
    """Everything a write-back can change, without internal ids or timestamps."""
    state = {}
    for node in double.objects():
        key = node["standard_id"]
        state[key] = {
            "type": node["entity_type"],
            "score": node.get("x_opencti_score"),
            "labels": double.label_values(node),
            "markings": double.marking_ids(node),
            "valid_until": node.get("valid_until"),
            "content": node.get("content"),
            "from": double.get(node["fromId"])["standard_id"] if "fromId" in node else None,
            "to": double.get(node["toId"])["standard_id"] if "toId" in node else None,
        }
    return state


def test_bundle_validates_with_stix2_validator(scenario):
    result = validate_instance(scenario["bundle"], ValidationOptions(strict=False))
    assert result.is_valid, [str(error) for error in result.errors]


def test_write_back_leaves_the_expected_graph(double, source, scenario):
    ip, domain, apt = scenario["ip"], scenario["domain"], scenario["apt"]

    stats = source.write_bundle(scenario["bundle"])

    assert stats.failed == 0, stats.failures
    assert stats.updated == 2  # the two observables existed
    assert stats.created == len(scenario["bundle"]["objects"]) - 2
    ip_node, domain_node = double.get(ip.stix_id), double.get(domain.stix_id)
    assert ip_node["x_opencti_score"] == 88 and domain_node["x_opencti_score"] == 3
    assert {"feed", "cti:malicious", "cti:greynoise:malicious"} <= \
        set(double.label_values(ip_node))
    assert "cti:benign" in double.label_values(domain_node)
    notes = double.objects("Note")
    assert sorted(len(n["objects"]) for n in notes) == [1, 1]
    assert {n["objects"][0] for n in notes} == {ip_node["id"], domain_node["id"]}
    ip_note = next(n for n in notes if n["objects"] == [ip_node["id"]])
    assert "GreyNoise: malicious scanner" in ip_note["content"]
    [indicator] = double.objects("Indicator")
    assert indicator["pattern"] == "[ipv4-addr:value = '198.51.100.7']"
    assert indicator["x_opencti_score"] == 88
    expected_until = DAY + timedelta(hours=DEFAULT_LIFETIME_HOURS["IPv4-Addr"])
    assert indicator["valid_until"] == expected_until.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert len(double.relationships("based-on", indicator["id"], ip_node["id"])) == 1
    assert len(double.relationships("indicates", indicator["id"], apt["id"])) == 1
    [author] = double.objects("Organization")
    ip_markings = double.marking_ids(ip_node)
    assert AMBER_STRICT in ip_markings
    for node in [ip_note, indicator, *double.relationships()]:
        assert double.marking_ids(node) == ip_markings, node["entity_type"]
        assert node["createdBy"] == author["id"]
    domain_note = next(n for n in notes if n["objects"] == [domain_node["id"]])
    assert double.marking_ids(domain_note) == [GREEN]


def test_second_write_back_creates_nothing(double, source, scenario):
    source.write_bundle(scenario["bundle"])
    before = graph_state(double)
    counts = double.counts()

    stats = source.write_bundle(scenario["bundle"])

    assert (stats.created, stats.failed) == (0, 0)
    assert stats.updated == len(scenario["bundle"]["objects"])
    assert double.counts() == counts
    assert graph_state(double) == before


def test_http_5xx_halfway_then_a_rerun_converges_to_the_same_graph(double, source, scenario):
    reference = OpenCTIDouble()
    reference_state = None
    with reference:
        # the same world, written without faults
        twin = OpenCTISource(reference.url, reference.token, backoff_s=0, max_attempts=2)
        reference.add_threat("Intrusion-Set", "APT28")
        reference.add_observable("IPv4-Addr", "198.51.100.7", DAY,
                                 markings=("TLP:AMBER+STRICT", "PAP:RED"), labels=("feed",),
                                 score=40)
        reference.add_observable("Domain-Name", "example.org", DAY + timedelta(hours=1),
                                 markings=("TLP:GREEN",))
        assert twin.write_bundle(scenario["bundle"]).failed == 0
        reference_state = graph_state(reference)
        assert reference.invalid == [] and reference.unsupported == []

    double.fail_on("noteAdd", n=5, status=503)  # the first note fails for good (2 attempts)
    first = source.write_bundle(scenario["bundle"])
    assert first.failed > 0
    assert any("HTTP 503" in failure for failure in first.failures)
    assert graph_state(double) != reference_state

    double.clear_failures()  # the platform recovers
    second = source.write_bundle(scenario["bundle"])

    assert second.failed == 0, second.failures
    assert graph_state(double) == reference_state
    assert first.created + second.created == len(scenario["bundle"]["objects"]) - 2


def test_a_5xx_swallowed_by_pycti_still_fails_the_object(double, source, scenario):
    """pycti drops a label when labelAdd fails; the object must not count as written."""
    # Every attempt at a new label fails (workers share the failures, so more than two).
    double.fail_on("labelAdd", n=100, status=500)
    stats = source.write_bundle(scenario["bundle"])
    assert stats.failed >= 1
    assert any("HTTP 500" in failure for failure in stats.failures)
    double.clear_failures()
    retry = source.write_bundle(scenario["bundle"])
    assert retry.failed == 0
    assert "cti:malicious" in double.label_values(double.get(scenario["ip"].stix_id))


def test_transient_failures_are_retried_once_per_call_by_the_source(double, source, scenario):
    """One retry layer: each failing call is retried inside the source, nothing resends."""
    double.fail_on("stixCoreRelationshipAdd", n=1, status=502)

    stats = send(source, scenario["bundle"])

    assert stats.failed == 0, stats.failures
    assert double.count("based-on") == 1 and double.count("indicates") == 1


def test_a_persistent_failure_costs_exactly_max_attempts_per_call(double, scenario):
    source = OpenCTISource(double.url, double.token, backoff_s=0, max_attempts=2, timeout_s=5,
                           workers=1)
    double.fail_on("noteAdd", n=100, status=503)
    stats = send(source, scenario["bundle"])
    notes = [o["id"] for o in scenario["bundle"]["objects"] if o["type"] == "note"]
    assert stats.failed >= len(notes)
    assert all(any(f.startswith(note) for f in stats.failures) for note in notes)
    assert double.count("Note") == 0
    # the first note is tried max_attempts (2 here) times; with the platform failing, the rest
    # are not attempted in this step (the step's retry resends the bundle)
    assert double.calls_to("noteAdd") == 2
    assert any("not attempted" in failure for failure in stats.failures)


def test_concurrent_workers_spend_max_attempts_on_each_object_they_start(double, source,
                                                                         scenario):
    double.fail_on("noteAdd", n=100, status=503)
    stats = send(source, scenario["bundle"])
    notes = [o["id"] for o in scenario["bundle"]["objects"] if o["type"] == "note"]
    started = [f for f in stats.failures
               if f.split(":")[0] in notes and "not attempted" not in f]
    assert started and double.count("Note") == 0
    assert double.calls_to("noteAdd") == 2 * len(started)


def test_empty_bundle_writes_nothing(double, source):
    stats = source.write_bundle({"type": "bundle", "id": "bundle--x", "objects": []})
    assert stats == WriteStats()
    assert double.calls == []


def test_malformed_bundle_is_refused_clearly(source):
    with pytest.raises(SourceError, match="STIX bundle"):
        source.write_bundle({"objects": []})
    stats = source.write_bundle({"type": "bundle", "objects": [{"no": "id"}]})
    assert stats.failed == 1 and "not a STIX object" in stats.failures[0]


def test_dry_run_writes_stable_json_under_the_data_dir(tmp_path, monkeypatch, scenario):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    path = dry_run(scenario["bundle"], "partition-2025-03-01.json")
    assert path.parent == tmp_path / "bundles"
    first = path.read_bytes()
    dry_run(scenario["bundle"], path)
    assert path.read_bytes() == first
    assert json.loads(first) == scenario["bundle"]


def test_every_observable_type_round_trips_through_pycti(double, source):
    seeded = [
        double.add_observable("IPv4-Addr", "198.51.100.20", DAY),
        double.add_observable("IPv6-Addr", "2001:db8::20", DAY),
        double.add_observable("Domain-Name", "bad.example", DAY),
        double.add_observable("Hostname", "host.bad.example", DAY),
        double.add_observable("Url", "http://bad.example/x?a='1'", DAY),
        double.add_observable("StixFile", None, DAY, hashes={
            "SHA-256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}),
    ]
    records = source.observables_created_between(DAY, DAY + timedelta(days=1))
    observables = pd.DataFrame([{
        "internal_id": r.internal_id, "stix_id": r.stix_id, "entity_type": r.entity_type,
        "value": r.value, "normalized_value": r.value,
        "hash_type": "SHA-256" if r.entity_type == "StixFile" else None, "tlp": "TLP:AMBER",
        "marking_ids": list(r.marking_ids), "labels": [], "existing_score": None,
        "created_at": r.created_at, "status": "ok", "reason": None} for r in records])
    scores = pd.DataFrame([{
        "stix_id": r.stix_id, "internal_id": r.internal_id, "entity_type": r.entity_type,
        "normalized_value": r.value, "observable_status": "ok", "tlp": "TLP:AMBER",
        "existing_score": None, "score": 80, "confidence": 70, "verdict": "malicious",
        "components": "[]", "explanation": "test", "final_score": 80, "policy_action": "write",
    } for r in records])
    bundle = build_bundle(scores, None, observables, WritebackConfig(), DAY)

    stats = source.write_bundle(bundle)

    assert stats.failed == 0, stats.failures
    assert stats.updated == len(seeded)  # no observable was duplicated
    assert sum(double.count(t) for t in ("IPv4-Addr", "IPv6-Addr", "Domain-Name", "Hostname",
                                         "Url", "StixFile")) == len(seeded)
    patterns = sorted(i["x_opencti_main_observable_type"] for i in double.objects("Indicator"))
    assert patterns == sorted(r.entity_type for r in records)
    assert all(double.get(n["standard_id"])["x_opencti_score"] == 80 for n in seeded)
