"""The `observables` table: source records, normalised, one row each, rejected ones included.

This is the first table of the pipeline and where each observable's value and TLP are settled
(with intake.observable's normalize and decide_tlp, which everything else that reads a value or a
marking calls too), so every later asset can trust `normalized_value` and `tlp` and filter on
`status`. A value's TLP here is the most restrictive of all the source's observables of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

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
_Level = tuple[int, str, str]  # (TLP rank, TLP, stix id of the observable marked so)
# Types the providers look up at one endpoint: a name is the same value to them either way.
_SAME_VALUE_TYPE = {"Hostname": "Domain-Name"}


def identity_keys(entity_type: str, values: Iterable[object]) -> set[tuple[str, str]]:
    """The keys under which observables hold the same value for the providers: (type, normalised
    value), a Hostname keyed as a Domain-Name, a file by each of its hashes. Values the pipeline
    would reject give none. The embedded store indexes its observables by these keys."""
    kind = _SAME_VALUE_TYPE.get(entity_type, entity_type)
    keys = set()
    for value in values:
        normalized = normalize(entity_type, value)
        if normalized.ok and normalized.value:
            keys.add((kind, normalized.value))
    return keys


def record_keys(record: ObservableRecord) -> set[tuple[str, str]]:
    """identity_keys of one source record (every hash of a file)."""
    if record.entity_type == "StixFile" and record.hashes:
        return identity_keys(record.entity_type, record.hashes.values())
    return identity_keys(record.entity_type, [record.value])


def with_strictest_tlp_per_value(
    frame: pd.DataFrame, row_keys: list[set[tuple[str, str]]],
    copies: Mapping[tuple[str, str], list[ObservableRecord]], unmarked_tlp: str | None = None,
) -> pd.DataFrame:
    """Every accepted row takes the most restrictive TLP of any observable holding its value:
    the day's other rows and the source's `copies` (other ids, other days) under any of the
    row's identity keys (`row_keys[i]`, record_keys of row i), followed from key to key (a file
    known by its MD5 here and by MD5 and SHA-256 there). STIX allows one value under several
    ids, and a provider may see a value only if every copy allows it. A raised row's
    tlp_reason names the copy: "stricter_copy: <stix id>"."""
    unmarked = unmarked_tlp or observable.unmarked_tlp()
    ok = (frame["status"] == OBSERVABLE_OK).to_numpy()

    def stricter(a: _Level | None, b: _Level | None) -> _Level | None:
        if a is None or b is None:
            return a or b
        return a if (a[0], b[2]) >= (b[0], a[2]) else b  # ties: the smaller id

    by_key: dict[tuple[str, str], _Level | None] = {}
    for key, records in copies.items():
        for record in records:
            tlp = decide_tlp(record.markings, unmarked).tlp
            by_key[key] = stricter(by_key.get(key), (tlp_rank(tlp), tlp, record.stix_id))
    rows: dict[int, _Level] = {}
    for index in range(len(frame)):
        if ok[index]:
            tlp = str(frame["tlp"].iat[index])
            rows[index] = (tlp_rank(tlp), tlp, str(frame["stix_id"].iat[index]))
    changed = True
    while changed:  # ranks only rise, 5 at most: a few passes
        changed = False
        for index, level in rows.items():
            for key in row_keys[index]:
                by_key[key] = stricter(by_key.get(key), level)
        for index, level in rows.items():
            best = level
            for key in row_keys[index]:
                best = stricter(best, by_key.get(key)) or best
            if best[0] > level[0]:
                rows[index], changed = best, True
    raised = frame.copy()
    for index, (rank, tlp, stix_id) in rows.items():
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
