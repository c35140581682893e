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


# --- the environment, checked before anything is sent -------------------------------------


@pytest.fixture
def nothing_sent(monkeypatch):
    import requests

    def refuse(*args, **kwargs):
        raise AssertionError("a request was sent")

    monkeypatch.setattr(requests, "post", refuse)


@pytest.mark.parametrize(("name", "value"), [("CTI_PARTITIONS_START", "garbage"),
                                             ("CTI_BATCH_ROWS", "abc")])
def test_a_bad_setting_is_refused_naming_it_before_anything_is_sent(
        monkeypatch, nothing_sent, name, value):
    from cti_assets.cli.backfill import launch_backfill

    monkeypatch.setenv(name, value)
    with pytest.raises(BackfillError) as error:
        launch_backfill("2026-11-01", "2026-11-02")
    assert str(error.value).startswith(f"{name} must be ") and repr(value) in str(error.value)


def test_a_bad_partitions_start_is_one_line_from_a_fresh_process(tmp_path):
    """The command module imports nothing the setting shapes, so the command's own check
    speaks (not an import's ValueError)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CTI_PARTITIONS_START": "garbage",
           "CTI_DATA_DIR": str(tmp_path / "data")}
    env.pop("DAGSTER_HOME", None)
    result = subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
        [sys.executable, "-m", "cti_assets.cli", "backfill", "--from", "2026-11-01",
         "--to", "2026-11-02", "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, check=False, timeout=120, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "cti-assets backfill: CTI_PARTITIONS_START must be a date, YYYY-MM-DD, got 'garbage'")
    assert not (tmp_path / "data").exists()
