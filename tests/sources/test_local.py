"""The embedded SQLite STIX store: upserts, windows, watermarks, mapping and threat context."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cti_assets.intake.observable import TLP_MARKING_IDS
from cti_assets.sources.base import Source, SourceError
from cti_assets.sources.local import (
    _OBSERVABLE_TYPES_SQL,
    _VALUE_KEYS_BUILT,
    OPENCTI_EXTENSIONS,
    LocalStixStore,
)

DAY = datetime(2025, 3, 10, tzinfo=UTC)
AMBER = TLP_MARKING_IDS["TLP:AMBER"]


def sid(stix_type: str, seed: str) -> str:
    return f"{stix_type}--{uuid.uuid5(uuid.NAMESPACE_URL, seed)}"


def ipv4(value: str, **extra) -> dict:
    return {"type": "ipv4-addr", "spec_version": "2.1", "id": sid("ipv4-addr", value),
            "value": value, **extra}


def bundle(*objects: dict) -> dict:
    return {"type": "bundle", "id": sid("bundle", repr(objects)), "objects": list(objects)}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY + timedelta(hours=5))


@pytest.fixture
def store(tmp_path, clock) -> LocalStixStore:
    return LocalStixStore(tmp_path / "store.sqlite", clock=clock)


def everything(store: LocalStixStore):
    return store.observables_created_between(datetime(2000, 1, 1, tzinfo=UTC),
                                             datetime(2100, 1, 1, tzinfo=UTC))


def test_satisfies_the_source_protocol(store):
    assert isinstance(store, Source)
    assert store.name == "local"


def test_default_path_follows_cti_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "elsewhere"))
    store = LocalStixStore()
    store.check()
    assert store.path == tmp_path / "elsewhere" / "store.sqlite"
    assert store.path.exists()


def test_check_reports_an_unusable_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SourceError, match="a-file"):
        LocalStixStore(blocker / "store.sqlite").check()


def test_reimport_is_idempotent_and_keeps_first_seen(store, clock):
    objects = bundle(ipv4("198.51.100.1"), ipv4("198.51.100.2"))
    first = store.write_bundle(objects)
    clock.now += timedelta(days=3)
    second = store.write_bundle(objects)
    assert (first.created, first.updated) == (2, 0)
    assert (second.created, second.updated) == (0, 2)
    assert store.counts_by_type() == {"ipv4-addr": 2}
    assert {r.created_at for r in everything(store)} == {DAY + timedelta(hours=5)}
    ids = [obj["id"] for obj in objects["objects"]]
    assert store.first_seen([*ids, "ipv4-addr--absent"]) == dict.fromkeys(ids, clock.now
                                                                          - timedelta(days=3))


def test_newer_modified_replaces_older_does_not(store):
    base = {"type": "malware", "spec_version": "2.1", "id": sid("malware", "m"),
            "created": "2025-01-01T00:00:00Z", "is_family": True}
    store.write_bundle(bundle({**base, "name": "v2", "modified": "2025-02-01T00:00:00.000Z"}))
    store.write_bundle(bundle({**base, "name": "v1", "modified": "2025-01-15T00:00:00Z"}))
    assert store.get(base["id"])["name"] == "v2"
    store.write_bundle(bundle({**base, "name": "v3", "modified": "2025-02-01T00:00:01Z"}))
    assert store.get(base["id"])["name"] == "v3"
    assert store.counts_by_type() == {"malware": 1}


def test_objects_without_modified_are_merged(store):
    store.write_bundle(bundle(ipv4("198.51.100.3", x_opencti_labels=["c2"], x_opencti_score=40)))
    store.write_bundle(bundle(ipv4("198.51.100.3", x_opencti_labels=["scanner", "c2"],
                                   x_opencti_score=85)))
    stored = store.get(sid("ipv4-addr", "198.51.100.3"))
    assert stored["x_opencti_labels"] == ["c2", "scanner"]
    assert stored["x_opencti_score"] == 85
    file_id = sid("file", "f")
    store.write_bundle(bundle({"type": "file", "id": file_id, "hashes": {"MD5": "a" * 32,
                                                                         "SHA-256": "b" * 64}}))
    store.write_bundle(bundle({"type": "file", "id": file_id, "hashes": {"SHA-256": "b" * 64},
                               "x_opencti_score": 90}))
    assert store.get(file_id)["hashes"] == {"MD5": "a" * 32, "SHA-256": "b" * 64}


def test_malformed_objects_are_counted_not_written(store):
    stats = store.write_bundle(bundle(ipv4("198.51.100.4"), {"type": "ipv4-addr"}, "junk",
                                      {"type": "url", "id": sid("ipv4-addr", "x")}))
    assert (stats.created, stats.failed) == (1, 3)
    assert len(stats.failures) == 3
    with pytest.raises(SourceError, match="bundle"):
        store.write_bundle({"type": "not-a-bundle"})


def test_midnight_belongs_to_exactly_one_daily_window(store):
    store.write_objects([ipv4("198.51.100.5")], first_seen_at=DAY)
    store.write_objects([ipv4("198.51.100.6")], first_seen_at=DAY - timedelta(microseconds=1))
    previous_day = store.observables_created_between(DAY - timedelta(days=1), DAY)
    this_day = store.observables_created_between(DAY, DAY + timedelta(days=1))
    assert [r.value for r in previous_day] == ["198.51.100.6"]
    assert [r.value for r in this_day] == ["198.51.100.5"]
    assert this_day[0].created_at == DAY


def test_windows_take_any_timezone_but_not_naive_times(store):
    store.write_objects([ipv4("198.51.100.7")], first_seen_at=DAY)
    paris = timezone(timedelta(hours=1))
    assert len(store.observables_created_between(DAY.astimezone(paris),
                                                 DAY.astimezone(paris) + timedelta(1))) == 1
    with pytest.raises(ValueError, match="timezone"):
        store.observables_created_between(datetime(2025, 3, 10), datetime(2025, 3, 11))


def test_created_since_is_a_strict_ordered_watermark(store):
    same_time = [ipv4(f"198.51.100.{i}") for i in range(10, 15)]
    store.write_objects(same_time, first_seen_at=DAY)
    store.write_objects([ipv4("203.0.113.1")], first_seen_at=DAY + timedelta(seconds=1))
    store.write_bundle(bundle(entity("identity", "not an observable")))
    everything_seen = store.created_since(None, None, 100)
    assert len(everything_seen) == 6
    assert everything_seen == sorted(everything_seen)
    page, seen = [], []
    after, after_id = None, None
    while page := store.created_since(after, after_id, 2):
        seen += page
        after, after_id = page[-1]
    assert seen == everything_seen
    assert store.created_since(DAY, None, 100) == [everything_seen[-1]]


def test_maps_stix_to_opencti_records(store):
    strict = TLP_MARKING_IDS["TLP:AMBER+STRICT"]
    pap = {"type": "marking-definition", "spec_version": "2.1",
           "id": sid("marking-definition", "p"), "created": "2025-01-01T00:00:00Z",
           "definition_type": "PAP", "name": "PAP:RED",
           "definition": {"statement": "PAP:RED"}}
    file_obj = {"type": "file", "spec_version": "2.1", "id": sid("file", "f"), "name": "a.exe",
                "hashes": {"MD5": "a" * 32, "SHA256": "b" * 64}, "object_marking_refs": [strict]}
    objects = [
        pap, file_obj,
        {"type": "hostname", "id": sid("hostname", "h"), "value": "wks-1"},
        {"type": "x-opencti-hostname", "id": sid("x-opencti-hostname", "h"), "value": "wks-2"},
        {"type": "url", "id": sid("url", "u"), "value": "http://a.test/",
         "extensions": {OPENCTI_EXTENSIONS[0]: {"score": 61, "labels": ["phishing"]}}},
        ipv4("198.51.100.8", object_marking_refs=[AMBER, pap["id"]]),
        {"type": "file", "id": sid("file", "named"), "name": "only-a-name.doc"},
    ]
    store.write_bundle(bundle(*objects))
    records = {r.stix_id: r for r in everything(store)}
    assert len(records) == 6  # the marking definition is not an observable
    file_record = records[file_obj["id"]]
    assert (file_record.entity_type, file_record.value) == ("StixFile", "b" * 64)
    assert file_record.hashes == {"MD5": "a" * 32, "SHA-256": "b" * 64}
    assert file_record.marking_definitions == ("TLP:AMBER+STRICT",)
    assert records[sid("hostname", "h")].entity_type == "Hostname"
    assert records[sid("x-opencti-hostname", "h")].entity_type == "Hostname"
    url = records[sid("url", "u")]
    assert (url.score, url.labels) == (61, ("phishing",))
    ip = records[sid("ipv4-addr", "198.51.100.8")]
    assert ip.marking_ids == (AMBER, pap["id"])
    assert ip.marking_definitions == ("TLP:AMBER", "PAP:RED")
    assert records[sid("file", "named")].value == "only-a-name.doc"


def entity(stix_type: str, name: str, aliases=()) -> dict:
    return {"type": stix_type, "spec_version": "2.1", "id": sid(stix_type, name), "name": name,
            "created": "2025-01-01T00:00:00Z", "modified": "2025-01-01T00:00:00Z",
            "aliases": list(aliases)}


def rel(rel_type: str, source: dict | str, target: dict | str) -> dict:
    source_id = source if isinstance(source, str) else source["id"]
    target_id = target if isinstance(target, str) else target["id"]
    return {"type": "relationship", "spec_version": "2.1",
            "id": sid("relationship", f"{rel_type}{source_id}{target_id}"),
            "relationship_type": rel_type, "source_ref": source_id, "target_ref": target_id,
            "created": "2025-01-01T00:00:00Z", "modified": "2025-01-01T00:00:00Z"}


def test_threat_context_direct_and_through_indicators(store):
    actor = entity("threat-actor", "Ashen Heron", ["HERON-07"])
    malware = entity("malware", "NimbusLoader", ["NimLoad"])
    campaign = entity("campaign", "Operation Paper Moon")
    identity = entity("identity", "Some Org")
    ip, other_ip = ipv4("198.51.100.9"), ipv4("198.51.100.10")
    indicator = {"type": "indicator", "spec_version": "2.1", "id": sid("indicator", "i"),
                 "pattern": "[ipv4-addr:value = '198.51.100.9']", "pattern_type": "stix",
                 "valid_from": "2025-01-01T00:00:00Z", "created": "2025-01-01T00:00:00Z",
                 "modified": "2025-01-01T00:00:00Z"}
    store.write_bundle(bundle(
        actor, malware, campaign, identity, ip, other_ip, indicator,
        rel("related-to", ip, actor),
        rel("related-to", malware, ip),  # the other direction counts too
        rel("related-to", ip, identity),  # not a threat entity
        rel("based-on", indicator, ip),
        rel("indicates", indicator, campaign),
        rel("attributed-to", campaign, actor),  # two hops away: not the observable's link
        rel("related-to", other_ip, entity("malware", "Not In Store")["id"]),
    ))
    links = store.threat_context([ip["id"], other_ip["id"]])
    assert {(link.entity.name, link.via, link.relationship_type, link.indicator_stix_id)
            for link in links} == {
        ("Ashen Heron", "direct", "related-to", None),
        ("NimbusLoader", "direct", "related-to", None),
        ("Operation Paper Moon", "indicator", "indicates", indicator["id"]),
    }
    assert {link.observable_stix_id for link in links} == {ip["id"]}
    assert store.threat_context([]) == []
    by_name = {e.name: e for e in store.threat_entities()}
    assert set(by_name) == {"Ashen Heron", "NimbusLoader", "Operation Paper Moon"}
    assert by_name["Ashen Heron"].aliases == ("HERON-07",)


def test_window_and_watermark_queries_use_an_index(store):
    store.check()
    connection = sqlite3.connect(store.path)
    plan = connection.execute(
        "EXPLAIN QUERY PLAN SELECT first_seen_at, id FROM objects"
        f" WHERE type IN ({_OBSERVABLE_TYPES_SQL}) AND (first_seen_at, id) > (?, ?)"
        " ORDER BY first_seen_at, id LIMIT 10", ("a", "b")).fetchall()
    details = [row[-1] for row in plan]
    assert any("INDEX" in detail for detail in details), details
    assert not any(detail.startswith("SCAN objects") for detail in details), details


def test_concurrent_writers_do_not_lock_each_other_out(tmp_path):
    path = tmp_path / "shared.sqlite"
    LocalStixStore(path).check()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        own_store = LocalStixStore(path)
        start.wait()
        try:
            for batch in range(5):
                own_store.write_objects(
                    [ipv4(f"10.{worker}.{batch}.{i}") for i in range(50)])
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert LocalStixStore(path).counts_by_type() == {"ipv4-addr": 4 * 5 * 50}


def test_a_changed_verdict_replaces_the_stale_verdict_label(store):
    from cti_assets.sources.base import REMOVE_LABELS

    ip = ipv4("198.51.100.60", labels=["feed", "cti:malicious"])
    store.write_bundle(bundle(ip))
    again = {**ip, "labels": ["cti:benign"], REMOVE_LABELS: ["cti:malicious", "cti:suspicious"]}
    store.write_bundle(bundle(again))
    stored = store.get(ip["id"])
    assert stored["labels"] == ["feed", "cti:benign"]
    assert REMOVE_LABELS not in stored


def test_copies_of_a_value_are_found_under_any_id_day_or_spelling(store, clock):
    """STIX allows one value under several ids; the store finds them all by the value the
    pipeline reads (normalised), a file by any of its hashes, and nothing for other values."""
    sha256, md5 = "a" * 64, "b" * 32
    store.write_bundle(bundle(
        {"type": "domain-name", "spec_version": "2.1", "value": "Quillmere-Ops.com",
         "id": f"domain-name--{uuid.uuid4()}", "object_marking_refs": [AMBER]},
        {"type": "file", "spec_version": "2.1", "id": f"file--{uuid.uuid4()}",
         "hashes": {"SHA-256": sha256, "MD5": md5}},
        ipv4("198.51.100.77"),
    ))
    clock.now += timedelta(days=3)
    later = {"type": "domain-name", "spec_version": "2.1", "value": "quillmere-ops.com",
             "id": sid("domain-name", "quillmere-ops.com")}
    store.write_bundle(bundle(later))
    found = store.copies_of([("Domain-Name", "quillmere-ops.com"), ("StixFile", md5),
                             ("IPv4-Addr", "203.0.113.250")])
    domains = found[("Domain-Name", "quillmere-ops.com")]
    assert sorted(r.value for r in domains) == ["Quillmere-Ops.com", "quillmere-ops.com"]
    assert [m.id for r in domains for m in r.markings] == [AMBER]
    assert [r.value for r in found[("StixFile", md5)]] == [sha256]  # its strongest hash
    assert ("IPv4-Addr", "203.0.113.250") not in found
    others = store.copies_of([("Domain-Name", "quillmere-ops.com")], known={later["id"]})
    assert [r.value for r in others[("Domain-Name", "quillmere-ops.com")]] == [
        "Quillmere-Ops.com"]  # what the caller holds already is not read again
    assert store.copies_of([("IPv4-Addr", "198.51.100.77")],
                           known={ipv4("198.51.100.77")["id"]}) == {}


def test_a_store_from_before_the_value_index_is_indexed_once_when_opened(tmp_path):
    path = tmp_path / "store.sqlite"
    LocalStixStore(path).write_bundle(bundle(ipv4("198.51.100.78")))
    with sqlite3.connect(path) as old:  # as a store written before value_keys existed
        old.execute("DROP TABLE value_keys")
        old.execute("PRAGMA user_version = 0")
    reopened = LocalStixStore(path)
    assert [r.value for r in reopened.copies_of([("IPv4-Addr", "198.51.100.78")])[
        ("IPv4-Addr", "198.51.100.78")]] == ["198.51.100.78"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _VALUE_KEYS_BUILT


def test_a_name_is_one_value_as_hostname_or_domain_and_copies_marked_alike_are_read_once(
        store, clock):
    """Providers look a Hostname and a Domain-Name up at one endpoint: both are copies of the
    name. A feed that imports a value daily under new ids is read once per marking set."""
    store.write_bundle(bundle(
        {"type": "hostname", "spec_version": "2.1", "value": "relay.quillmere-ops.com",
         "id": f"hostname--{uuid.uuid4()}", "object_marking_refs": [AMBER]},
        *[{"type": "domain-name", "spec_version": "2.1", "value": "relay.quillmere-ops.com",
           "id": f"domain-name--{uuid.uuid4()}"} for _ in range(5)],
    ))
    found = store.copies_of([("Domain-Name", "relay.quillmere-ops.com")])
    copies = found[("Domain-Name", "relay.quillmere-ops.com")]
    assert sorted(r.entity_type for r in copies) == ["Domain-Name", "Hostname"]
    assert [m.id for r in copies for m in r.markings] == [AMBER]
