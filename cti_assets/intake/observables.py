"""The `observables` table: source records, normalised, one row each, rejected ones included.

This is the first table of the pipeline and the only place values are normalised and TLP is
decided, so every later asset can trust `normalized_value` and `tlp` and filter on `status`.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from cti_assets.intake import observable
from cti_assets.intake.observable import (
    OUT_OF_SCOPE_STIX_TYPES,
    MarkingRef,
    Normalized,
    TlpDecision,
    decide_tlp,
    normalize,
)
from cti_assets.sources.base import ObservableRecord
from cti_assets.tables import (
    OBSERVABLE_COLUMNS,
    OBSERVABLE_OK,
    OBSERVABLE_OUT_OF_SCOPE,
    OBSERVABLE_REJECTED,
    OBSERVABLE_SKIPPED,
    OBSERVABLE_STATUSES,
)

_OUT_OF_SCOPE_ENTITY_TYPES = frozenset(OUT_OF_SCOPE_STIX_TYPES.values())


def observables_frame(
    records: list[ObservableRecord], unmarked_tlp: str | None = None
) -> pd.DataFrame:
    """One row per record with the columns and dtypes of frames.OBSERVABLE_COLUMNS.

    `unmarked_tlp` is the TLP of records without a TLP marking (default: the
    CTI_UNMARKED_TLP policy of cti_assets.intake.observable)."""
    unmarked = unmarked_tlp or observable.unmarked_tlp()
    tlp_cache: dict[tuple[MarkingRef, ...], TlpDecision] = {}
    columns: dict[str, list] = {name: [] for name in OBSERVABLE_COLUMNS}
    for record in records:
        out_of_scope = record.entity_type in _OUT_OF_SCOPE_ENTITY_TYPES
        result = (Normalized(None, OBSERVABLE_OUT_OF_SCOPE) if out_of_scope
                  else normalize(record.entity_type, record.value))
        tlp = tlp_cache.get(record.markings)
        if tlp is None:
            tlp = tlp_cache[record.markings] = decide_tlp(record.markings, unmarked)
        columns["internal_id"].append(record.internal_id)
        columns["stix_id"].append(record.stix_id)
        columns["entity_type"].append(record.entity_type)
        columns["value"].append(record.value)
        columns["normalized_value"].append(result.value)
        columns["hash_type"].append(result.hash_type)
        columns["tlp"].append(tlp.tlp)
        columns["tlp_reason"].append(tlp.reason)
        columns["marking_ids"].append(list(record.marking_ids))
        columns["labels"].append(list(record.labels))
        columns["existing_score"].append(record.score)
        columns["created_at"].append(record.created_at)
        columns["status"].append(OBSERVABLE_SKIPPED if out_of_scope
                                 else OBSERVABLE_OK if result.ok else OBSERVABLE_REJECTED)
        columns["reason"].append(result.reason)
    return _typed_frame(columns)


def _typed_frame(columns: dict[str, list]) -> pd.DataFrame:
    series: dict[str, pd.Series] = {}
    for name, dtype in OBSERVABLE_COLUMNS.items():
        values = columns[name]
        if dtype == "list":
            series[name] = pd.Series(values, dtype="object")
        elif dtype.startswith("datetime64"):
            series[name] = pd.Series(pd.to_datetime(values, utc=True), dtype=dtype)
        else:
            series[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(series)


def counts_by_type_and_status(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{entity_type: {"ok": n, "rejected": m, "skipped": k}} with plain ints, for metadata."""
    counts: dict[str, dict[str, int]] = {}
    pairs = Counter(zip(frame["entity_type"], frame["status"], strict=True))
    for (entity_type, status), count in sorted(pairs.items()):
        counts.setdefault(str(entity_type), dict.fromkeys(OBSERVABLE_STATUSES, 0))
        counts[str(entity_type)][str(status)] = int(count)
    return counts
