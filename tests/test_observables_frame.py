"""The `observables` table: contract columns, one row per record, status and TLP per row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from cti_assets.intake.observable import TLP2_MARKING_IDS, TLP_MARKING_IDS, MarkingRef
from cti_assets.intake.observables import counts_by_type_and_status, observables_frame
from cti_assets.sources.base import ObservableRecord
from cti_assets.tables import OBSERVABLE_COLUMNS

CREATED = datetime(2025, 3, 10, 12, tzinfo=UTC)
EXPECTED_DTYPES = {name: ("object" if dtype == "list" else dtype)
                   for name, dtype in OBSERVABLE_COLUMNS.items()}


def record(entity_type: str, value: str, n: int = 0, **extra) -> ObservableRecord:
    return ObservableRecord(internal_id=f"internal-{n}", stix_id=f"x--{n}",
                            entity_type=entity_type, value=value,
                            created_at=CREATED + timedelta(seconds=n), **extra)


def dtypes_of(frame: pd.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.dtypes.items()}


def test_columns_and_dtypes_follow_the_contract():
    frame = observables_frame([record("IPv4-Addr", "198.51.100.1", labels=("c2",), score=70)])
    assert list(frame.columns) == list(OBSERVABLE_COLUMNS)
    assert dtypes_of(frame) == EXPECTED_DTYPES


def test_empty_input_gives_an_empty_typed_frame():
    frame = observables_frame([])
    assert len(frame) == 0
    assert list(frame.columns) == list(OBSERVABLE_COLUMNS)
    assert dtypes_of(frame) == EXPECTED_DTYPES


def test_every_record_gets_a_row_with_a_status():
    records = [
        record("IPv4-Addr", " 198.51.100.1 ", 0),
        record("IPv4-Addr", "999.1.2.3", 1),
        record("StixFile", "A" * 40, 2),
        record("Email-Addr", "a@b.example", 3),
        record("Domain-Name", "", 4),
    ]
    frame = observables_frame(records)
    assert list(frame["stix_id"]) == [r.stix_id for r in records]
    assert list(frame["value"]) == [r.value for r in records]
    assert list(frame["status"]) == ["ok", "rejected", "ok", "skipped", "rejected"]
    ok, rejected = frame[frame.status == "ok"], frame[frame.status == "rejected"]
    assert ok["reason"].isna().all() and ok["normalized_value"].notna().all()
    assert rejected["reason"].notna().all() and rejected["normalized_value"].isna().all()
    assert frame.loc[0, "normalized_value"] == "198.51.100.1"
    assert frame.loc[2, ["normalized_value", "hash_type"]].tolist() == ["a" * 40, "SHA-1"]
    assert frame.loc[3, "reason"] == "out_of_scope"
    assert list(frame["created_at"]) == [r.created_at for r in records]


def test_tlp_is_the_most_restrictive_marking_or_the_unmarked_policy(monkeypatch):
    monkeypatch.delenv("CTI_UNMARKED_TLP", raising=False)
    records = [
        record("IPv4-Addr", "198.51.100.1", 0,
               markings=(MarkingRef(TLP_MARKING_IDS["TLP:GREEN"]),
                         MarkingRef(TLP_MARKING_IDS["TLP:AMBER+STRICT"]))),
        record("IPv4-Addr", "198.51.100.2", 1,
               markings=(MarkingRef("m-1", "TLP", "TLP:RED"),
                         MarkingRef("m-2", "PAP", "PAP:CLEAR"))),
        record("IPv4-Addr", "198.51.100.3", 2, markings=(MarkingRef("m-3", "PAP", "PAP:RED"),)),
        record("IPv4-Addr", "198.51.100.4", 3),
        record("IPv4-Addr", "198.51.100.5", 4,
               markings=(MarkingRef(TLP2_MARKING_IDS["TLP:AMBER+STRICT"]),)),
        record("IPv4-Addr", "198.51.100.6", 5, markings=(MarkingRef("marking-definition--x"),)),
    ]
    frame = observables_frame(records)
    assert list(frame["tlp"]) == [
        "TLP:AMBER+STRICT", "TLP:RED", "TLP:CLEAR", "TLP:CLEAR", "TLP:AMBER+STRICT", "TLP:RED"]
    assert frame["tlp_reason"].astype(object).where(frame["tlp_reason"].notna(), None).tolist() == [
        None, None, "unmarked", "unmarked", None, "tlp_unresolved: marking-definition--x"]
    assert list(observables_frame(records, unmarked_tlp="TLP:AMBER")["tlp"])[2:4] == [
        "TLP:AMBER", "TLP:AMBER"]
    monkeypatch.setenv("CTI_UNMARKED_TLP", "TLP:GREEN")
    assert observables_frame(records)["tlp"].iloc[3] == "TLP:GREEN"


def test_lists_and_scores_survive_a_parquet_round_trip(tmp_path):
    records = [record("Url", "http://a.test", 0, labels=("phishing", "kit"), score=55,
                      markings=(MarkingRef(TLP_MARKING_IDS["TLP:AMBER"]),)),
               record("Url", "http://b.test", 1)]
    frame = observables_frame(records)
    frame.to_parquet(tmp_path / "observables.parquet")
    back = pd.read_parquet(tmp_path / "observables.parquet")
    assert [list(labels) for labels in back["labels"]] == [["phishing", "kit"], []]
    assert back["existing_score"].tolist()[0] == 55 and pd.isna(back["existing_score"][1])
    assert back["created_at"].tolist() == frame["created_at"].tolist()


def test_counts_by_type_and_status():
    frame = observables_frame([
        record("IPv4-Addr", "198.51.100.1", 0), record("IPv4-Addr", "300.1.1.1", 1),
        record("IPv4-Addr", "198.51.100.2", 2), record("Url", "https://a.test/", 3),
    ])
    counts = counts_by_type_and_status(frame)
    assert counts == {"IPv4-Addr": {"ok": 2, "rejected": 1, "skipped": 0},
                      "Url": {"ok": 1, "rejected": 0, "skipped": 0}}
    assert all(type(n) is int for by_status in counts.values() for n in by_status.values())
    assert counts_by_type_and_status(observables_frame([])) == {}


def test_many_records_keep_one_row_each():
    kinds = ["IPv4-Addr", "Domain-Name", "Url", "StixFile"]
    values = ["10.0.{}.{}", "host{}.example{}", "http://h{}.example/{}", "{:032x}{:08x}"]
    records = [record(kinds[i % 4], values[i % 4].format(i % 250, i % 300), i)
               for i in range(20_000)]
    frame = observables_frame(records)
    assert len(frame) == len(records)
    assert frame["stix_id"].is_unique
    counts = counts_by_type_and_status(frame)
    assert sum(sum(by_status.values()) for by_status in counts.values()) == len(records)
    assert counts["IPv4-Addr"]["rejected"] > 0  # octets 256..299 are out of range


def test_a_stricter_copy_reaches_every_row_sharing_a_hash_with_it_step_by_step():
    """A (MD5 m, SHA-256 s) GREEN, B (MD5 m) RED, C (SHA-256 s) GREEN: C shares no hash with B,
    yet holds the same file as A, which holds B's: all three are RED. Rejected rows and other
    values are untouched, and the earliest id names the copy when two are equally strict."""
    from cti_assets.intake.observables import record_keys, with_strictest_tlp_per_value

    md5, sha256 = "5d41402abc4b2a76b9719d911017c592", "2c" + "f2" * 31
    green = (MarkingRef(TLP2_MARKING_IDS["TLP:GREEN"]),)
    red = (MarkingRef(TLP2_MARKING_IDS["TLP:RED"]),)
    records = [
        record("StixFile", sha256, 0, hashes={"MD5": md5, "SHA-256": sha256}, markings=green),
        record("StixFile", md5, 1, hashes={"MD5": md5}, markings=red),
        record("StixFile", sha256, 2, hashes={"SHA-256": sha256}, markings=green),
        record("IPv4-Addr", "198.51.100.9", 3, markings=green),
        record("IPv4-Addr", "999.1.2.3", 4, markings=green),
    ]
    frame = observables_frame(records)
    raised = with_strictest_tlp_per_value(frame, [record_keys(r) for r in records], {})
    assert list(raised["tlp"]) == ["TLP:RED"] * 3 + ["TLP:GREEN"] * 2
    assert list(raised["tlp_reason"].fillna("-")) == ["stricter_copy: x--1", "-",
                                                      "stricter_copy: x--1", "-", "-"]
    assert list(frame["tlp"]) == ["TLP:GREEN", "TLP:RED", "TLP:GREEN", "TLP:GREEN", "TLP:GREEN"]
