"""The `observables` table: source records, normalised, one row each, rejected ones included.

This is the first table of the pipeline and the only place values are normalised and TLP is
decided, so every later asset can trust `normalized_value` and `tlp` and filter on `status`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pandas as pd

from cti_assets.intake import observable
from cti_assets.intake.observable import (
    OUT_OF_SCOPE_STIX_TYPES,
    MarkingRef,
    Normalized,
    TlpDecision,
    decide_tlp,
    normalize,
    tlp_rank,
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


STRICTER_COPY = "stricter_copy"  # tlp_reason prefix: the TLP of another observable of the value


def value_keys(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """(entity type, normalised value) of the accepted rows."""
    ok = frame[frame["status"] == OBSERVABLE_OK]
    return set(zip(ok["entity_type"].astype(str), ok["normalized_value"].astype(str),
                   strict=True))


def with_strictest_tlp_per_value(
    frame: pd.DataFrame, copies: Mapping[tuple[str, str], list[ObservableRecord]],
    unmarked_tlp: str | None = None,
) -> pd.DataFrame:
    """Every accepted row takes the most restrictive TLP of any observable holding its value:
    the day's other rows of the value and the source's `copies` (other ids, other days). STIX
    allows one value under several ids, and a provider may see a value only if every copy
    allows it. A raised row's tlp_reason names the copy: "stricter_copy: <stix id>"."""
    unmarked = unmarked_tlp or observable.unmarked_tlp()
    strictest: dict[tuple[str, str], tuple[int, str, str]] = {}  # key -> (rank, tlp, stix_id)

    def consider(key: tuple[str, str], tlp: str, stix_id: str) -> None:
        candidate = (tlp_rank(tlp), tlp, stix_id)
        best = strictest.get(key)
        if best is None or (candidate[0], best[2]) > (best[0], candidate[2]):
            strictest[key] = candidate

    ok = (frame["status"] == OBSERVABLE_OK).to_numpy()
    keys = list(zip(frame["entity_type"].astype(str), frame["normalized_value"].astype(str),
                    strict=True))
    for index in range(len(frame)):
        if ok[index]:
            consider(keys[index], str(frame["tlp"].iat[index]), str(frame["stix_id"].iat[index]))
    for key, records in copies.items():
        for record in records:
            consider(key, decide_tlp(record.markings, unmarked).tlp, record.stix_id)
    raised = frame.copy()
    for index in range(len(frame)):
        if not ok[index]:
            continue
        rank, tlp, stix_id = strictest[keys[index]]
        if rank > tlp_rank(str(frame["tlp"].iat[index])):
            raised.iat[index, raised.columns.get_loc("tlp")] = tlp
            raised.iat[index, raised.columns.get_loc("tlp_reason")] = f"{STRICTER_COPY}: {stix_id}"
    return raised


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
