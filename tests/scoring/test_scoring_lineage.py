"""The scores' column lineage is what the scoring code reads: traced over a synthetic frame at
definition time, it reaches the typed lookup columns through merged_enrichment."""

from __future__ import annotations

from cti_assets.providers.fields import PROVIDER_FIELDS, column
from cti_assets.schemas import asset_columns
from cti_assets.scoring.lineage import (
    CONTEXT,
    MERGED,
    merged_lineage,
    score_lineage_reaches,
    score_reads,
)
from cti_assets.scoring.rules import RULES


def test_score_reaches_typed_lookup_columns():
    assert score_lineage_reaches("score", "virustotal_lookups", "virustotal__malicious")
    assert score_lineage_reaches("score", "abuseipdb_lookups", "abuseipdb__abuse_confidence_score")
    # read by the rule although its documented field list does not name it
    assert score_lineage_reaches("score", "abuseipdb_lookups", "abuseipdb__total_reports")
    # not something scoring reads
    assert not score_lineage_reaches("score", "shodan_lookups", "shodan__org")


def test_every_rule_is_seen_reading_the_fields_it_documents():
    """Each rule's documented provider fields are read (the label rule documents a cross
    product of providers and fields, so each of its providers needs one field read)."""
    reads = set(score_reads()["score"][MERGED])
    for spec in RULES:
        for provider in spec.providers:
            documented = {column(provider, f) for f in spec.fields
                          if f in PROVIDER_FIELDS[provider]}
            if documented:
                assert documented & reads, (spec.name, provider)


def test_confidence_reads_statuses_not_evidence_fields():
    confidence = set(score_reads()["confidence"][MERGED])
    assert column("virustotal", "status") in confidence
    assert column("virustotal", "malicious") not in confidence
    assert set(score_reads()["verdict"][MERGED]) >= confidence
    assert "n_known_links" in score_reads()["score"][CONTEXT]


def test_merged_lineage_points_at_columns_the_upstream_tables_have():
    for merged, (asset, name) in merged_lineage().items():
        assert merged in asset_columns(MERGED)
        assert name in asset_columns(asset), (merged, asset, name)
