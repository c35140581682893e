"""The OpenCTI double enforces the platform's rules (reference/pycti.md section 9), one test each.

Every request goes through unmodified pycti over a real socket, as in the source's tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pycti import OpenCTIApiClient

from tests.opencti_double import OpenCTIDouble

DAY = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def double():
    with OpenCTIDouble() as server:
        yield server
        assert server.unsupported == [], server.unsupported
        assert server.invalid == [], server.invalid


@pytest.fixture
def api(double):
    return OpenCTIApiClient(double.url, double.token, log_level="error",
                            perform_health_check=False)


def test_relationship_filters_match_internal_ids_only(double, api):
    ip = double.add_observable("IPv4-Addr", "198.51.100.1", DAY)
    apt = double.add_threat("Intrusion-Set", "APT28")
    double.add_relationship("related-to", ip["id"], apt["id"])

    by_standard = api.stix_core_relationship.list(fromOrToId=[ip["standard_id"]])
    by_internal = api.stix_core_relationship.list(fromOrToId=[ip["id"]])
    to_standard = api.stix_core_relationship.list(toId=[apt["standard_id"]])
    to_internal = api.stix_core_relationship.list(toId=[apt["id"]])

    assert by_standard == [] and to_standard == []
    assert [r["relationship_type"] for r in by_internal] == ["related-to"]
    assert len(to_internal) == 1


def test_note_identity_is_derived_from_content_created_and_abstract(double, api):
    """A note whose derived id exists is merged into it, whatever stix id it was sent with."""
    first = double.add_observable("IPv4-Addr", "198.51.100.1", DAY)
    second = double.add_observable("IPv4-Addr", "198.51.100.2", DAY)
    same = {"content": "benign: nothing seen", "abstract": "cti-assets: benign",
            "created": "2025-03-01T00:00:00.000Z"}
    a = api.note.create(stix_id="note--00000000-0000-4000-8000-000000000001",
                        objects=[first["id"]], **same)
    b = api.note.create(stix_id="note--00000000-0000-4000-8000-000000000002",
                        objects=[second["id"]], **same)
    c = api.note.create(stix_id="note--00000000-0000-4000-8000-000000000003",
                        objects=[second["id"]], **{**same, "content": "benign: other"})

    assert a["id"] == b["id"] != c["id"]
    merged = double.get(a["id"])
    assert merged["objects"] == [first["id"], second["id"]]
    assert "note--00000000-0000-4000-8000-000000000002" in merged["x_opencti_stix_ids"]


def test_note_update_regenerates_its_standard_id_and_keeps_the_old_one(double, api):
    ip = double.add_observable("IPv4-Addr", "198.51.100.1", DAY)
    stix_id = "note--00000000-0000-4000-8000-000000000001"
    created = api.note.create(stix_id=stix_id, objects=[ip["id"]], content="v1")
    old_standard = double.get(created["id"])["standard_id"]

    api.note.create(stix_id=stix_id, objects=[ip["id"]], content="v2")

    [note] = double.objects("Note")
    assert note["content"] == "v2" and note["standard_id"] != old_standard
    assert {old_standard, stix_id} <= set(note["x_opencti_stix_ids"])


def test_upserts_are_gated_by_confidence_capped_at_the_users_max():
    with OpenCTIDouble(user_max_confidence=60) as double:
        api = OpenCTIApiClient(double.url, double.token, log_level="error",
                               perform_health_check=False)
        ip = double.add_observable("IPv4-Addr", "198.51.100.1", DAY)
        stix_id = "note--00000000-0000-4000-8000-000000000001"
        api.note.create(stix_id=stix_id, objects=[ip["id"]], content="v1", confidence=90)
        [note] = double.objects("Note")
        assert note["confidence"] == 60  # capped at the user's max

        api.note.create(stix_id=stix_id, objects=[ip["id"]], content="v2", confidence=40)
        assert note["content"] == "v1"  # lower confidence: nothing changes

        api.note.create(stix_id=stix_id, objects=[ip["id"]], content="v3", confidence=95)
        assert note["content"] == "v3"  # 95 capped to 60 >= 60 stored

        api.stix_cyber_observable.update_field(
            id=ip["id"], input={"key": "x_opencti_score", "value": ["10"]})
        assert double.get(ip["id"])["x_opencti_score"] == "10"  # observables: no gate


def test_labels_are_add_only_on_upsert_and_removed_explicitly(double, api):
    ip = double.add_observable("IPv4-Addr", "198.51.100.1", DAY, labels=("cti:benign", "feed"))
    api.stix_cyber_observable.create(observableData={"type": "ipv4-addr",
                                                     "value": "198.51.100.1"},
                                     objectLabel=[double._label("cti:malicious")["id"]],
                                     update=True)
    assert double.label_values(ip) == ["cti:benign", "cti:malicious", "feed"]

    api.stix_cyber_observable.remove_label(id=ip["id"], label_name="cti:benign")

    assert double.label_values(ip) == ["cti:malicious", "feed"]


def test_an_upsert_fills_the_markings_of_an_unmarked_object(double, api):
    ip = double.add_observable("IPv4-Addr", "198.51.100.1", DAY, markings=())
    clear = double.get("marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9")
    api.stix_cyber_observable.create(observableData={"type": "ipv4-addr",
                                                     "value": "198.51.100.1"},
                                     objectMarking=[clear["id"]], update=True)
    assert double.marking_ids(ip) == [clear["standard_id"]]


def test_an_indicator_whose_valid_until_is_past_is_created_revoked(double, api):
    def indicator(value: str, until: datetime) -> dict:
        created = api.indicator.create(
            name=value, pattern=f"[ipv4-addr:value = '{value}']", pattern_type="stix",
            x_opencti_main_observable_type="IPv4-Addr", valid_from="2025-03-01T00:00:00.000Z",
            valid_until=until.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        return double.get(created["id"])

    assert indicator("198.51.100.1", datetime(2025, 3, 8, tzinfo=UTC))["revoked"] is True
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    assert indicator("198.51.100.2", future)["revoked"] is False


def test_the_decay_manager_replaces_valid_until_from_valid_from():
    with OpenCTIDouble(decay_lifetimes={"IPv4-Addr": timedelta(days=30)}) as double:
        api = OpenCTIApiClient(double.url, double.token, log_level="error",
                               perform_health_check=False)
        start = datetime.now(UTC).replace(microsecond=0)
        created = api.indicator.create(
            name="x", pattern="[ipv4-addr:value = '198.51.100.1']", pattern_type="stix",
            x_opencti_main_observable_type="IPv4-Addr",
            valid_from=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            valid_until=(start + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        node = double.get(created["id"])
        assert node["valid_until"] == (start + timedelta(days=30)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")
        assert node["revoked"] is False
