"""Merge and score a day a slice of rows at a time, so re-scoring a million observables fits a
small worker.

Merging and scoring are row-wise: an observable's row needs only its own lookup rows (and its
threat-context row). The stored observables and lookups are read in slices of the same rows,
merged, scored and handed on slice by slice; what the metadata and the blocking checks need
(counts, the top scores, id fingerprints) is gathered on the way in `ScoreSummary`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cti_assets import settings
from cti_assets.providers.typed_fields import has_typed_fields, typed_field_columns
from cti_assets.scoring.explain import histogram, top_table_markdown, verdict_counts
from cti_assets.scoring.merge import merge_lookups
from cti_assets.scoring.model import score_frame
from cti_assets.scoring.policy import apply_score_policy
from cti_assets.scoring.weights import ScoringWeights
from cti_assets.storage.parquet import StoredTable
from cti_assets.tables import MERGED_LOOKUP_COLUMNS

# The lookup columns merging reads; the others (latency, message, ...) stay on disk.
MERGE_LOOKUP_COLUMNS: list[str] = ["stix_id", *MERGED_LOOKUP_COLUMNS, "fields"]
TOP_ROWS = 10


def merge_lookup_columns(provider: str) -> list[str]:
    """MERGE_LOOKUP_COLUMNS and the provider's typed field columns, where stored."""
    return [*MERGE_LOOKUP_COLUMNS, *typed_field_columns(provider)]


def merge_batches(
    observables: StoredTable,
    lookups: dict[str, StoredTable],
    rows: int = settings.DEFAULT_BATCH_ROWS,
) -> Iterator[pd.DataFrame]:
    """merged_enrichment in slices of `rows` observables (at least one slice, maybe empty).

    A lookup table stored in the observables' row order (as the lookup assets write them) is
    read slice by slice beside them; one in any other order is read whole and joined on stix_id.
    The orders are compared a slice of ids at a time, so no step holds a whole day's ids.
    """
    projected = {
        provider: table.project([c for c in table.columns if c != "fields"])  # not parsed
        if has_typed_fields(provider, table.columns) else table
        for provider, table in lookups.items()
    }
    in_order = _in_observables_order(observables, projected, rows)
    # Slices in order stay Arrow tables: merge_lookups takes their typed columns as they are.
    # Their ids are the observables' (just compared), so they are not read a second time: each
    # slice gets the observables' ids of its rows instead.
    slices: dict[str, Iterator[pa.Table] | pd.DataFrame] = {
        provider: table.project([c for c in table.columns if c != "stix_id"]).tables_ahead(rows)
        if provider in in_order else table.read()
        for provider, table in projected.items()
    }
    for frame in observables.frames(rows):
        ids = pa.chunked_array([_single_array(pa.array(frame["stix_id"], from_pandas=True))])
        batch: dict[str, pd.DataFrame | pa.Table] = {
            provider: source if isinstance(source, pd.DataFrame)
            else next(source).append_column("stix_id", ids)
            for provider, source in slices.items()
        }
        yield merge_lookups(frame, batch)


def _in_observables_order(observables: StoredTable, tables: dict[str, StoredTable],
                          rows: int) -> set[str]:
    """The tables holding the observables' stix_ids in their order: the ids of all of them
    read side by side a slice at a time, the observables' once. Each table's next slice of ids
    is decoded on a thread of its own while this one compares (merging waits for the answer)."""
    same = {name for name, table in tables.items()
            if "stix_id" in table.columns and table.num_rows == observables.num_rows}
    streams = {name: tables[name].project(["stix_id"]).tables_ahead(rows)
               for name in same}
    for mine in observables.project(["stix_id"]).tables_ahead(rows):
        if not same:
            break
        ids = _single_array(mine.column("stix_id"))
        for name in sorted(same):
            theirs = _single_array(next(streams[name]).column("stix_id"))
            if not _same_rows(ids, theirs):
                same.discard(name)
    return same


def _same_rows(ids: pa.Array, other: pa.Array) -> bool:
    if len(ids) != len(other) or other.null_count:
        return False
    return bool(pc.all(pc.equal(ids.cast(pa.large_string()),
                                other.cast(pa.large_string()))).as_py())


class SummaryMetadata(TypedDict):
    rows: int
    verdicts: dict[str, int]
    histogram: dict[str, int]
    top_scores: str  # Markdown


@dataclass
class ScoreSummary:
    """What the scores' metadata and blocking checks need, gathered slice by slice.

    Ids are kept as 128-bit fingerprints (16 bytes a row instead of the id's 50 or so), so the
    summary of ten million rows stays small; two distinct ids share a fingerprint with a
    probability of about 1e-25 at that size.
    """

    rows: int = 0
    verdicts: Counter = field(default_factory=Counter)
    histogram: Counter = field(default_factory=Counter)
    out_of_range: int = 0
    unexplained: int = 0
    fingerprints: list[np.ndarray] = field(default_factory=list)
    # Rows added with the merged ids of the same slice, and whether every one matched them.
    aligned_rows: int = 0
    aligned: bool = True
    top: list[pd.DataFrame] = field(default_factory=list)

    def add(self, scores: pd.DataFrame, merged_ids: pa.Array | None = None) -> None:
        """Count a slice of scores; `merged_ids`: the ids of the merged slice they scored."""
        self.rows += len(scores)
        self.verdicts.update(verdict_counts(scores))
        self.histogram.update(histogram(scores))
        for name in ("score", "confidence"):
            values = scores[name].dropna()
            self.out_of_range += int(((values < 0) | (values > 100)).sum())
        explanation = _single_array(pa.array(scores["explanation"], from_pandas=True))
        blank = pc.equal(pc.utf8_trim_whitespace(explanation), "")
        self.unexplained += explanation.null_count + _count(blank)
        ids = _single_array(pa.array(scores["stix_id"], from_pandas=True))
        self.fingerprints.append(_fingerprints(ids))
        if merged_ids is not None:
            self.aligned_rows += len(scores)
            self.aligned &= _same_rows(_single_array(merged_ids), ids)
        self.top.append(_top_candidates(scores))

    def metadata(self) -> SummaryMetadata:
        top = pd.concat(self.top, ignore_index=True) if self.top else pd.DataFrame()
        return {
            "rows": self.rows,
            "verdicts": {name: int(count) for name, count in self.verdicts.items()},
            "histogram": {name: int(count) for name, count in self.histogram.items()},
            "top_scores": top_table_markdown(top, n=TOP_ROWS),
        }

    def checks(self, merged: pa.Array | StoredTable,
               ) -> dict[str, tuple[bool, dict[str, int]]]:
        """check name -> (passed, evidence) for the four blocking checks, against the merged
        table's ids (the stored table, read a slice at a time only when the scores were not
        all seen beside their merged slices, or the ids themselves)."""
        mine = _fingerprint_rows(self.fingerprints)
        merged_rows = merged.num_rows if isinstance(merged, StoredTable) else len(merged)
        if self.aligned and self.aligned_rows == self.rows == merged_rows:
            missing = extra = 0
        else:
            theirs = _fingerprint_rows(
                [_fingerprints(_single_array(t.column("stix_id")))
                 for t in merged.project(["stix_id"]).tables(settings.DEFAULT_BATCH_ROWS)]
                if isinstance(merged, StoredTable) else [_fingerprints(_single_array(merged))])
            missing = len(theirs) - int(np.isin(theirs, mine).sum())
            extra = len(mine) - int(np.isin(mine, theirs).sum())
        duplicates = _duplicates(self.fingerprints)
        return {
            "score_in_range": (self.out_of_range == 0, {"out_of_range": self.out_of_range}),
            "one_row_per_observable": (
                not missing and not extra and self.rows == merged_rows,
                {"missing": missing, "extra": extra, "rows": self.rows},
            ),
            "no_duplicate_ids": (duplicates == 0, {"duplicates": duplicates}),
            "every_score_explained": (self.unexplained == 0, {"unexplained": self.unexplained}),
        }


# Two independent 64-bit keyed hashes (SipHash, pandas' hash_array) make an id's fingerprint.
_FINGERPRINT_KEYS = ("cti-assets-ids-1", "cti-assets-ids-2")


def _fingerprints(ids: pa.Array) -> np.ndarray:
    """(rows, 2) uint64: each id's two keyed hashes."""
    values = ids.to_numpy(zero_copy_only=False)
    if not len(values):
        return np.zeros((0, 2), dtype=np.uint64)
    return np.column_stack([pd.util.hash_array(values, hash_key=key, categorize=False)
                            for key in _FINGERPRINT_KEYS])


def _fingerprint_rows(parts: list[np.ndarray]) -> np.ndarray:
    """Fingerprints as one 16-byte value per row (comparable with np.isin and np.unique)."""
    joined = np.ascontiguousarray(np.concatenate([*parts, np.zeros((0, 2), np.uint64)]))
    return joined.view(np.dtype((np.void, 16))).ravel()


def _duplicates(parts: list[np.ndarray]) -> int:
    """Rows whose id an earlier row already has: the first hash finds the candidates with one
    sort, the whole fingerprint decides among them."""
    first = np.sort(np.concatenate([p[:, 0] for p in parts] + [np.zeros(0, np.uint64)]))
    repeated = first[1:][first[1:] == first[:-1]]
    if not repeated.size:
        return 0
    candidates = [p[np.isin(p[:, 0], repeated)] for p in parts]
    rows = _fingerprint_rows(candidates)
    return len(rows) - len(np.unique(rows))


def _single_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One large_string Array: pandas' Arrow-backed columns come back chunked (an empty one
    always), and concat_arrays takes plain arrays only."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.large_string())


def _count(mask: pa.Array) -> int:
    return pc.sum(mask).as_py() or 0


def _top_candidates(scores: pd.DataFrame) -> pd.DataFrame:
    """Rows that can be among the TOP_ROWS highest scores (all ties of the last one kept), so
    the top table over every slice's candidates is the top table of the whole."""
    score = scores["score"].to_numpy(dtype=float, na_value=np.nan)
    scored = np.flatnonzero(~np.isnan(score))
    if len(scored) > TOP_ROWS:
        cutoff = np.partition(score[scored], len(scored) - TOP_ROWS)[len(scored) - TOP_ROWS]
        scored = scored[score[scored] >= cutoff]
    return scores.iloc[scored]


def score_batches(
    merged: StoredTable,
    context: pd.DataFrame | None,
    summary: ScoreSummary,
    weights: ScoringWeights | None = None,
    policy: str = "keep_higher",
    rows: int = settings.DEFAULT_BATCH_ROWS,
) -> Iterator[pd.DataFrame]:
    """observable_scores in slices of `rows`, each added to `summary` as it goes."""
    for frame in merged.frames(rows):
        scores = apply_score_policy(score_frame(frame, context, weights), policy)
        summary.add(scores, pa.array(frame["stix_id"], from_pandas=True))
        yield scores
    # Hand the text intermediates back to the OS once, not after every slice: the allocator
    # reuses them for the next slice, and returning and faulting them in again per slice cost
    # about a second of system time per million rows.
    pa.default_memory_pool().release_unused()
