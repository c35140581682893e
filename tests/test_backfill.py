"""Backfill parameters: inclusive day ranges, job selections, clear errors."""

import pytest

from cti_assets.cli.backfill import BackfillError, backfill_params, day_keys


def test_day_keys_are_inclusive_across_a_month_end():
    assert day_keys("2026-10-30", "2026-11-02") == [
        "2026-10-30",
        "2026-10-31",
        "2026-11-01",
        "2026-11-02",
    ]


def test_reversed_or_malformed_ranges_are_refused_with_a_message():
    with pytest.raises(BackfillError, match="before"):
        day_keys("2026-11-02", "2026-11-01")
    with pytest.raises(BackfillError, match="YYYY-MM-DD"):
        day_keys("yesterday", "2026-11-01")


def test_rescore_job_selects_only_stored_lookups_consumers_at_low_priority():
    """Scores from the stored lookups, then their write-back: no lookup asset."""
    params = backfill_params("2026-11-01", "2026-11-01", job="rescore")
    assert params["assetSelection"] == [
        {"path": ["merged_enrichment"]},
        {"path": ["observable_scores"]},
        {"path": ["opencti_writeback"]},
    ]
    assert {"key": "dagster/priority", "value": "-10"} in params["tags"]


def test_default_selection_is_the_whole_graph():
    params = backfill_params("2026-11-01", "2026-11-01")
    names = {"/".join(a["path"]) for a in params["assetSelection"]}
    assert {"observables", "virustotal_lookups", "opencti_writeback"} <= names
