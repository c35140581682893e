"""The write-back benchmark on a tiny day: both write-backs run, the graph is checked, the
figures reach results.md."""

from __future__ import annotations

import argparse

from bench import report, writeback


def test_writeback_benchmark_counts_every_object_and_reports_the_speedup():
    args = argparse.Namespace(writeback_n=30, writeback_sample=10, writeback_latency_ms=0,
                              writeback_workers=[4])

    result = writeback.measure(args, None)

    sequential, concurrent = result["sequential"], result["concurrent"]
    assert sequential["extrapolated"] and sequential["objects"] < result["objects"]
    assert sequential["nodes_created"] == sequential["expected_new"] > 0
    assert concurrent["nodes_created"] == concurrent["expected_new"]
    assert concurrent["created"] == concurrent["expected_new"]
    assert concurrent["updated"] == 30 and concurrent["failed"] == 0
    assert concurrent["max_in_flight"] <= 4 and concurrent["invalid"] == 0
    assert concurrent["rerun"]["created"] == 0
    assert concurrent["rerun"]["nodes_created"] == concurrent["nodes_created"]
    assert result["lost"] == result["duplicated"] == 0
    assert result["speedup"] == round(sequential["wall_day_s"] / concurrent["wall_s"], 2)
    rows = {row[0]: row for row in report._writeback_rows(result)}
    assert any("speed-up" in name and row[2] == ">= 8x" for name, row in rows.items())
    assert "## Write-back throughput" in writeback.section(result)


def test_a_lost_object_and_a_duplicate_are_both_seen():
    class Double:
        def nodes(self):
            return [
                {"id": "a", "standard_id": "ipv4-addr--1", "stix_ids": [], "entity_type":
                 "IPv4-Addr"},
                {"id": "b", "standard_id": "note--1", "stix_ids": [], "entity_type": "Note"},
                {"id": "c", "standard_id": "note--2", "stix_ids": [], "entity_type": "Note"},
            ]

    bundle = {"objects": [{"id": "ipv4-addr--1"}, {"id": "note--1"}, {"id": "indicator--1"}]}
    result = writeback.check(Double(), bundle, {"IPv4-Addr": 1}, {"ipv4-addr--1"})

    assert result["lost"] == 1 and result["lost_examples"] == ["indicator--1"]
    assert result["nodes_created"] == 2 and result["expected_new"] == 2
    assert result["duplicated"] == 1  # note--2 is a node for nothing in the bundle
