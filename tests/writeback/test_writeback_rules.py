"""Write-back against the platform's upsert rules, as the double enforces them
(reference/pycti.md section 9): note identity, confidence-gated upserts, add-only labels,
indicator lifetime, markings echoed exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from cti_assets.sources.opencti import OpenCTISource
from cti_assets.writeback.bundle import DEFAULT_LIFETIME_HOURS, WritebackConfig, build_bundle
from tests.opencti_double import OpenCTIDouble

NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW - timedelta(hours=2)


@pytest.fixture
def double():
    with OpenCTIDouble() as server:
        yield server
        assert server.unsupported == [], server.unsupported
        assert server.invalid == [], server.invalid


@pytest.fixture
def source(double):
    return OpenCTISource(double.url, double.token, backoff_s=0, max_attempts=2, timeout_s=5)


def frames(source: OpenCTISource, rows: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Observables read through the source, scored as `rows` says (by value)."""
    records = source.observables_created_between(TODAY - timedelta(days=400),
                                                 NOW + timedelta(days=1))
    observables = pd.DataFrame([{
        "internal_id": r.internal_id, "stix_id": r.stix_id, "entity_type": r.entity_type,
        "value": r.value, "normalized_value": r.value,
        "hash_type": "SHA-256" if r.entity_type == "StixFile" else None,
        "tlp": "TLP:CLEAR", "marking_ids": list(r.marking_ids), "labels": list(r.labels),
        "existing_score": r.score, "created_at": r.created_at, "status": "ok", "reason": None,
    } for r in records if r.value in rows])
    scores = pd.DataFrame([{
        "stix_id": r.stix_id, "internal_id": r.internal_id, "entity_type": r.entity_type,
        "normalized_value": r.value, "observable_status": "ok", "tlp": "TLP:CLEAR",
        "existing_score": r.score, "score": rows[r.value]["score"],
        "confidence": rows[r.value].get("confidence", 80), "verdict": rows[r.value]["verdict"],
        "components": "[]", "explanation": rows[r.value].get("explanation", "nothing seen"),
        "final_score": rows[r.value]["score"], "policy_action": "write",
    } for r in records if r.value in rows])
    return scores, observables


def bundle_for(source: OpenCTISource, rows: dict[str, dict], scored_at: datetime,
               written_at: datetime = NOW) -> dict:
    scores, observables = frames(source, rows)
    times = {stix_id: scored_at for stix_id in scores["stix_id"]}
    return build_bundle(scores, None, observables, WritebackConfig(), written_at, times)


def test_observables_with_the_same_evidence_keep_a_note_each(double, source):
    """The platform merges notes with equal content+created+abstract: the content names the
    observable, so two benign observables with identical evidence never share a note."""
    first = double.add_observable("IPv4-Addr", "198.51.100.1", TODAY, markings=())
    second = double.add_observable("IPv4-Addr", "198.51.100.2", TODAY, markings=())
    same = {"score": 5, "verdict": "benign"}
    bundle = bundle_for(source, {"198.51.100.1": same, "198.51.100.2": same}, TODAY)

    assert source.write_bundle(bundle).failed == 0

    notes = double.objects("Note")
    assert sorted(n["objects"] for n in notes) == sorted([[first["id"]], [second["id"]]])


def test_a_rerun_with_lower_confidence_and_a_new_verdict_updates_in_place(double, source):
    """One current note, one verdict label, a refreshed indicator: nothing stale is left."""
    ip = double.add_observable("IPv4-Addr", "198.51.100.7", TODAY, markings=(),
                               labels=("feed",))
    domain = double.add_observable("Domain-Name", "shifty.example", TODAY, markings=())
    earlier = NOW - timedelta(days=2)
    first = bundle_for(source, {
        "198.51.100.7": {"score": 90, "verdict": "malicious", "confidence": 90},
        "shifty.example": {"score": 10, "verdict": "benign", "confidence": 90},
    }, earlier)
    assert source.write_bundle(first).failed == 0

    rerun = bundle_for(source, {
        "198.51.100.7": {"score": 85, "verdict": "malicious", "confidence": 40,
                         "explanation": "fresh evidence"},
        "shifty.example": {"score": 60, "verdict": "suspicious", "confidence": 40,
                           "explanation": "fresh evidence"},
    }, NOW - timedelta(minutes=5))
    stats = source.write_bundle(rerun)

    assert stats.failed == 0, stats.failures
    notes = double.objects("Note")
    assert len(notes) == 2
    for node, verdict in ((ip, "malicious"), (domain, "suspicious")):
        [note] = [n for n in notes if n["objects"] == [node["id"]]]
        assert "fresh evidence" in note["content"]
        assert "**Score confidence:** 40" in note["content"]
        assert f"**Verdict:** {verdict}" in note["content"]
    assert double.label_values(double.get(domain["id"])) == ["cti:suspicious"]
    assert double.label_values(double.get(ip["id"])) == ["cti:malicious", "feed"]
    [indicator] = double.objects("Indicator")
    expected_from = NOW - timedelta(minutes=5)
    assert indicator["valid_from"] == expected_from.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    until = expected_from + timedelta(hours=DEFAULT_LIFETIME_HOURS["IPv4-Addr"])
    assert indicator["valid_until"] == until.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert indicator["x_opencti_score"] == 85 and indicator["revoked"] is False


def test_an_indicator_already_expired_is_never_written(double, source):
    double.add_observable("IPv4-Addr", "198.51.100.7", TODAY, markings=())
    backfill = NOW - timedelta(days=90)  # evidence older than an IP indicator's lifetime
    bundle = bundle_for(source, {"198.51.100.7": {"score": 95, "verdict": "malicious"}},
                        backfill)

    assert [o for o in bundle["objects"] if o["type"] == "indicator"] == []
    assert source.write_bundle(bundle).failed == 0
    assert double.objects("Indicator") == []


def test_the_decay_manager_restarts_from_the_refreshed_valid_from():
    with OpenCTIDouble(decay_lifetimes={"IPv4-Addr": timedelta(days=30)}) as double:
        source = OpenCTISource(double.url, double.token, backoff_s=0, max_attempts=2)
        double.add_observable("IPv4-Addr", "198.51.100.7", TODAY, markings=())
        rows = {"198.51.100.7": {"score": 95, "verdict": "malicious"}}
        source.write_bundle(bundle_for(source, rows, NOW - timedelta(days=3)))
        source.write_bundle(bundle_for(source, rows, NOW - timedelta(hours=1)))

        [indicator] = double.objects("Indicator")
        expected = NOW - timedelta(hours=1) + timedelta(days=30)
        assert indicator["valid_until"] == expected.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert indicator["revoked"] is False


def test_a_demo_like_day(double, source):
    """Many observables, repeated evidence, marked and unmarked, old and new evidence: no two
    notes share the platform's note identity, every indicator is live at write time, and
    unmarked observables are echoed unmarked (the double marks an object it is sent a marking
    for, as the platform does)."""
    values = [f"198.51.100.{i}" for i in range(1, 9)] + ["a.example", "b.example"]
    for index, value in enumerate(values):
        kind = "Domain-Name" if value.endswith(".example") else "IPv4-Addr"
        double.add_observable(kind, value, TODAY,
                              markings=("TLP:GREEN",) if index % 3 == 0 else ())
    rows = {value: ({"score": 90, "verdict": "malicious"} if index < 4 else
                    {"score": 5, "verdict": "benign"})
            for index, value in enumerate(values)}
    bundle = bundle_for(source, rows, TODAY)

    notes = [o for o in bundle["objects"] if o["type"] == "note"]
    identities = {(n["content"], n["created"], n["abstract"]) for n in notes}
    assert len(notes) == len(values) == len(identities)
    indicators = [o for o in bundle["objects"] if o["type"] == "indicator"]
    assert len(indicators) == 4
    assert all(datetime.fromisoformat(i["valid_until"].replace("Z", "+00:00")) > NOW
               for i in indicators)

    assert source.write_bundle(bundle).failed == 0

    assert all(len(note["objects"]) == 1 for note in double.objects("Note"))
    assert all(i["revoked"] is False for i in double.objects("Indicator"))
    for index, value in enumerate(values):
        node = next(n for n in double.objects() if n.get("value") == value)
        expected = ["marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"] \
            if index % 3 == 0 else []
        assert double.marking_ids(node) == expected, value
