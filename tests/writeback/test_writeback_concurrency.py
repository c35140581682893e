"""Concurrent write-back against the OpenCTI double: every object once, exact counts, reruns
create nothing, a failed object is counted and the others are written."""

from __future__ import annotations

import threading

import pytest

from bench import writeback as day_bench
from cti_assets.sources.opencti import OpenCTISource, _phases
from tests.opencti_double import OpenCTIDouble

N = 60
WORKERS = 6


@pytest.fixture(scope="module")
def day():
    frames = day_bench.day(N)
    return frames, day_bench.bundle_of(frames)


@pytest.fixture
def double(day):
    frames, _ = day
    with OpenCTIDouble(day_bench.TOKEN, latency_s=0.005) as server:
        for item in frames["seed"]:
            server.add_observable(item["entity_type"], item["value"], item["created_at"],
                                  markings=tuple(item["markings"]),
                                  labels=tuple(item["labels"]), hashes=item["hashes"])
        for name in day_bench.THREATS:
            server.add_threat("Intrusion-Set", name)
        yield server
        assert server.unsupported == [], server.unsupported
        assert server.invalid == [], server.invalid


def source_for(double: OpenCTIDouble, workers: int = WORKERS) -> OpenCTISource:
    return OpenCTISource(double.url, double.token, backoff_s=0, max_attempts=2, timeout_s=10,
                         workers=workers)


def node_of(double: OpenCTIDouble) -> dict[str, str]:
    """Every stix id the graph answers to -> its node's internal id."""
    alias = {}
    for node in double.objects():
        for stix_id in [node["standard_id"], *node["x_opencti_stix_ids"]]:
            alias[stix_id] = node["id"]
    return alias


def core_counts(double: OpenCTIDouble) -> dict[str, int]:
    return {kind: count for kind, count in double.counts().items()
            if kind not in ("Label", "External-Reference", "Vocabulary", "Marking-Definition")}


def expected_counts(double_before: dict[str, int], bundle: dict) -> dict[str, int]:
    kinds = {"identity": "Organization", "note": "Note", "indicator": "Indicator"}
    expected = dict(double_before)
    for obj in bundle["objects"]:
        kind = obj["relationship_type"] if obj["type"] == "relationship" else kinds.get(obj["type"])
        if kind is not None:
            expected[kind] = expected.get(kind, 0) + 1
    return expected


def test_every_object_is_written_once_and_counted_once(double, day):
    _, bundle = day
    before = core_counts(double)
    observables = sum(1 for o in bundle["objects"] if o["type"] not in
                      ("identity", "note", "indicator", "relationship"))

    stats = source_for(double).write_bundle(bundle)

    assert stats.failed == 0, stats.failures
    assert stats.updated == observables == N  # the platform held every observable
    assert stats.created == len(bundle["objects"]) - N
    assert core_counts(double) == expected_counts(before, bundle)
    alias = node_of(double)
    resolved = [alias.get(obj["id"]) for obj in bundle["objects"]]
    assert None not in resolved and len(set(resolved)) == len(resolved)
    assert 1 < double.max_in_flight <= WORKERS  # concurrent, and bounded by the pool


def test_a_rerun_creates_nothing_and_counts_every_object_as_updated(double, day):
    _, bundle = day
    source = source_for(double)
    source.write_bundle(bundle)
    after_first = core_counts(double)

    again = source.write_bundle(bundle)

    assert (again.created, again.updated, again.failed) == (0, len(bundle["objects"]), 0)
    assert core_counts(double) == after_first


def test_two_write_backs_at_once_leave_one_node_per_object(double, day):
    """The platform's rule under concurrency: a second create of a standard id is an upsert."""
    _, bundle = day
    before = core_counts(double)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        source_for(double).write_bundle(bundle))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r.failed for r in results] == [0, 0], [r.failures for r in results]
    assert core_counts(double) == expected_counts(before, bundle)


def test_a_failed_object_is_counted_and_the_others_are_written(double, day):
    _, bundle = day
    notes = [o for o in bundle["objects"] if o["type"] == "note"]
    double.fail_on("noteAdd", n=1, status=400)  # not transient: no retry

    stats = source_for(double).write_bundle(bundle)

    assert stats.failed == 1 and "HTTP 400" in stats.failures[0]
    assert stats.created + stats.updated == len(bundle["objects"]) - 1
    assert double.count("Note") == len(notes) - 1
    retry = source_for(double).write_bundle(bundle)
    assert (retry.created, retry.failed) == (1, 0)
    assert double.count("Note") == len(notes)


def test_objects_referring_to_a_failed_object_are_not_attempted(double, day):
    _, bundle = day
    indicators = [o for o in bundle["objects"] if o["type"] == "indicator"]
    relationships = [o for o in bundle["objects"] if o["type"] == "relationship"]
    double.fail_on("indicatorAdd", n=1, status=400)

    stats = source_for(double).write_bundle(bundle)

    failed_indicator = next(f.split(":")[0] for f in stats.failures if "HTTP 400" in f)
    dependents = [r["id"] for r in relationships if failed_indicator in
                  (r["source_ref"], r["target_ref"])]
    assert dependents and stats.failed == 1 + len(dependents)
    assert all(any(f.startswith(d) and "not attempted" in f for f in stats.failures)
               for d in dependents)
    assert double.count("Indicator") == len(indicators) - 1
    assert double.calls_to("stixCoreRelationshipAdd") == len(relationships) - len(dependents)


def test_phases_put_every_object_after_what_it_refers_to():
    items = [
        {"id": "relationship--1", "source_ref": "indicator--1", "target_ref": "ipv4-addr--1"},
        {"id": "note--1", "object_refs": ["ipv4-addr--1"], "created_by_ref": "identity--1"},
        {"id": "indicator--1", "created_by_ref": "identity--1"},
        {"id": "ipv4-addr--1", "object_marking_refs": ["marking-definition--x"]},
        {"id": "identity--1"},
    ]
    phases = [[item["id"] for item in phase] for phase in _phases(items)]
    assert phases == [["ipv4-addr--1", "identity--1"], ["note--1", "indicator--1"],
                      ["relationship--1"]]


def test_stale_verdict_labels_come_off_without_reading_each_observable(day):
    frames, bundle = day
    stale = {0: "cti:benign", 3: "cti:malicious"}  # index 0 is malicious, 3 suspicious now
    with OpenCTIDouble(day_bench.TOKEN) as double:
        for index, item in enumerate(frames["seed"]):
            labels = (*item["labels"], *([stale[index]] if index in stale else []))
            double.add_observable(item["entity_type"], item["value"], item["created_at"],
                                  markings=tuple(item["markings"]), labels=labels,
                                  hashes=item["hashes"])
        for name in day_bench.THREATS:
            double.add_threat("Intrusion-Set", name)

        stats = source_for(double).write_bundle(bundle)

        assert stats.failed == 0, stats.failures
        ids = frames["scores"]["stix_id"].tolist()
        assert "cti:malicious" in double.label_values(double.get(ids[0]))
        assert "cti:suspicious" in double.label_values(double.get(ids[3]))
        for index in stale:
            assert stale[index] not in double.label_values(double.get(ids[index]))
        assert double.calls_to("stixCyberObservable") == 0  # the existence check had them
        assert double.invalid == [] and double.unsupported == []
