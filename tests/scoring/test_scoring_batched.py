"""Merging and scoring in slices gives exactly the tables of doing it whole, and the summary
the checks read sees every slice."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from bench.rescore import LOOKUP_PROVIDERS, lookups_table, observables_table
from cti_assets.scoring.batched import (
    MERGE_LOOKUP_COLUMNS,
    ScoreSummary,
    merge_batches,
    merge_lookup_columns,
    score_batches,
)
from cti_assets.scoring.explain import histogram, top_table_markdown, verdict_counts
from cti_assets.scoring.merge import merge_lookups
from cti_assets.scoring.model import score_frame
from cti_assets.scoring.policy import apply_score_policy
from cti_assets.storage.parquet import FrameBatches, StoredTable, read_frame

N = 61


def _parquet(frame: pd.DataFrame) -> bytes:
    return FrameBatches([frame]).to_parquet()


@pytest.fixture(scope="module")
def stored():
    observables = observables_table(N)
    lookups = {p: lookups_table(p, observables, seed)
               for seed, p in enumerate(LOOKUP_PROVIDERS, start=1)}
    return _parquet(observables), {p: _parquet(f) for p, f in lookups.items()}


def _tables(stored, shuffle: str | None = None):
    observables, lookups = stored
    tables = {}
    for provider, data in lookups.items():
        if provider == shuffle:
            frame = read_frame(data).sample(frac=1.0, random_state=7)
            data = _parquet(frame.iloc[5:])  # out of order, and some rows missing
        tables[provider] = StoredTable(data, MERGE_LOOKUP_COLUMNS)
    return StoredTable(observables), tables


@pytest.mark.parametrize("shuffle", [None, "virustotal"])
def test_merging_in_slices_equals_merging_whole(stored, shuffle):
    observables, lookups = _tables(stored, shuffle)
    whole = merge_lookups(observables.read(), {p: t.read() for p, t in lookups.items()})
    sliced = list(merge_batches(observables, lookups, rows=10))
    assert [len(f) for f in sliced] == [10] * 6 + [1]
    pd.testing.assert_frame_equal(pd.concat(sliced, ignore_index=True), whole)
    if shuffle:
        assert whole["virustotal__status"].isna().sum() == 5


def test_stored_typed_fields_merge_like_the_json_without_parsing_it(stored):
    observables, from_json = _tables(stored)
    assert all("fields" in t.columns and "virustotal__malicious" not in t.columns
               for t in from_json.values())
    expected = pd.concat(merge_batches(observables, from_json, rows=16), ignore_index=True)
    typed = {}
    for provider, data in stored[1].items():
        frame = read_frame(data)
        assert frame.filter(like=f"{provider}__").notna().any().any()
        frame["fields"] = "not json at all"  # read, it would fail the merge
        typed[provider] = StoredTable(_parquet(frame), merge_lookup_columns(provider))
    merged = pd.concat(merge_batches(observables, typed, rows=16), ignore_index=True)
    pd.testing.assert_frame_equal(merged, expected)


def test_scoring_in_slices_equals_scoring_whole_and_summary_sees_every_slice(stored):
    observables, lookups = _tables(stored)
    merged = StoredTable(FrameBatches(merge_batches(observables, lookups, rows=25)).to_parquet())
    expected = apply_score_policy(score_frame(merged.read(), None), "keep_higher")
    summary = ScoreSummary()
    sliced = list(score_batches(merged, None, summary, rows=8))
    assert len(sliced) == 8
    pd.testing.assert_frame_equal(pd.concat(sliced, ignore_index=True), expected)
    gathered = summary.metadata()
    assert gathered["rows"] == N
    assert gathered["verdicts"] == verdict_counts(expected)
    assert gathered["histogram"] == histogram(expected)
    assert gathered["top_scores"] == top_table_markdown(expected, n=10)
    checks = summary.checks(merged.column("stix_id"))
    assert all(passed for passed, _ in checks.values()), checks


def test_checks_name_missing_extra_and_duplicate_rows(stored):
    observables, lookups = _tables(stored)
    merged = StoredTable(FrameBatches(merge_batches(observables, lookups)).to_parquet())
    scores = apply_score_policy(score_frame(merged.read(), None), "keep_higher")
    summary = ScoreSummary()
    summary.add(scores.iloc[:40])
    summary.add(scores.iloc[38:50])  # rows 38 and 39 twice, 50.. never
    checks = summary.checks(merged.column("stix_id"))
    assert checks["no_duplicate_ids"] == (False, {"duplicates": 2})
    passed, evidence = checks["one_row_per_observable"]
    assert not passed and evidence == {"missing": N - 50, "extra": 0, "rows": 52}
    extra = summary.checks(pa.array(scores["stix_id"].iloc[:30].tolist()))
    assert extra["one_row_per_observable"][1]["extra"] == 22  # rows 30-49, two twice
    assert checks["score_in_range"][0] and checks["every_score_explained"][0]


def test_blank_or_missing_explanations_and_out_of_range_scores_fail_their_checks(stored):
    observables, lookups = _tables(stored)
    merged = StoredTable(FrameBatches(merge_batches(observables, lookups)).to_parquet())
    scores = apply_score_policy(score_frame(merged.read(), None), "keep_higher")
    scores.loc[3, "explanation"] = "   "
    scores.loc[4, "explanation"] = None
    scores.loc[5, "score"] = 130
    summary = ScoreSummary()
    summary.add(scores.iloc[:30])
    summary.add(scores.iloc[30:])
    checks = summary.checks(merged.column("stix_id"))
    assert checks["every_score_explained"] == (False, {"unexplained": 2})
    assert checks["score_in_range"] == (False, {"out_of_range": 1})
    assert checks["one_row_per_observable"][0] and checks["no_duplicate_ids"][0]
    assert "| 1 |" in summary.metadata()["top_scores"]
    assert "| 130 |" in summary.metadata()["top_scores"]


@pytest.mark.parametrize("shuffle", [None, "virustotal"])
def test_lookup_slices_as_arrow_merge_like_their_frames(stored, shuffle):
    """merge_lookups takes a lookup slice read as Arrow (typed fields, in the observables'
    order: straight from its columns; otherwise made a frame) to the same merged frame, dtypes
    included, as the slice read as pandas."""
    observables, lookups = _tables(stored, shuffle)
    typed = {p: StoredTable(t._file.read().to_pandas().pipe(_parquet),  # typed columns too
                            merge_lookup_columns(p)) for p, t in lookups.items()}
    frame = observables.read()
    as_frames = merge_lookups(frame, {p: t.read() for p, t in typed.items()})
    as_arrow = merge_lookups(frame, {p: next(t.tables(N)) for p, t in typed.items()})
    pd.testing.assert_frame_equal(as_arrow, as_frames)
    assert as_arrow.filter(like="virustotal__").notna().any().any()
    if shuffle:
        assert as_arrow["virustotal__status"].isna().sum() == 5
