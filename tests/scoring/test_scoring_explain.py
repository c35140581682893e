"""Explanations: the whole derivation of a score, tables, histograms, lineage."""

from __future__ import annotations

import json

from cti_assets.scoring.context import build_threat_context
from cti_assets.scoring.explain import (
    explain_text,
    histogram,
    top_table_markdown,
    verdict_counts,
)
from cti_assets.scoring.model import score_frame
from cti_assets.scoring.policy import apply_score_policy
from tests.scoring.scoring_factories import Lookup, digest_of, merged_rows, observable

LYNX_ID = "intrusion-set--7"


def _scored():
    from cti_assets.sources.base import ThreatEntity, ThreatLink

    vt_fields = {"malicious": 23, "harmless": 40, "undetected": 8}
    specs = [
        (observable(0, existing_score=90), {
            "virustotal": Lookup(fields=vt_fields),
            "abuseipdb": Lookup(fields={"abuse_confidence_score": 100, "total_reports": 312,
                                        "num_distinct_users": 40}),
            "greynoise": Lookup(status="deferred", reason="budget"),
        }),
        (observable(1), {"virustotal": Lookup(status="not_found")}),
        (observable(2, status="rejected", reason="bad"), {}),
    ]
    merged = merged_rows(specs)
    lynx = ThreatEntity(LYNX_ID, "intrusion-set", "Crimson Lynx")
    links = [ThreatLink(merged["stix_id"].iloc[0], lynx, "indicator", "indicates", "indicator--1")]
    context = build_threat_context(merged, links, [lynx], merged)
    scores = apply_score_policy(score_frame(merged, context))
    return merged, context, scores, vt_fields


def test_explain_text_shows_the_whole_derivation():
    merged, context, scores, vt_fields = _scored()
    row = scores.iloc[0].to_dict() | {"links": context["links"].iloc[0]}
    digest = digest_of("virustotal", row["stix_id"], vt_fields)
    body = json.dumps({"data": {"attributes": {"last_analysis_stats": vt_fields}}}).encode()
    text = explain_text(row, lookups={"greynoise": {"status": "deferred", "reason": "budget",
                                                    "message": "daily budget used"}},
                        raw_bodies={digest: body})
    assert text.startswith(f"{row['normalized_value']} (IPv4-Addr, {row['stix_id']}): malicious")
    assert "vt_malicious: VirusTotal malicious = 23" in text
    assert "abuse_confidence: AbuseIPDB abuse_confidence_score = 100" in text
    assert "threat_link" in text
    assert "GreyNoise          deferred:budget (daily budget used)" in text
    assert "intrusion-set Crimson Lynx via indicator (indicates), indicator indicator--1" in text
    assert "Write-back: raised (existing score 90, final score" in text
    assert f"VirusTotal raw {digest}:" in text and "last_analysis_stats" in text


def test_explain_text_of_a_rejected_row_and_a_row_without_evidence():
    _, _, scores, _ = _scored()
    rejected = explain_text(scores.iloc[2])
    assert rejected.splitlines()[0].endswith(": no score")
    assert "observable rejected: bad" in rejected
    empty = explain_text(scores.iloc[1])
    assert "Evidence (contribution in score points):\n  none" in empty
    assert "VirusTotal         not_found" in empty


def test_tables_histogram_and_counts():
    _, _, scores, _ = _scored()
    table = top_table_markdown(scores, n=2).splitlines()
    assert table[0].startswith("| # | value |") and len(table) == 4
    assert "| 1 |" in table[2] and "malicious" in table[2]
    counts = histogram(scores)
    assert sum(counts.values()) == len(scores) and counts["unscored"] == 1
    assert counts["0-9"] == 1 and list(counts)[-2] == "90-100"
    assert verdict_counts(scores) == {"malicious": 1, "suspicious": 0, "benign": 0,
                                      "unknown": 2}
