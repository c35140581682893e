"""Bundle import (validated, atomic, idempotent) and export (deterministic, valid STIX 2.1)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stix2validator import ValidationOptions, validate_instance

from cti_assets.intake.observable import TLP_ORDER, decide_tlp, normalize
from cti_assets.sources.base import OBSERVABLE_TYPES, THREAT_ENTITY_TYPES
from cti_assets.sources.bundle_files import (
    BundleError,
    export_store,
    import_bundles,
    load_bundle_file,
)
from cti_assets.sources.local import STIX_TO_ENTITY_TYPE, LocalStixStore

SAMPLE = Path(__file__).resolve().parents[1] / "cti_assets" / "data" / "sample_bundle.json"
CREATED_AT = datetime(2025, 3, 10, tzinfo=UTC)
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def store(tmp_path) -> LocalStixStore:
    return LocalStixStore(tmp_path / "store.sqlite")


def write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def ipv4(value: str) -> dict:
    return {"type": "ipv4-addr", "spec_version": "2.1",
            "id": f"ipv4-addr--{uuid.uuid5(uuid.NAMESPACE_URL, value)}", "value": value}


def bundle(*objects: dict) -> dict:
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": list(objects)}


def test_sample_imports_cleanly_and_covers_every_type(store):
    report = import_bundles(store, [SAMPLE], created_at=CREATED_AT)
    assert report.created == report.objects == sum(report.by_type.values())
    assert report.updated == 0
    for stix_type in (*THREAT_ENTITY_TYPES, "indicator", "relationship", "marking-definition"):
        assert report.by_type.get(stix_type, 0) >= 2, stix_type
    records = store.observables_created_between(CREATED_AT, CREATED_AT + timedelta(days=1))
    assert 40 <= len(records) <= 60
    assert {r.entity_type for r in records} == set(OBSERVABLE_TYPES)
    decisions = [decide_tlp(r.markings, "TLP:CLEAR") for r in records]
    assert {d.tlp for d in decisions} == set(TLP_ORDER)
    assert not any((d.reason or "").startswith("tlp_unresolved") for d in decisions)
    results = [normalize(r.entity_type, r.value) for r in records]
    reasons = {res.reason.split(":")[0] for res in results if not res.ok}
    assert {"invalid_ipv4", "unsupported_hash"} <= reasons
    assert {res.hash_type for res in results if res.ok} >= {"MD5", "SHA-1", "SHA-256"}
    assert sum(res.ok for res in results) >= len(records) - 5
    assert any(r.score is not None for r in records) and any(r.labels for r in records)
    links = store.threat_context([r.stix_id for r in records])
    assert {link.via for link in links} == {"direct", "indicator"}
    assert {len(e.aliases) > 0 for e in store.threat_entities() if e.entity_type == "malware"} \
        == {True}


def test_importing_twice_leaves_the_same_counts(store):
    first = import_bundles(store, [SAMPLE])
    counts = store.counts_by_type()
    second = import_bundles(store, [SAMPLE])
    assert store.counts_by_type() == counts
    assert (second.created, second.updated) == (0, first.objects)
    assert first.files == second.files == 1


def test_created_at_override_stamps_only_new_objects(store, tmp_path):
    old = write_json(tmp_path / "old.json", bundle(ipv4("198.51.100.1")))
    new = write_json(tmp_path / "new.json", bundle(ipv4("198.51.100.1"), ipv4("198.51.100.2")))
    import_bundles(store, [old], created_at=CREATED_AT)
    import_bundles(store, [new], created_at=CREATED_AT + timedelta(days=1))
    seen = {r.value: r.created_at for r in store.observables_created_between(*EVER)}
    assert seen == {"198.51.100.1": CREATED_AT, "198.51.100.2": CREATED_AT + timedelta(days=1)}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"type": "bundle", "objects": [', "not valid JSON"),
        ('["a list"]', "not a STIX bundle"),
        ('{"type": "report"}', "not a STIX bundle"),
        ('{"type": "bundle", "objects": {}}', "'objects' must be a list"),
        (json.dumps(bundle(ipv4("198.51.100.3"), {"type": "ipv4-addr", "value": "x"})),
         "object 1: missing 'id'"),
        (json.dumps(bundle({**ipv4("198.51.100.4"), "id": "ipv4-addr--not-a-uuid"})),
         "object 0 (ipv4-addr--not-a-uuid): id"),
        (json.dumps(bundle({**ipv4("198.51.100.5"), "type": "url"})), "does not match type"),
        (json.dumps(bundle({"type": "file", "id": f"file--{uuid.uuid4()}",
                            "hashes": {"MD5": "abc"}})), "invalid STIX"),
    ],
)
def test_malformed_bundle_names_the_file_and_imports_nothing(store, tmp_path, content, problem):
    import_bundles(store, [SAMPLE])
    counts = store.counts_by_type()
    good = write_json(tmp_path / "good.json", bundle(ipv4("203.0.113.9")))
    bad = tmp_path / "broken bundle.json"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(BundleError) as raised:
        import_bundles(store, [good, bad])
    assert str(bad) in str(raised.value)
    assert problem in str(raised.value)
    assert store.counts_by_type() == counts


def test_missing_file_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="nowhere.json"):
        load_bundle_file(tmp_path / "nowhere.json")


def test_export_is_deterministic_and_round_trips(store, tmp_path):
    import_bundles(store, [SAMPLE])
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    count = export_store(store, first)
    export_store(store, second)
    assert first.read_bytes() == second.read_bytes()
    exported = json.loads(first.read_text(encoding="utf-8"))
    assert exported["type"] == "bundle" and exported["id"].startswith("bundle--")
    assert count == len(exported["objects"]) == sum(store.counts_by_type().values())
    again = LocalStixStore(tmp_path / "again.sqlite")
    import_bundles(again, [first])
    assert again.counts_by_type() == store.counts_by_type()
    only_ips = export_store(store, tmp_path / "ips.json", types=["ipv4-addr"])
    assert only_ips == store.counts_by_type()["ipv4-addr"]


def _canonical(obj: dict) -> bool:
    """Whether an observable's raw value is already in canonical form (the sample also holds
    deliberately defanged or invalid values, which stix2-validator rightly refuses)."""
    if obj["type"] not in STIX_TO_ENTITY_TYPE or obj["type"] == "file":
        return True
    return normalize(obj["type"], obj["value"]).value == obj["value"]


def test_export_validates_with_stix2_validator(store, tmp_path):
    objects = load_bundle_file(SAMPLE)
    canonical = write_json(tmp_path / "canonical.json", bundle(*filter(_canonical, objects)))
    import_bundles(store, [canonical])
    out = tmp_path / "export.json"
    assert export_store(store, out) > 50
    results = validate_instance(json.loads(out.read_text(encoding="utf-8")),
                                ValidationOptions(version="2.1"))
    assert results.is_valid, [str(error) for error in results.errors]
