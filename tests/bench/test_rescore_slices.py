"""Re-scoring in slices: the same tables as in one piece, and a peak that follows the slice size,
not the day's size (the property the 1M / 3M / 10M benchmark relies on).

The stored history is the benchmark's (bench/rescore.py), re-scored in process the way the
rescore job's two steps do it. Memory is counted, not timed: Python and numpy allocations with
tracemalloc, Arrow's through a proxy pool standing in for the pool the writer switches to.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import rescore
from cti_assets.scoring.batched import (
    ScoreSummary,
    merge_batches,
    merge_lookup_columns,
    score_batches,
)
from cti_assets.storage.parquet import FrameBatches, StoredTable

SLICE = 4_000


def _rescore(outputs: Path, rows: int, tag: str) -> tuple[Path, Path, ScoreSummary]:
    """merged_enrichment then observable_scores, `rows` observables at a time."""
    observables = StoredTable(outputs / "observables" / f"{rescore.DAY}.parquet")
    lookups = {
        p: StoredTable(outputs / f"{p}_lookups" / f"{rescore.DAY}.parquet",
                       merge_lookup_columns(p))
        for p in rescore.LOOKUP_PROVIDERS
    }
    merged_path = outputs / f"merged-{tag}.parquet"
    FrameBatches(merge_batches(observables, lookups, rows)).write(merged_path)
    summary = ScoreSummary()
    merged = StoredTable(merged_path)
    scores_path = outputs / f"scores-{tag}.parquet"
    FrameBatches(score_batches(merged, None, summary, None, "keep_higher", rows)).write(
        scores_path)
    checks = summary.checks(merged)
    assert all(passed for passed, _ in checks.values()), checks
    return merged_path, scores_path, summary


@pytest.fixture(scope="module")
def histories(tmp_path_factory) -> dict[int, Path]:
    """Stored histories of 2 and 4 slices (the larger written as two renumbered chunks)."""
    out = {}
    for slices in (2, 4):
        outputs = tmp_path_factory.mktemp(f"history-{slices}")
        rescore.write_history(outputs, slices * SLICE, chunk=2 * SLICE)
        out[slices] = outputs
    return out


def test_sliced_rescore_writes_the_same_tables_as_one_piece(histories):
    outputs = histories[4]
    whole_merged, whole_scores, whole = _rescore(outputs, 4 * SLICE, "whole")
    sliced_merged, sliced_scores, sliced = _rescore(outputs, SLICE, "sliced")
    for one, other in ((whole_merged, sliced_merged), (whole_scores, sliced_scores)):
        assert pq.read_table(one).equals(pq.read_table(other), check_metadata=True)
    assert pq.ParquetFile(sliced_scores).metadata.num_row_groups == 4
    assert pq.read_table(sliced_scores).num_rows == 4 * SLICE
    assert sliced.metadata() == whole.metadata()
    assert sliced.checks(StoredTable(sliced_merged)) == whole.checks(StoredTable(whole_merged))


def _peak_bytes(outputs: Path, rows: int, tag: str, monkeypatch) -> int:
    """Peak of Python/numpy memory plus peak of Arrow memory during one re-score."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    monkeypatch.setattr(pa, "jemalloc_memory_pool", lambda: pool)
    tracemalloc.start()
    try:
        _rescore(outputs, rows, tag)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return python_peak + pool.max_memory()


def test_peak_memory_follows_the_slice_not_the_number_of_slices(histories, monkeypatch):
    _rescore(histories[2], SLICE, "warm-up")  # lists and models loaded once per process
    two = _peak_bytes(histories[2], SLICE, "two", monkeypatch)
    four = _peak_bytes(histories[4], SLICE, "four", monkeypatch)
    whole = _peak_bytes(histories[4], 4 * SLICE, "four-whole", monkeypatch)
    # Twice the rows in the same slices: the peak stays within a fifth (what grows with the
    # day is 16 bytes of id fingerprint a row and the top-score candidates).
    assert four < 1.2 * two, (two, four)
    # The measure can see growth: the same four slices' rows in one piece peak far higher.
    assert whole > 2 * four, (four, whole)


def test_benchmark_reports_each_size_with_its_load(tmp_path):
    import argparse

    args = argparse.Namespace(rescore_n=300, rescore_scale=[900], rescore_batch_rows=100,
                              rescore_repeat=1)
    result = rescore.measure(args, tmp_path)
    assert [size["n"] for size in result["scaling"]] == [300, 900]
    assert all(size["rows"] == size["n"] and size["peak_gb"] > 0 and len(size["load"]) == 1
               for size in result["scaling"])
    assert result["largest_over_base"] == round(
        result["scaling"][1]["wall_s"] / result["wall_s"], 2)
    text = rescore.section(result)
    assert "Growth with the day" in text and "| 900 |" in text
